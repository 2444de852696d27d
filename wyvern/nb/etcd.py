"""The etcd store: the Store interface over etcd's v3 JSON gateway (etcd3gw), with failover.

Requests go to one endpoint at a time and move on to the next when a member is down or has
no leader. Reads are retried freely. A write is retried on another member only when etcd
cannot have applied it (the connection was never made, or the member refused before
proposing); if a member dies while a write is in flight the outcome is unknown and
`EtcdOutcomeUnknown` is raised instead of risking a double apply.

Watches run their own stream (etcd3gw's Watcher hides compaction and cancellation, which we
must turn into `Gap`s) and reconnect from the last delivered revision + 1, so a member
failure neither loses nor repeats an event. While the store is unreachable (below), a new
stream must be answered (etcd's "created") within `_WATCH_HELLO` seconds, so a watch cut
off from etcd retries every couple of seconds. A stream silent for `_WATCH_IDLE` seconds is
reopened (a hung member sends nothing); to keep such a reopen from reporting a spurious Gap
after compaction, run etcd with --experimental-watch-progress-notify-interval below that
(our launcher, wyvern.nb.etcd_server, uses 5s) so idle watches learn the current revision.

Reachability: a request or watch that fails for want of an answer marks the store
unreachable (`reachable` False), and the next one answered marks it reachable again. At
that moment every watch stream opened before it is reopened: a stream that lived
through a partition may be dead without knowing it (its packets were dropped, and TCP
may take minutes to retransmit), and a reopen costs one request, resuming exactly.

Leases are etcd's own. etcd 3.4 grants whole seconds and at least its minimum TTL, which it
derives from the election timeout (1.5 x, rounded up to seconds: 2 s with the default 1 s,
1 s with our launcher's 500 ms). A keepalive of a lease that is gone still answers 200,
just without a TTL. The leader revokes an expired lease on its own (a 2 s lease was gone
after ~2.1 s), in one revision, like a revoke.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import queue
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.exceptions

from wyvern.nb.store import (
    Batch,
    Compare,
    Delete,
    Event,
    Gap,
    KeyValue,
    ListResult,
    Put,
    Store,
    StoreError,
    TxnResult,
    TxnTooLarge,
    Watch,
    net_effect,
)

# etcd3gw imports futurist (for a watch thread pool this store does not use), and futurist
# imports eventlet whenever it is installed: eventlet, dnspython, greenlet, cryptography,
# ~19 MiB of an agent's RSS. A None in sys.modules makes just that import fail (futurist
# goes on without eventlet); the entry goes again right after.
_HIDE_EVENTLET = "eventlet" not in sys.modules
if _HIDE_EVENTLET:
    sys.modules["eventlet"] = None  # type: ignore[assignment]
try:
    import etcd3gw
    from etcd3gw import Etcd3Client
    from etcd3gw import exceptions as etcd_exc
finally:
    if _HIDE_EVENTLET and sys.modules.get("eventlet", False) is None:
        del sys.modules["eventlet"]

# Without it a member cut off from its cluster keeps serving a watch that never sees another
# event, and a write to a leaderless member waits for a timeout instead of failing at once.
_HEADERS = {"Grpc-Metadata-hasleader": "true"}
_PAGE = 5000  # keys per range request; later pages are read at the first page's revision
_WATCH_IDLE = 30.0  # a watch stream silent this long is presumed dead and reopened
_WATCH_HELLO = 1.5  # unreachable etcd: a new stream not answered this fast is retried
_PIN_ROUNDS = 32

_TARGETS = {
    "version": ("VERSION", "version"),
    "create": ("CREATE", "create_revision"),
    "mod": ("MOD", "mod_revision"),
    "value": ("VALUE", "value"),
}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
# Errors etcd returns before proposing a request to raft: a write that got one did not apply.
_NOT_APPLIED = ("no leader", "too many requests", "not capable", "proposal dropped")
# gRPC codes worth another attempt: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
# UNAVAILABLE (and UNKNOWN, which etcd uses for a dropped proposal).
_TRANSIENT_CODES = {1, 2, 4, 8, 10, 14}


class EtcdOutcomeUnknown(StoreError):
    """A write reached etcd but no answer came back: it may or may not have been applied."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _range(prefix: str) -> tuple[str, str]:
    """etcd's (key, range_end) for every key starting with prefix, base64-encoded."""
    raw = prefix.encode()
    if not raw:
        return _b64(b"\0"), _b64(b"\0")  # the whole key space
    end = raw.rstrip(b"\xff")
    if not end:
        return _b64(raw), _b64(b"\0")
    return _b64(raw), _b64(end[:-1] + bytes([end[-1] + 1]))


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw["key"]).decode(),
        value=_unb64(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _revision(resp: dict[str, Any]) -> int:
    return int(resp.get("header", {}).get("revision", 0))


def _error_text(exc: etcd_exc.Etcd3Exception) -> str:
    detail = exc.detail_text or ""
    with contextlib.suppress(ValueError, AttributeError):
        body = json.loads(detail)
        return str(body.get("message") or body.get("error") or detail)
    return detail or str(exc.__context__ or exc) or type(exc).__name__


class _Failure(NamedTuple):
    transient: bool  # another attempt, maybe on another member, may succeed
    maybe_applied: bool  # a write may have been applied nonetheless
    member_down: bool  # the connection itself broke: the member is probably gone


def _connection_failure(exc: BaseException | None) -> _Failure | None:
    """Classify an error from requests (None if exc is not one)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _Failure(True, False, True)
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, urllib3.exceptions.ReadTimeoutError):  # slow, not gone
            return _Failure(True, True, False)
        refused = isinstance(getattr(inner, "reason", None), urllib3.exceptions.NewConnectionError)
        return _Failure(True, not refused, True)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):  # cut off mid-response
        return _Failure(True, True, True)
    if isinstance(exc, requests.exceptions.RequestException):  # e.g. a read timeout
        return _Failure(True, True, False)
    return None


def _classify(exc: etcd_exc.Etcd3Exception) -> _Failure:
    """How bad an error from etcd3gw is (it hides the requests error in __context__)."""
    failure = _connection_failure(exc.__context__)
    if failure is not None:
        return failure
    if any(marker in _error_text(exc).lower() for marker in _NOT_APPLIED):
        return _Failure(True, False, False)
    code = None
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        code = int(json.loads(exc.detail_text or "")["code"])
    if code is None:
        transient = isinstance(
            exc, etcd_exc.ConnectionFailedError | etcd_exc.ConnectionTimeoutError
        )
        return _Failure(transient, True, False)
    return _Failure(code in _TRANSIENT_CODES, True, False)


def _send_txn(client: Etcd3Client, request: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], client.transaction(request))


def _put(p: Put) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(p.key.encode()), "value": _b64(p.value)}
    if p.lease:
        put["lease"] = p.lease
    return put


def _compare(c: Compare, absent: set[str]) -> dict[str, Any]:
    """One etcd Compare for c; see `EtcdStore.txn` for the value-of-absent-key case."""
    key = _b64(c.key.encode())
    wanted = bytes if c.target == "value" else int
    if type(c.operand) is not wanted:
        # Compare.holds() is False on a type mismatch: emit a guard that never holds.
        return {"key": key, "target": "VERSION", "result": "LESS", "version": 0}
    if c.key in absent and c.target == "value":
        return {"key": key, "target": "VERSION", "result": "EQUAL", "version": 0}
    target, field = _TARGETS[c.target]
    operand: Any = _b64(c.operand) if isinstance(c.operand, bytes) else c.operand
    return {"key": key, "target": target, "result": _RESULTS[c.op], field: operand}


class EtcdStore(Store):
    """The Store over an etcd 3.x cluster, given the client URLs of (some of) its members."""

    max_txn_ops: int

    def __init__(self, endpoints: list[str], timeout: float = 5.0, max_txn_ops: int = 128) -> None:
        """timeout: per request, and the budget for retrying on other members.
        max_txn_ops: the cluster's --max-txn-ops (etcd's default is 128)."""
        self.max_txn_ops = max_txn_ops
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._timeout = timeout
        self._clients: list[Etcd3Client] = []
        for endpoint in endpoints:
            url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            session = requests.Session()
            # Many threads share a store; keep a connection per thread instead of churning.
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=64)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(_HEADERS)
            self._clients.append(
                etcd3gw.client(
                    host=url.hostname or "127.0.0.1",
                    port=url.port or 2379,
                    protocol=url.scheme or "http",
                    timeout=timeout,
                    session=session,
                )
            )
        self._current = 0
        self._lock = threading.Lock()
        self.watch_bytes = 0  # received on watch streams (selective distribution's cost)
        self.watch_event_bytes = 0  # of those, in messages carrying events (not progress)
        self._ids: list[str | None] = [None] * len(self._clients)  # etcd member id per endpoint
        self._lost: str | None = None  # member id of the member we last failed away from
        self._watches: weakref.WeakSet[_EtcdWatch] = weakref.WeakSet()
        self._down_since: float | None = None

    @property
    def reachable(self) -> bool:  # type: ignore[override]
        """False from a request that went unanswered until one is answered."""
        return self._down_since is None

    def _unanswered(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()

    def _answered(self, at: float | None = None) -> None:
        """etcd answered (at AT): if it had not, reopen the watch streams opened before."""
        if self._down_since is None:
            return
        self._down_since = None
        at = time.monotonic() if at is None else at
        for w in list(self._watches):
            w.revive(at)
        self.ring()

    @property
    def endpoint(self) -> str:
        """The member requests currently go to."""
        return self._clients[self._current].base_url

    def _failover(self, index: int, member_down: bool) -> None:
        """Move on from the member at index (unless another thread already has)."""
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % len(self._clients)
                if member_down:
                    self._lost = self._ids[index]

    def _await_leader(self, index: int, deadline: float) -> None:
        """Wait until the member at index follows a leader other than the one we lost.

        A follower keeps forwarding to a dead leader until its election timeout, and such a
        request then hangs for the whole request timeout. Asking for the member's status is
        local and cheap, so poll it until a new leader is known.
        """
        client = self._clients[index]
        while (lost := self._lost) is not None:
            status = client.status()
            self._ids[index] = member = str(status.get("header", {}).get("member_id"))
            if member == lost or str(status.get("leader", "0")) not in ("0", lost):
                self._lost = None  # a new leader, or the lost member is back
                return
            if time.monotonic() + 0.05 > deadline:
                return
            time.sleep(0.05)

    def _call(
        self, op: Callable[[Etcd3Client], dict[str, Any]], write: bool = False
    ) -> dict[str, Any]:
        """Run op against the current member, moving on to the others until the budget ends."""
        deadline = time.monotonic() + self._timeout
        delay = 0.02
        attempt = 0
        while True:
            index = self._current
            sent = False
            try:
                if self._lost is not None:
                    self._await_leader(index, deadline)
                sent = True
                result = op(self._clients[index])
                self._ids[index] = str(result.get("header", {}).get("member_id"))
                self._lost = None  # the cluster answers: stop checking for a new leader
                self._answered()
                return result
            except etcd_exc.Etcd3Exception as exc:
                failure = _classify(exc)
                message = f"etcd {self._clients[index].base_url}: {_error_text(exc)}"
                if not failure.transient:
                    raise StoreError(message) from exc
                self._failover(index, failure.member_down)
                if write and sent and failure.maybe_applied:
                    raise EtcdOutcomeUnknown(message) from exc
                attempt += 1
                if attempt % len(self._clients) == 0:
                    if time.monotonic() + delay > deadline:
                        self._unanswered()
                        raise StoreError(f"etcd unavailable: {message}") from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            except (requests.RequestException, ValueError) as exc:  # e.g. a non-JSON answer
                if isinstance(exc, requests.RequestException):
                    self._unanswered()
                raise StoreError(f"etcd {self._clients[index].base_url}: {exc}") from exc

    def _post(self, path: str, payload: dict[str, Any], write: bool = False) -> dict[str, Any]:
        def op(client: Etcd3Client) -> dict[str, Any]:
            result: dict[str, Any] = client.post(client.get_url(path), json=payload)
            return result

        return self._call(op, write)

    def get(self, key: str) -> KeyValue | None:
        kvs = self._post("/kv/range", {"key": _b64(key.encode())}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        key, end = _range(prefix)
        payload: dict[str, Any] = {"key": key, "range_end": end, "limit": _PAGE}
        if keys_only:
            payload["keys_only"] = True
        result: ListResult | None = None
        while True:
            resp = self._post("/kv/range", payload)
            if result is None:
                result = ListResult(_revision(resp))
                payload["revision"] = result.revision  # one snapshot across pages
            kvs = resp.get("kvs", [])
            result.items.extend(_kv(raw) for raw in kvs)
            if not resp.get("more") or not kvs:
                return result
            payload["key"] = _b64(_unb64(kvs[-1]["key"]) + b"\0")

    def txn(
        self,
        compares: Sequence[Compare],
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        """Apply puts then deletes if every compare holds; otherwise change nothing.

        etcd refuses a txn that touches a key twice, so the ops are reduced to their net
        effect first: of several puts of one key the last wins, and a key that is also
        deleted is only deleted (puts then deletes). Each key therefore changes at most
        once per revision: version +1 and one event.

        On failure etcd runs the failure branch, a read of every compared key from the same
        snapshot the compares saw, so `failed` is evaluated here with `Compare.holds`.

        etcd always fails a value compare on an absent key, while our absent key has value
        b"". For a value compare that would hold on an absent key we guard with version == 0
        where we believe the key absent and with the real compare where we believe it
        present, and retry with corrected beliefs when the failure snapshot shows none of
        the caller's compares actually failed.
        """
        net_puts, deleted = net_effect(puts, deletes)
        keys = list(dict.fromkeys(c.key for c in compares))
        # etcd counts the compares and each branch's requests against --max-txn-ops.
        ops = max(len(compares), len(net_puts) + len(deleted))
        if ops > self.max_txn_ops:
            raise TxnTooLarge(ops, self.max_txn_ops)
        success = [{"request_put": _put(p)} for p in net_puts] + [
            {"request_delete_range": {"key": _b64(k.encode())}} for k in deleted
        ]
        failure = [{"request_range": {"key": _b64(k.encode())}} for k in keys]
        pinned = [c for c in compares if c.target == "value" and c.holds(None)]
        absent: set[str] = set()
        for _ in range(_PIN_ROUNDS):
            request = {
                "compare": [_compare(c, absent) for c in compares],
                "success": success,
                "failure": failure,
            }
            try:
                resp = self._call(functools.partial(_send_txn, request=request), write=True)
            except StoreError as exc:  # the cluster's limit is lower than we were told
                if "too many operations in txn request" in str(exc):
                    raise TxnTooLarge(ops, self.max_txn_ops) from exc
                raise
            revision = _revision(resp)
            if resp.get("succeeded"):
                return TxnResult(True, revision)
            snapshot: dict[str, KeyValue | None] = {}
            for key, answer in zip(keys, resp.get("responses", []), strict=True):
                kvs = answer.get("response_range", {}).get("kvs", [])
                snapshot[key] = _kv(kvs[0]) if kvs else None
            failed = tuple(i for i, c in enumerate(compares) if not c.holds(snapshot[c.key]))
            if failed:
                return TxnResult(False, revision, failed)
            now_absent = {c.key for c in pinned if snapshot[c.key] is None}
            if now_absent == absent:
                raise StoreError("etcd rejected a txn whose compares all hold")
            absent = now_absent
        raise StoreError("txn guards kept changing under contention; giving up")

    # Lease calls may be retried anywhere: a grant applied twice leaves a spare lease that
    # expires unused, and keepalive and revoke are idempotent.
    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ValueError(f"a lease needs a positive TTL, not {ttl}")
        resp = self._post("/lease/grant", {"TTL": max(1, math.ceil(ttl))})
        if resp.get("error"):
            raise StoreError(f"etcd refused a lease: {resp['error']}")
        return int(resp["ID"])

    def keepalive(self, lease: int) -> bool:
        def op(client: Etcd3Client) -> dict[str, Any]:
            # A stream of one message: {"result": ...}. Without a leader etcd answers 503
            # {"error": ...}, which etcd3gw raises; an "error" in a 200 is judged the same.
            url = client.get_url("/lease/keepalive")
            resp: dict[str, Any] = client.post(url, json={"ID": lease})
            error = resp.get("error")
            if error is not None:  # let _call judge it like any other answer (no leader...)
                error = error if isinstance(error, dict) else {"message": str(error)}
                detail = {"message": error.get("message"), "code": error.get("grpc_code")}
                raise etcd_exc.Etcd3Exception(json.dumps(detail))
            result: dict[str, Any] = resp.get("result", {})
            return result

        # A gone lease comes back without a TTL (0 is omitted from the JSON).
        return int(self._call(op).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        # 3.4 serves both /v3/lease/revoke and this older path (which etcd3gw uses too).
        try:
            self._post("/kv/lease/revoke", {"ID": lease})
        except StoreError as exc:
            if "requested lease not found" not in str(exc):
                raise

    def watch(self, prefix: str, start_revision: int) -> Watch:
        start = start_revision if start_revision > 0 else self.revision() + 1
        w = _EtcdWatch(self, prefix, start)
        self._watches.add(w)
        return w

    def revision(self) -> int:
        resp = self._post("/kv/range", {"key": _b64(b"\0"), "count_only": True})
        return _revision(resp)

    def compact(self, revision: int) -> None:
        """Forget history before revision; compacting already-compacted history is a no-op."""
        if revision <= 0:
            return
        try:
            self._post("/kv/compaction", {"revision": revision})
        except StoreError as exc:
            if "required revision has been compacted" not in str(exc):
                raise

    def close(self) -> None:
        for w in list(self._watches):
            w.close()
        for client in self._clients:
            client.session.close()


class _WatchBroken(Exception):
    """The stream ended or was cancelled for a reason another member may not have."""

    def __init__(self, reason: str, member_down: bool = False) -> None:
        super().__init__(reason)
        self.member_down = member_down


class _EtcdWatch(Watch):
    """One etcd watch stream, read by a daemon thread into a queue and reopened on failure."""

    def __init__(self, store: EtcdStore, prefix: str, start: int) -> None:
        self._store = store
        self._key, self._end = _range(prefix)
        self._next_rev = start  # the first revision not yet delivered
        self._resume = start  # where a new stream starts: _next_rev, or later after progress
        self._index = store._current  # the member this watch streams from
        self._queue: queue.Queue[Batch | Gap | StoreError | None] = queue.Queue()
        self._closed = threading.Event()
        self._finished = False
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._opened = float("-inf")  # time.monotonic() the current stream was answered
        self._revived = False
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch:{prefix}", daemon=True)
        self._thread.start()

    def next(self, timeout: float | None = None) -> Batch | Gap | None:
        if self._finished or self._closed.is_set():
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, StoreError):
            self._finished = True
            raise item
        if item is None or isinstance(item, Gap):
            self._finished = True
        return item

    def close(self) -> None:
        self._closed.set()
        self._shutdown()
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._store._timeout)

    def _shutdown(self) -> None:
        with self._lock:
            response = self._response
        if response is not None:
            # Closing a socket does not wake a thread blocked reading it; shutting it down does.
            sock = getattr(getattr(response.raw, "connection", None), "sock", None)
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def revive(self, at: float) -> None:
        """Reopen the stream at once if it was opened before AT (the store was
        unreachable meanwhile: it may be dead without knowing it)."""
        if self._opened < at:
            self._revived = True
            self._shutdown()

    def _run(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            index = self._index
            before = self._next_rev
            member_down = False
            tried = time.monotonic()
            try:
                if self._stream(self._store._clients[index]):
                    return
            except StoreError as exc:
                self._queue.put(exc)
                self._store.ring()
                return
            except _WatchBroken as exc:
                member_down = exc.member_down
            except etcd_exc.Etcd3Exception as exc:  # from discovering the API path
                member_down = _classify(exc).member_down
            except (requests.RequestException, OSError, ValueError) as exc:
                # ValueError: an undecodable message from a dying connection.
                failure = _connection_failure(exc)
                member_down = failure is not None and failure.member_down
            if self._closed.is_set():
                return
            if self._revived:  # (reopened on purpose: same member, no wait)
                self._revived = False
                delay = 0.05
                continue
            if self._opened < tried:  # not even answered (a quiet stream is no sign)
                self._store._unanswered()
            # Try the next member; tell the store only if this one looks dead, since a quiet
            # or cancelled stream says nothing about the member's requests.
            self._index = (index + 1) % len(self._store._clients)
            if member_down:
                self._store._failover(index, member_down=True)
            if self._next_rev != before:
                delay = 0.05
            self._closed.wait(delay)
            delay = min(delay * 2, 0.5)

    def _stream(self, client: Etcd3Client) -> bool:
        """Follow one stream until it breaks; True once the watch is finished (Gap)."""
        create = {
            "key": self._key,
            "range_end": self._end,
            "start_revision": self._resume,
            "progress_notify": True,
        }
        hello = _WATCH_HELLO if not self._store.reachable else self._store._timeout
        response = client.session.post(
            client.get_url("/watch"),
            json={"create_request": create},
            stream=True,
            # (patient while etcd answers others: a slow etcd is no reason to give up)
            timeout=(self._store._timeout, hello),
        )
        with self._lock:
            self._response = response
        self._revived = False
        self._opened = time.monotonic()
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if isinstance(sock, socket.socket):
            sock.settimeout(_WATCH_IDLE)  # answered: from here on it may be quiet
        if response.status_code == 200:
            self._store._answered(self._opened)
        try:
            if self._closed.is_set():
                return True
            if response.status_code != 200:
                text = response.text
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    raise StoreError(f"etcd watch refused ({response.status_code}): {text}")
                raise _WatchBroken(text)
            buffer = bytearray()
            for chunk in response.iter_content(chunk_size=None):
                self._store.watch_bytes += len(chunk)
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if message.get("result", {}).get("events"):
                        self._store.watch_event_bytes += len(line)
                    if self._handle(message):
                        return True
            raise _WatchBroken("stream ended", member_down=True)
        finally:
            with self._lock:
                self._response = None
            response.close()

    def _handle(self, message: dict[str, Any]) -> bool:
        if "error" in message:
            raise _WatchBroken(str(message["error"]))
        result: dict[str, Any] = message.get("result", {})
        compacted = int(result.get("compact_revision", 0))
        if compacted > 0:
            self._queue.put(Gap(compacted))
            self._store.ring()
            return True
        if result.get("canceled"):
            raise _WatchBroken(str(result.get("cancel_reason", "watch canceled")))
        events = result.get("events", [])
        if not events:
            if not result.get("created"):
                # A progress notification, only ever sent to a watcher that is caught up:
                # nothing under our prefix up to this revision is still to come.
                # Used only for the next stream, never to drop events from this one.
                self._resume = max(self._resume, _revision(result) + 1)
            return False
        # etcd sends every event of a revision in one message (we never ask for fragments).
        pending: list[Event] = []
        for raw in events:
            kv = raw["kv"]
            revision = int(kv["mod_revision"])
            if revision < self._next_rev:
                continue  # delivered before a reconnect
            if pending and pending[-1].revision != revision:
                self._deliver(pending)
                pending = []
            key = _unb64(kv["key"]).decode()
            if raw.get("type") == "DELETE":
                pending.append(Event("delete", key, b"", revision))
            else:
                pending.append(Event("put", key, _unb64(kv.get("value", "")), revision))
        if pending:
            self._deliver(pending)
        return False

    def _deliver(self, events: list[Event]) -> None:
        revision = events[0].revision
        self._queue.put(Batch(revision, tuple(events)))
        self._store.ring()
        self._next_rev = revision + 1
        self._resume = max(self._resume, self._next_rev)
