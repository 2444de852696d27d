"""Nova notifications: `POST /os-server-external-events`, as neutron-server sends them.

Neutron tells Nova about its compute ports (device_owner `compute:*`, a uuid device_id):
`network-vif-plugged` when one becomes ACTIVE (or ERROR: status failed) from DOWN, BUILD
or nothing; `network-vif-unplugged` when it goes from ACTIVE to DOWN; `network-vif-deleted`
when it is deleted; `network-changed` when its data Nova caches changes (we send it for its
fixed IPs, MAC, host and floating IPs). Each event names the server (device_id) and the
port (tag). Nova's boot waits for network-vif-plugged.

In Wyvern a port's status is written by its agent, not by the API, so no API request sees
it change. Instead one API process of all those on the store (the holder of
`NOVA_NOTIFIER_KEY`, on its store lease: the others wait to take over) follows the store
in revision order with one watch, keeps what it needs of every port, status record and
floating IP, and turns each transaction's changes into events (`port_events`, a pure
function of a port's state before and after). A port counts as ACTIVE when its agent says
so and the agent's host (or chassis) is the port's `binding:host_id` (if any): a port
rebound to another host is DOWN until that host's agent reports it, as ML2 resets the
status on a binding change (so a rebinding sends unplugged, network-changed, plugged).

Events are queued and sent every `send_events_interval` seconds in one request, by a
thread of their own (never an API request's): a batch Nova did not take (unreachable,
Keystone down, 5xx) stays queued and is sent again with the next; what is older than
Nova's own vif_plugging_timeout (300 s) is dropped, since no boot waits for it any more.
A 404 (Nova knows none of the servers) or another 4xx is final, as in Neutron.

Restarts: like Neutron, which queues events in memory and loses them when it stops, the
notifier reports the transitions it observes: a new holder (a restart, or another process
taking over a dead one's lease) starts from the store as it finds it, so a transition
that happened while no process held the key is not reported, and none is reported twice
by two processes. (A cursor in the store would not help: the store cannot say what a key
held at an old revision.)
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from wyvern.config import Settings
from wyvern.model.keys import (
    NOVA_NOTIFIER_KEY,
    ROOT,
    STATUS_PORTS,
    decode_key,
    kind_prefix,
)
from wyvern.model.port_status import reported_status
from wyvern.nb.store import Batch, Gap, Put, Store, StoreError, absent

LOG = logging.getLogger(__name__)

VIF_PLUGGED = "network-vif-plugged"
VIF_UNPLUGGED = "network-vif-unplugged"
VIF_DELETED = "network-vif-deleted"
NETWORK_CHANGED = "network-changed"
COMPUTE_PREFIX = "compute:"
# What Neutron sends (neutron/notifiers/nova.py): every event name and `tag` we use are in
# Nova's schema from 2.0 on.
NOVA_API_VERSION = "2.1"
# Neutron's map from the port status to the event's status.
EVENT_STATUS = {"ACTIVE": "completed", "ERROR": "failed", "DOWN": "completed"}
# Nova's default vif_plugging_timeout: an event older than this waits for nobody.
EVENT_MAX_AGE = 300.0
# The holder's lease: another process takes over within this long after it dies.
LEADER_TTL = 10.0

Event = dict[str, str]


@dataclass(frozen=True, slots=True)
class PortState:
    """What Nova's events depend on, of one port at one revision."""

    id: str
    device_id: str = ""
    device_owner: str = ""
    host: str = ""
    mac: str = ""
    status: str = "DOWN"
    fixed_ips: frozenset[tuple[str, str]] = frozenset()
    floating_ips: frozenset[str] = frozenset()

    @property
    def compute(self) -> bool:
        """Neutron's _is_compute_port: a uuid device_id and a compute:* owner."""
        if not self.device_id or not self.device_owner.startswith(COMPUTE_PREFIX):
            return False
        try:
            uuid.UUID(self.device_id)
        except ValueError:
            return False
        return True


def port_state(
    port: dict[str, Any], status: dict[str, Any] | None, floating_ips: Iterable[str] = ()
) -> PortState:
    """A stored port with its agent's status record (as the API merges them) and the ids of
    the floating IPs associated with it."""
    st = reported_status(port, status) or port.get("status") or "DOWN"
    host = str(port.get("binding:host_id") or "")
    ips = frozenset(
        (str(ip.get("subnet_id", "")), str(ip.get("ip_address", "")))
        for ip in port.get("fixed_ips") or ()
        if isinstance(ip, dict)
    )
    return PortState(
        id=str(port.get("id", "")),
        device_id=str(port.get("device_id") or ""),
        device_owner=str(port.get("device_owner") or ""),
        host=host,
        mac=str(port.get("mac_address") or ""),
        status=st,
        fixed_ips=ips,
        floating_ips=frozenset(floating_ips),
    )


def port_events(
    old: PortState | None,
    new: PortState | None,
    *,
    status_changes: bool = True,
    data_changes: bool = True,
) -> list[Event]:
    """Nova's events for one port going from OLD to NEW (None: absent), in Neutron's
    order: the status event first, then network-changed."""
    events: list[Event] = []
    if new is None:
        if old is not None and old.compute and data_changes:
            events.append({"name": VIF_DELETED, "server_uuid": old.device_id, "tag": old.id})
        return events
    if not new.compute:
        return events
    before = old.status if old is not None else None
    if status_changes:
        name = None
        if before == "ACTIVE" and new.status == "DOWN":
            name = VIF_UNPLUGGED
        elif before in (None, "DOWN", "BUILD") and new.status in ("ACTIVE", "ERROR"):
            name = VIF_PLUGGED
        if name is not None:
            events.append(
                {
                    "name": name,
                    "server_uuid": new.device_id,
                    "status": EVENT_STATUS[new.status],
                    "tag": new.id,
                }
            )
    if data_changes and old is not None:
        changed = (
            old.fixed_ips != new.fixed_ips
            or old.floating_ips != new.floating_ips
            or old.host != new.host
            or old.mac != new.mac
            or not old.compute  # it just became a server's port
        )
        if changed:
            events.append({"name": NETWORK_CHANGED, "server_uuid": new.device_id, "tag": new.id})
    return events


# ---------------------------------------------------------------------------- store follower

_PORTS = kind_prefix("ports")
# What port_state reads of a port: all the tracker keeps of each.
_PORT_FIELDS = ("id", "device_id", "device_owner", "binding:host_id", "mac_address", "status",
                "fixed_ips")  # fmt: skip
_FIPS = kind_prefix("floatingips")


def _loads(value: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        obj = orjson.loads(value)
        if isinstance(obj, dict):
            return obj
    return None


@dataclass
class Tracker:
    """What the notifier knows of the store: ports, their status records and floating IPs,
    kept from one list and then every watched change. `apply` turns one revision's
    changes into Nova's events."""

    status_changes: bool = True
    data_changes: bool = True
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    fip_port: dict[str, str] = field(default_factory=dict)  # floating IP -> port id
    port_fips: dict[str, set[str]] = field(default_factory=dict)  # port id -> floating IPs

    def state(self, port_id: str) -> PortState | None:
        port = self.ports.get(port_id)
        if port is None:
            return None
        return port_state(port, self.statuses.get(port_id), self.port_fips.get(port_id, ()))

    def _put(self, key: str, value: bytes | None) -> None:
        """Apply one key's new value (None: deleted)."""
        if key.startswith(_FIPS) and "/" not in key[len(_FIPS) :]:
            fip_id = key[len(_FIPS) :]
            obj = _loads(value) if value is not None else None
            old = self.fip_port.pop(fip_id, None)
            if old is not None:
                self.port_fips.get(old, set()).discard(fip_id)
            new = str(obj.get("port_id") or "") if obj else ""
            if new:
                self.fip_port[fip_id] = new
                self.port_fips.setdefault(new, set()).add(fip_id)
            return
        decoded = decode_key(key)
        if decoded is None:
            return
        if decoded.kind == "status":
            if value is None:
                self.statuses.pop(decoded.id, None)
            elif (obj := _loads(value)) is not None:
                self.statuses[decoded.id] = obj
        elif decoded.kind == "port" and key.startswith(_PORTS):
            if value is None:
                self.ports.pop(decoded.id, None)
            elif (obj := _loads(value)) is not None:
                self.ports[decoded.id] = {k: obj[k] for k in _PORT_FIELDS if k in obj}

    def load(self, key: str, value: bytes) -> None:
        self._put(key, value)

    def apply(self, batch: Batch) -> list[Event]:
        """One revision's changes, and Nova's events for the ports they touched."""
        touched: dict[str, PortState | None] = {}
        for ev in batch.events:
            value = ev.value if ev.type == "put" else None
            for port_id in self._peek(ev.key, value):
                if port_id not in touched:
                    touched[port_id] = self.state(port_id)
            self._put(ev.key, value)
        changes = [(old, self.state(port_id)) for port_id, old in touched.items()]
        # As Neutron: a floating IP moved between ports is told to the port it left first.
        changes.sort(key=lambda c: not (c[0] and c[1] and c[0].floating_ips - c[1].floating_ips))
        events: list[Event] = []
        for old, new in changes:
            events += port_events(
                old, new, status_changes=self.status_changes, data_changes=self.data_changes
            )
        return events

    def _peek(self, key: str, value: bytes | None) -> set[str]:
        """The ports a change of KEY to VALUE may touch (read before applying it)."""
        if key.startswith(_FIPS) and "/" not in key[len(_FIPS) :]:
            ids = {self.fip_port.get(key[len(_FIPS) :], "")}
            obj = _loads(value) if value is not None else None
            ids.add(str(obj.get("port_id") or "") if obj else "")
            return ids - {""}
        decoded = decode_key(key)
        if decoded is not None and decoded.kind in ("status", "port"):
            return {decoded.id}
        return set()


# ---------------------------------------------------------------------------- sending

SendOutcome = Literal["delivered", "final", "retry"]
Sender = Callable[[list[Event]], SendOutcome]


class KeystoneNovaSender:
    """POSTs events to Nova's os-server-external-events through a keystoneauth session
    for the [nova] service user, Nova's endpoint taken from the catalog (service type
    `compute`, the configured interface and region)."""

    def __init__(self, settings: Settings) -> None:
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        opts = settings.nova
        auth = v3.Password(
            auth_url=opts.auth_url,
            username=opts.username,
            password=opts.password,
            project_name=opts.project_name,
            user_domain_name=opts.user_domain_name,
            project_domain_name=opts.project_domain_name,
        )
        verify: bool | str = not opts.insecure
        if opts.cafile and not opts.insecure:
            verify = opts.cafile
        self.session = ks_session.Session(auth=auth, verify=verify, timeout=opts.timeout)
        self.endpoint_filter: dict[str, Any] = {
            "service_type": "compute",
            "interface": opts.endpoint_type,
        }
        if opts.region_name:
            self.endpoint_filter["region_name"] = opts.region_name

    def __call__(self, events: list[Event]) -> SendOutcome:
        from keystoneauth1 import exceptions as ks_exc

        try:
            resp = self.session.post(
                "/os-server-external-events",
                json={"events": events},
                endpoint_filter=self.endpoint_filter,
                headers={
                    "X-OpenStack-Nova-API-Version": NOVA_API_VERSION,
                    "OpenStack-API-Version": f"compute {NOVA_API_VERSION}",
                },
                raise_exc=False,
            )
        except ks_exc.EndpointNotFound:
            LOG.warning("Nova notifier: no compute endpoint in the catalog; will retry")
            self.session.invalidate()
            return "retry"
        except ks_exc.ClientException as exc:  # Keystone or Nova unreachable, auth failed
            LOG.warning("Nova notifier: cannot reach Nova (%s); will retry", exc)
            return "retry"
        if resp.status_code in (200, 207):
            body = _json(resp.content)
            for ev in body.get("events", []) if isinstance(body, dict) else []:
                if isinstance(ev, dict) and ev.get("code") != 200:
                    LOG.warning("Nova event returned with failed status: %s", ev)
            LOG.info("Nova took %d event(s): %s", len(events), events)
            return "delivered"
        if resp.status_code == 404:
            LOG.debug("Nova returned NotFound for events: %s", events)
            return "final"
        if resp.status_code == 401:  # our token revoked or expired early: a new one next
            self.session.invalidate()
        if resp.status_code >= 500 or resp.status_code in (401, 408, 429):
            LOG.warning("Nova answered %d; will retry %d event(s)", resp.status_code, len(events))
            return "retry"
        LOG.error("Nova refused events with %d: %s (%s)", resp.status_code, resp.text, events)
        return "final"


def _json(content: bytes) -> Any:
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.loads(content)
    return None


class EventQueue:
    """Events waiting for Nova, sent in batches: `flush` sends everything queued in one
    request; what Nova did not take is kept (in order, ahead of newer events) for the
    next flush, unless older than max_age."""

    def __init__(self, send: Sender, max_age: float = EVENT_MAX_AGE) -> None:
        self.send = send
        self.max_age = max_age
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[float, Event]] = collections.deque()
        self.wake = threading.Event()

    def put(self, events: Iterable[Event]) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending.extend((now, ev) for ev in events)
            if self._pending:
                self.wake.set()

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> SendOutcome | None:
        """Send what is queued (None: nothing was)."""
        now = time.monotonic()
        with self._lock:
            while self._pending and now - self._pending[0][0] > self.max_age:
                LOG.warning(
                    "Nova event dropped after %.0f s: %s", self.max_age, self._pending[0][1]
                )
                self._pending.popleft()
            batch = list(self._pending)
            self._pending.clear()
            self.wake.clear()
        if not batch:
            return None
        try:
            outcome = self.send([ev for _, ev in batch])
        except Exception:  # a bug in sending must not lose the events nor kill the thread
            LOG.exception("sending events to Nova failed")
            outcome = "retry"
        if outcome == "retry":
            with self._lock:
                self._pending.extendleft(reversed(batch))
                self.wake.set()
        return outcome


# ---------------------------------------------------------------------------- the notifier


class NovaNotifier:
    """One per API process; the one that holds NOVA_NOTIFIER_KEY follows the store and
    notifies, the others stand by. Runs on two daemon threads (follower, sender)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        send: Sender | None = None,
        *,
        leader_ttl: float = LEADER_TTL,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = EventQueue(send if send is not None else KeystoneNovaSender(settings))
        self.interval = settings.send_events_interval
        self.leader_ttl = leader_ttl
        self.me = f"{uuid.uuid4()}"
        self.leading = threading.Event()  # (tests wait on it)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lease = 0
        self._holding = False

    @staticmethod
    def enabled(settings: Settings) -> bool:
        wanted = (
            settings.notify_nova_on_port_status_changes or settings.notify_nova_on_port_data_changes
        )
        return bool(settings.nova.auth_url) and wanted

    def start(self) -> NovaNotifier:
        for target, name in ((self._follow, "nova-follow"), (self._send_loop, "nova-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop following, make one last send of what is queued (the next holder does not
        know it) unless a send is still under way, and hand the key over at once."""
        self._stop.set()
        self.queue.wake.set()
        busy = False
        for thread in self._threads:
            thread.join(2.0)
            busy = busy or thread.is_alive()
        self._threads.clear()
        if self.queue and not busy:
            self.queue.flush()
        self._resign()

    # ---- sending ---------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self.queue.wake.wait()
            if self._stop.is_set():
                return
            self.queue.flush()
            # Neutron's batching: after a send, wait the interval so events batch up.
            self._stop.wait(self.interval)

    # ---- leadership ------------------------------------------------------------------------
    def _claim(self) -> bool:
        """Hold NOVA_NOTIFIER_KEY: True while we do (claimed now or earlier)."""
        try:
            if self._holding:
                if self.store.keepalive(self._lease):
                    return True
                LOG.warning("Nova notifier: lost the notifier lease; standing by")
                self._holding, self._lease = False, 0
            if self._lease == 0 or not self.store.keepalive(self._lease):
                self._lease = self.store.grant(self.leader_ttl)
            got = self.store.txn(
                [absent(NOVA_NOTIFIER_KEY)],
                [Put(NOVA_NOTIFIER_KEY, self.me.encode(), lease=self._lease)],
            )
        except StoreError as exc:
            LOG.debug("Nova notifier: cannot claim (%s)", exc)
            return self._holding
        self._holding = got.succeeded
        return got.succeeded

    def _resign(self) -> None:
        lease, self._lease, self._holding = self._lease, 0, False
        if lease:
            with contextlib.suppress(StoreError):
                self.store.revoke(lease)
        self.leading.clear()

    # ---- following -------------------------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._claim():
                    self._stop.wait(self.leader_ttl / 3)
                    continue
                LOG.info("Nova notifier: this process notifies Nova (key %s)", NOVA_NOTIFIER_KEY)
                self._lead()
            except StoreError as exc:
                LOG.warning("Nova notifier: store error (%s); starting over", exc)
                self._stop.wait(1.0)
            except Exception:
                LOG.exception("Nova notifier: unexpected error; starting over")
                self._stop.wait(1.0)
            finally:
                self.leading.clear()

    def _lead(self) -> None:
        """Load the store, then turn every watched change into events while we hold the
        key. Returns to be called again (after a claim) on a Gap or a lost lease."""
        tracker = Tracker(
            status_changes=self.settings.notify_nova_on_port_status_changes,
            data_changes=self.settings.notify_nova_on_port_data_changes,
        )
        listed_at: list[tuple[str, int]] = []
        for prefix in (_PORTS, STATUS_PORTS, _FIPS):
            listed = self.store.list(prefix)
            listed_at.append((prefix, listed.revision))
            for kv in listed.items:
                tracker.load(kv.key, kv.value)
        # The lists were read at rising revisions: watch from the first, and skip the
        # changes a prefix's own list already held.
        start = min(rev for _, rev in listed_at) + 1
        self.leading.set()
        next_keep = time.monotonic() + self.leader_ttl / 3
        with self.store.watch(ROOT, start) as watch:
            while not self._stop.is_set():
                if time.monotonic() >= next_keep:
                    if not self._claim():
                        return
                    next_keep = time.monotonic() + self.leader_ttl / 3
                item = watch.next(timeout=min(0.5, self.leader_ttl / 3))
                if item is None:
                    continue
                if isinstance(item, Gap):
                    LOG.warning("Nova notifier: store history compacted; reloading")
                    return
                fresh = tuple(
                    ev
                    for ev in item.events
                    if not any(ev.key.startswith(p) and ev.revision <= r for p, r in listed_at)
                )
                events = tracker.apply(Batch(item.revision, fresh))
                if events:
                    LOG.info("Nova notifier: queued %s", events)
                    self.queue.put(events)
