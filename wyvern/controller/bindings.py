"""Local port bindings from OVS, and the status the agent writes back for them.

A port is bound here when an Interface on our OVS carries `external_ids:iface-id=<port
id>` (the os-vif/libvirt convention) and has a valid ofport. The agent follows the
Interface table through an `ovsdb-client monitor` stream (BindingMonitor), which sees a
plug as soon as OVS commits it and wakes the agent's loop; only while that stream is down
(starting, or restarting after it died) does it read the table with ovs-vsctl every poll
interval. Either way, differences become `Binding` records.

Binding facts go to /wyvern/status/ports/<network id>/<port id>, never into the API's
port object (the API is the only writer of logical objects):

    {"chassis": name, "host": hostname, "status": "ACTIVE" | "DOWN",
     "installed_revision": R, "ofport": n}

ACTIVE is written only once the flows computed from a store revision R >= the port's mod
revision are installed (the installer's sync returned). A port that is unplugged or
deleted loses its status key (the API then shows it DOWN again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from wyvern.model.keys import (
    STATUS_FIPS,
    STATUS_GATEWAYS,
    STATUS_PORTS,
    STATUS_ROUTER_PORTS,
    router_port_status_key,
    status_key,
)
from wyvern.model.view import Binding
from wyvern.nb.etcd_server import kill_with_parent
from wyvern.nb.store import Compare, Delete, Put, Store
from wyvern.southbound.ovs import OvsError, OvsInstance
from wyvern.southbound.trunks import TRUNK_SUBPORT_ID

LOG = logging.getLogger(__name__)


def _ovsdb_map(value: Any) -> dict[str, str]:
    # OVSDB JSON: ["map", [[key, value], ...]]
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {str(k): str(v) for k, v in value[1]}
    return {}


def _ovsdb_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    return -1  # ["set", []]: not assigned yet


def read_bindings(ovs: OvsInstance) -> dict[str, Binding]:
    """port id -> Binding for every Interface with an iface-id and a valid ofport."""
    out = ovs.vsctl(
        "--format=json", "--columns=name,ofport,external_ids", "list", "Interface", timeout=10
    )
    data = json.loads(out)
    return bindings_of(_row(name, ofport, ext) for name, ofport, ext in data.get("data") or [])


def _row(name: Any, ofport: Any, ext: Any) -> tuple[str, int, str, str]:
    ids = _ovsdb_map(ext)
    return str(name), _ovsdb_int(ofport), ids.get("iface-id", ""), ids.get(TRUNK_SUBPORT_ID, "")


def bindings_of(rows: Iterable[tuple[str, int, str | None, str]]) -> dict[str, Binding]:
    """port id -> Binding from Interface rows (name, ofport, iface-id, trunk subport):
    those with an iface-id and a valid ofport; of two claiming one port, the first is
    kept. A trunk's subport is bound by its patch pair (wyvern.controller.trunks): the
    end with its iface-id is its port, the other (its id under TRUNK_SUBPORT_ID) is
    where the trunk app tags it (`Binding.trunk_ofport`)."""
    found: dict[str, Binding] = {}
    trunk_ends: dict[str, int] = {}
    for name, ofport, port_id, subport in rows:
        if subport and ofport > 0:
            trunk_ends.setdefault(subport, ofport)
        if not port_id or ofport <= 0:
            continue
        if port_id in found:
            LOG.warning("port %s: two interfaces claim it (%s); keeping the first", port_id, name)
            continue
        found[port_id] = Binding(port_id, ofport)
    for port_id, ofport in trunk_ends.items():
        bound = found.get(port_id)
        if bound is not None:
            found[port_id] = Binding(port_id, bound.ofport, ofport)
    return found


class BindingMonitor:
    """OVS interfaces with an iface-id, as bindings; `poll()` returns what changed since
    the last call.

    An `ovsdb-client monitor` of the Interface table streams every change as it commits
    (as ovn-controller's IDL does), so a plug is seen at once and `poll()` costs nothing;
    `on_change` is called from the reader thread so the agent's loop wakes up. Without
    the monitor (it died, or is starting) poll() reads the table with ovs-vsctl.
    """

    def __init__(self, ovs: OvsInstance, on_change: Callable[[], None] | None = None) -> None:
        self.ovs = ovs
        self.on_change = on_change
        self.current: dict[str, Binding] = {}
        # uuid -> (name, ofport, iface-id, trunk subport)
        self._rows: dict[str, tuple[str, int, str, str]] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._synced = threading.Event()  # the monitor's initial dump has been read
        self._stopped = False
        self.restarts = 0  # monitors that ended under us (ovsdb-server restarted...)

    @property
    def streaming(self) -> bool:
        """Whether poll() reads the monitor's copy (cheap) rather than OVS."""
        return self._synced.is_set()

    def start(self) -> None:
        """Start the monitor; returns once it has the table (or after 5 s without)."""
        self._stopped = False
        self._spawn()
        self._synced.wait(5.0)

    def stop(self) -> None:
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def _spawn(self) -> None:
        self._synced.clear()
        cmd = [
            "ovsdb-client",
            "monitor",
            f"unix:{self.ovs.db_sock}",
            "Open_vSwitch",
            "Interface",
            "name,ofport,external_ids",
            "--format=json",
        ]
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self.ovs.env,
                preexec_fn=kill_with_parent,  # an agent killed with SIGKILL leaves no monitor
            )
        except OSError as exc:
            LOG.warning("ovs %s: no Interface monitor (%s); polling", self.ovs.run_dir, exc)
            return
        self._proc = proc
        threading.Thread(target=self._read, args=(proc,), name="ovsdb-monitor", daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with self._lock:
            self._rows = {}
        for line in proc.stdout:
            if not self._apply(line):
                continue
            if not self._synced.is_set() and self.restarts:
                LOG.info("ovs %s: the Interface monitor is back", self.ovs.run_dir)
            self._synced.set()
            if self.on_change is not None:
                self.on_change()
        was_streaming = self._synced.is_set()
        self._synced.clear()  # the monitor ended: poll() reads the table again
        if not self._stopped:
            self.restarts += 1
            # (once, not once per failed start while the database server is away)
            log = LOG.warning if was_streaming else LOG.debug
            log("ovs %s: the Interface monitor stopped; restarting", self.ovs.run_dir)

    def _apply(self, line: str) -> bool:
        """One monitor update into _rows; False if it was not one.

        A function of its own so that the parsed update (the whole table, at first) is
        not kept alive by the reading loop's locals while it waits for the next line:
        ~1.4 MiB at 1,000 interfaces.
        """
        try:
            update = json.loads(line)
            rows = update["data"]
            cols = update["headings"]
        except (ValueError, KeyError, TypeError):
            return False
        with self._lock:
            last = ""
            for row in rows:
                values = dict(zip(cols, row, strict=False))
                uuid, action = values.get("row") or last, values.get("action")
                last = uuid
                if action in ("initial", "insert", "new"):
                    self._rows[uuid] = _row(
                        values.get("name"), values.get("ofport"), values.get("external_ids")
                    )
                elif action == "delete":
                    self._rows.pop(uuid, None)
        return True

    def _from_monitor(self) -> dict[str, Binding] | None:
        proc = self._proc
        if proc is None or not self._synced.is_set():
            if proc is not None and proc.poll() is not None and not self._stopped:
                self._spawn()  # (it died: start again; poll the table meanwhile)
            return None
        with self._lock:
            return bindings_of(sorted(self._rows.values()))

    def poll(self) -> dict[str, Binding | None]:
        now = self._from_monitor()
        if now is None:
            try:
                now = read_bindings(self.ovs)
            except (OvsError, ValueError) as exc:
                LOG.warning("ovs %s: cannot read interfaces: %s", self.ovs.run_dir, exc)
                return {}
        changed: dict[str, Binding | None] = {}
        for port_id in self.current.keys() - now.keys():
            changed[port_id] = None
        for port_id, binding in now.items():
            if self.current.get(port_id) != binding:
                changed[port_id] = binding
        self.current = now
        return changed


@dataclass(frozen=True)
class PortStatus:
    chassis: str
    host: str
    status: str
    installed_revision: int
    ofport: int

    def as_obj(self) -> dict[str, Any]:
        return {
            "chassis": self.chassis,
            "host": self.host,
            "status": self.status,
            "installed_revision": self.installed_revision,
            "ofport": self.ofport,
        }


class StatusWriter:
    """Writes port status keys for this chassis, only when something a reader cares about
    changed (status, ofport, or a newer port revision installed): no write amplification."""

    def __init__(self, store: Store, chassis: str, host: str) -> None:
        self.store = store
        self.chassis = chassis
        self.host = host
        # port id -> (key, status) as we last wrote them. Seeded by one list of every status
        # on first use: ours may sit under networks this chassis no longer follows (a port
        # unplugged while the agent was down), or under an older key layout.
        self._mine: dict[str, tuple[str, dict[str, Any]]] | None = None

    def _seed(self) -> dict[str, tuple[str, dict[str, Any]]]:
        mine: dict[str, tuple[str, dict[str, Any]]] = {}
        for kv in self.store.list(STATUS_PORTS).items:
            with contextlib.suppress(orjson.JSONDecodeError):
                obj = orjson.loads(kv.value)
                if isinstance(obj, dict) and obj.get("chassis") == self.chassis:
                    mine[kv.key.rsplit("/", 1)[1]] = (kv.key, obj)
        return mine

    def update(
        self,
        bound: dict[str, int],
        networks: dict[str, str],
        port_revisions: dict[str, int],
        installed_revision: int | dict[str, int],
    ) -> int:
        """Make the status keys match: BOUND = local port id -> ofport for ports in the
        view, NETWORKS = their network ids, PORT_REVISIONS = their mod revisions.
        Returns the number of keys written or deleted."""
        if self._mine is None:
            self._mine = self._seed()
        mine = self._mine
        puts: list[Put] = []
        deletes: list[Delete] = []
        written: dict[str, tuple[str, dict[str, Any]]] = {}
        for port_id, ofport in bound.items():
            mod = port_revisions.get(port_id, 0)
            installed = (
                installed_revision
                if isinstance(installed_revision, int)
                else installed_revision.get(port_id, 0)
            )
            active = installed >= mod
            key = status_key(networks[port_id], port_id)
            old_key, old = mine.get(port_id) or ("", {})
            want = PortStatus(
                self.chassis,
                self.host,
                "ACTIVE" if active else "DOWN",
                installed,
                ofport,
            )
            same = (
                old_key == key
                and old.get("chassis") == want.chassis
                and old.get("status") == want.status
                and old.get("ofport") == want.ofport
                and int(old.get("installed_revision") or 0) >= mod
            )
            if not same:
                written[port_id] = (key, want.as_obj())
                puts.append(Put(key, orjson.dumps(want.as_obj())))
                if old_key and old_key != key:
                    deletes.append(Delete(old_key))
        gone = [p for p in mine if p not in bound]
        deletes += [Delete(mine[p][0]) for p in gone]
        if puts or deletes:
            self.store.txn([], puts, deletes)
            mine.update(written)
            for p in gone:
                del mine[p]
            LOG.info(
                "chassis %s: port status: %d written, %d removed (installed revision %s)",
                self.chassis,
                len(puts),
                len(deletes),
                installed_revision if isinstance(installed_revision, int) else "per port",
            )
        return len(puts) + len(deletes)


class HostedStatusWriter:
    """Writes <prefix><id> = {"chassis": us, "status": "ACTIVE"} for the objects this
    chassis hosts with their flows installed, and removes ours that it no longer does,
    only if still ours: the object may have moved to another chassis, whose key then
    names it. The API reads these keys (a floating IP's status, a router's gateway
    chassis)."""

    PREFIX = ""

    def __init__(self, store: Store, chassis: str) -> None:
        self.store = store
        self.chassis = chassis
        self._mine: set[str] | None = None  # seeded from the store on first use

    def update(self, active: set[str]) -> int:
        prefix = self.PREFIX
        if self._mine is None:
            self._mine = set()
            for kv in self.store.list(prefix).items:
                with contextlib.suppress(orjson.JSONDecodeError):
                    obj = orjson.loads(kv.value)
                    if isinstance(obj, dict) and obj.get("chassis") == self.chassis:
                        self._mine.add(kv.key[len(prefix) :])
        value = orjson.dumps({"chassis": self.chassis, "status": "ACTIVE"})
        puts = [Put(prefix + f, value) for f in sorted(active - self._mine)]
        if puts:
            self.store.txn([], puts)
        gone = sorted(self._mine - active)
        for f in gone:
            key = prefix + f
            self.store.txn([Compare(key, "value", "==", value)], [], [Delete(key)])
        self._mine = set(active)
        return len(puts) + len(gone)


class FipStatusWriter(HostedStatusWriter):
    """The floating IPs this chassis NATs: the API shows one ACTIVE only while its key
    says so."""

    PREFIX = STATUS_FIPS


class GatewayStatusWriter(HostedStatusWriter):
    """The routers whose gateway this chassis hosts: the API's l3-agents list marks that
    chassis active (Neutron's ha_state)."""

    PREFIX = STATUS_GATEWAYS


class RouterPortStatusWriter(HostedStatusWriter):
    """The router interface ports this chassis routes for with their flows installed,
    one key per chassis (<port>/<chassis>): the API shows such a port ACTIVE while a live
    chassis has one, as OVN reports a router port up once it is programmed."""

    PREFIX = STATUS_ROUTER_PORTS

    def update(self, active: set[str]) -> int:
        mine = {router_port_status_key(p, self.chassis) for p in active}
        return super().update({k[len(self.PREFIX) :] for k in mine})
