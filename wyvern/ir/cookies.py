"""Flow cookies: which app installed a flow, and for which API object.

A cookie is 64 bits::

    63      56 55 54                                  0
    +--------+--+-------------------------------------+
    | app id |H |  object: hash (H=1) or key (H=0)    |
    +--------+--+-------------------------------------+

- app id (8 bits): from the `APPS` table below, which is the one place apps are declared.
  Id 0 is never used, so cookie 0 ("nobody") is refused for every flow, including
  conjunction flows (OVN's conjunction flows carry cookie 0 and cannot be traced).
- H=1: the low 55 bits are a BLAKE2b hash of the object's id string (a UUID), so the same
  object gets the same cookie on every chassis and after every restart.
- H=0: the low 55 bits are a small integer key given by the app (a port key, a group id).

A cookie cannot be turned back into a UUID by itself; `CookieIndex` remembers what was
encoded so that a trace can name the API object behind each flow.

Those are the IR's cookies (the simulator's, and `wyvern trace`'s). On the switch every
flow carries its *entry's* cookie instead (`entry_cookie`: the app id, H=1, and a hash
of the owner the app computed it for), so that the agent can replace an entry's flows
by `delete cookie=C/-1` and keep no flow text of its own (controller/engine.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

AppName = Literal[
    "pipeline",
    "classifier",
    "port_security",
    "security_groups",
    "services",
    "l2",
    "l3",
    "nat",
    "output",
    "metadata",
    "metering",
    "qos",
    "trunk",
]

# The app table. Ids are part of the installed flows: never renumber or reuse one.
APPS: dict[AppName, int] = {
    "pipeline": 0x01,  # per-stage defaults (table-miss drops, pass-through)
    "classifier": 0x02,
    "port_security": 0x03,
    "security_groups": 0x04,
    "services": 0x05,
    "l2": 0x06,
    "l3": 0x07,
    "nat": 0x08,
    "output": 0x09,
    "metadata": 0x0A,
    "metering": 0x0E,
    "qos": 0x0D,
    "trunk": 0x0B,
}

APP_BITS = 8
OBJECT_BITS = 56
HASHED = 1 << 55
_KEY_LIMIT = HASHED
_APP_BY_ID: dict[int, AppName] = {v: k for k, v in APPS.items()}

if set(APPS) != set(get_args(AppName)) or len(_APP_BY_ID) != len(APPS):
    raise AssertionError("cookies.APPS must list every AppName exactly once, with unique ids")
if not all(0 < v < (1 << APP_BITS) for v in APPS.values()):
    raise AssertionError("app ids must be 1..255")


def object_field(object_id: str | int) -> int:
    """The 56-bit object part: a small key as is, or a 55-bit hash of a string id."""
    if isinstance(object_id, int):
        if not 0 <= object_id < _KEY_LIMIT:
            raise ValueError(f"object key {object_id} does not fit 55 bits")
        return object_id
    got = _HASHES.get(object_id) if type(object_id) is str else None
    if got is None:
        digest = hashlib.blake2b(object_id.strip().lower().encode(), digest_size=7).digest()
        got = HASHED | (int.from_bytes(digest, "big") & (HASHED - 1))
        if type(object_id) is str:
            if len(_HASHES) >= _HASHES_MAX:
                _HASHES.clear()
            _HASHES[object_id] = got
    return got


# id string -> object field: every app names a port by its id, so one hash serves them all
_HASHES: dict[str, int] = {}
_HASHES_MAX = 1 << 18


def clear_caches() -> None:
    """Forget the memo of hashed ids (benchmarks measure a cold start)."""
    _HASHES.clear()


def encode(app: AppName, object_id: str | int) -> int:
    """The cookie for flows that `app` installs on behalf of `object_id`."""
    got = _HASHES.get(object_id) if type(object_id) is str else None  # (the common case)
    return (APPS[app] << OBJECT_BITS) | (object_field(object_id) if got is None else got)


def entry_cookie(app: AppName, owner: tuple[str, str]) -> int:
    """The cookie every installed flow of `app`'s entry for `owner` carries: unique per
    entry (a 55-bit hash: among 100k entries, odds of 1 in 7 million that two share one,
    and so replace each other's flows) and the same after every restart, so the agent
    can compare its entries with the switch's."""
    return (APPS[app] << OBJECT_BITS) | entry_object(owner)


def entry_object(owner: tuple[str, str]) -> int:
    """The object part of every entry cookie of `owner` (H=1 and the owner's hash): the
    same in every app, so a full recompute hashes an owner once for all its apps."""
    kind, id_ = owner
    digest = hashlib.blake2b(f"{kind}\0{id_}".encode(), digest_size=7).digest()
    return HASHED | (int.from_bytes(digest, "big") & (HASHED - 1))


def decode(cookie: int) -> tuple[AppName, int]:
    """(app, object field) of a cookie. Raises ValueError for 0 or an unknown app id."""
    if not 0 <= cookie < (1 << 64):
        raise ValueError(f"cookie {cookie:#x} is not 64 bits")
    app = _APP_BY_ID.get(cookie >> OBJECT_BITS)
    if app is None:
        raise ValueError(f"cookie {cookie:#x} names no declared app")
    return app, cookie & ((1 << OBJECT_BITS) - 1)


@dataclass(frozen=True, slots=True)
class Explanation:
    """What a cookie means: the app, and the object id if the index has seen it."""

    cookie: int
    app: AppName | None
    object_id: str | int | None
    object_field: int

    def __str__(self) -> str:
        if self.app is None:
            return f"unknown cookie {self.cookie:#x}"
        if self.object_id is not None:
            return f"{self.app} {self.object_id}"
        kind = "hash" if self.object_field & HASHED else "key"
        return f"{self.app} {kind} {self.object_field & (HASHED - 1):#x} (object not indexed)"


class CookieIndex:
    """Reverse index cookie → (app, object id), filled by whoever encodes cookies."""

    def __init__(self) -> None:
        self._by_cookie: dict[int, tuple[AppName, str | int]] = {}
        # entry cookie -> (table, priority, IR cookie) of each of the entry's flows
        self._entries: dict[int, list[tuple[int, int, int]]] = {}

    def register(self, app: AppName, object_id: str | int) -> int:
        """Encode and remember. Two different objects with one cookie raise ValueError."""
        cookie = encode(app, object_id)
        known = self._by_cookie.get(cookie)
        if known is not None and known != (app, object_id):
            raise ValueError(f"cookie {cookie:#x} collides: {known} and {(app, object_id)}")
        self._by_cookie[cookie] = (app, object_id)
        return cookie

    def register_entry(
        self, app: AppName, owner: tuple[str, str], flows: list[tuple[int, int, int]]
    ) -> int:
        """Remember an engine entry: its cookie (what the switch's flows carry) names the
        owner, and each of its flows (table, priority, IR cookie) the object behind it."""
        cookie = entry_cookie(app, owner)
        self._by_cookie.setdefault(cookie, (app, owner[1]))
        self._entries[cookie] = flows
        return cookie

    def explain_flow(self, cookie: int, table: int, priority: int) -> Explanation:
        """explain() for a flow on the switch: an entry's cookie is explained by the IR
        cookie of the entry's flow at that table and priority, when there is one."""
        for t, p, ir_cookie in self._entries.get(cookie, ()):
            if (t, p) == (table, priority):
                return self.explain(ir_cookie)
        return self.explain(cookie)

    def forget(self, cookie: int) -> None:
        self._by_cookie.pop(cookie, None)

    def __contains__(self, cookie: object) -> bool:
        return cookie in self._by_cookie

    def __len__(self) -> int:
        return len(self._by_cookie)

    def explain(self, cookie: int) -> Explanation:
        try:
            app, field = decode(cookie)
        except ValueError:
            return Explanation(cookie, None, None, cookie & ((1 << OBJECT_BITS) - 1))
        known = self._by_cookie.get(cookie)
        return Explanation(cookie, app, known[1] if known else None, field)
