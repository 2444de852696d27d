"""The chassis agent: store -> local view -> apps -> desired flows -> br-int, and back.

    agent = Agent(store, ovs, ChassisInfo("chassis-1", "192.0.2.10"))
    agent.start()          # returns once the first full install is done
    ...
    agent.stop()

One loop thread owns the view, the engine and the installer:

1. pump the store's watch (up to 200 ms) and take the bindings (iface-id -> ofport) that
   OVS's Interface monitor streamed meanwhile (bindings.py);
2. apply every change to the view and incrementally to the engine, draining whatever else
   is already waiting first, so a burst becomes one install (compute first, then install:
   never hold a bundle open while computing, docs/dataplane.md: bundle idle timeout);
3. hand the rendered desired set to the FlowInstaller, which sends only the difference
   in one atomic bundle;
4. write port status keys (ACTIVE once the flows from a revision >= the port's are in).
5. a step that brought no change files the reads a full recompute set aside
   (engine.settle()).

Chassis liveness: each chassis record is attached to a store lease its agent keeps alive
(chassis.py). When a lease runs out the store deletes the record; the others keep the
chassis while BFD to its OVS says it forwards (liveness.py: a lease is control plane,
and a store outage must not take the dataplane down), then it leaves their views and the
apps drop the tunnels and remote flows that name it; when the agent is back it puts the
record again.

At start the installer reads the switch's flows first, so an agent restarted under
traffic (SIGKILL, then start again) sends nothing when nothing changed: the datapath is
never touched. The agent creates br-int once if it is missing, and never sets or removes
a controller target (OVS flushes all flows when a controller comes or goes); the packet-in
channel connects through `<run_dir>/br-int.mgmt` like ovn-controller does.

A restarted ovs-vswitchd loses every flow, the Geneve option map and the underlay
address, and the database shows nothing of it; an OpenFlow connection of the agent's
own (SwitchWatch) drops and comes back, and the loop's next step puts all of it back
(docs/dataplane.md: vswitchd restart).

The packet-in service (DHCP and friends) runs its own asyncio loop on its own thread, so
neither the store nor flow computation can stall the OpenFlow connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from wyvern.apps import punts, qos
from wyvern.apps.base import App
from wyvern.apps.gateway import local_fip, local_gateway
from wyvern.apps.trunk import local_subports
from wyvern.controller import neighbours, ra
from wyvern.controller.bindings import (
    BindingMonitor,
    FipStatusWriter,
    GatewayStatusWriter,
    RouterPortStatusWriter,
    StatusWriter,
)
from wyvern.controller.chassis import ChassisInfo, ChassisRegistration
from wyvern.controller.dhcp import DhcpSettings
from wyvern.controller.engine import Engine, default_apps, gc_paused, release_free_memory
from wyvern.controller.interest import FakeBindings, Interest
from wyvern.controller.liveness import ChassisLiveness
from wyvern.controller.metadata import Instance, MetadataProxy, MetadataSettings
from wyvern.controller.metering import MeterCounters, parse_dump
from wyvern.controller.metrics import AgentFigures, MetricsFile, agent_families, render
from wyvern.controller.sync import Sync
from wyvern.ir import pipeline
from wyvern.ir.meters import MAX_OFPORT, MeterSpec
from wyvern.model.keys import ROOT, mac_binding_key, obj_key
from wyvern.model.view import Change, LocalView, MacBinding
from wyvern.nb.store import Compare, Put, Store, StoreError
from wyvern.southbound import metadata as metadata_port
from wyvern.southbound.installer import FlowInstaller
from wyvern.southbound.meters import Meters
from wyvern.southbound.ofchannel import Inject
from wyvern.southbound.ovs import OvsError, OvsInstance
from wyvern.southbound.physnets import ensure_bridge_mappings
from wyvern.southbound.recorder import RecordingInstaller
from wyvern.southbound.switchwatch import SwitchWatch
from wyvern.southbound.trunks import TrunkPatches
from wyvern.southbound.tunnels import (
    BfdSessions,
    NeighbourPrimer,
    ensure_tunnel_ports,
    ensure_underlay,
)

LOG = logging.getLogger(__name__)
# Gateway failover (_gateway_liveness): a gateway chassis that starts hosts gateways once
# its BFD to every other gateway chassis is up plus GATEWAY_HOLD, or after GATEWAY_HOLD_MAX
# (a BFD session to a live peer is up well within that; a silent peer is down).
GATEWAY_HOLD = 0.5
GATEWAY_HOLD_MAX = 3.0
# Gratuitous ARPs for an address this chassis takes (a floating IP, a gateway): at once
# and again with backoff, as OVN does, so a switch that still saw the old chassis answer
# last (it lost the address a moment later) moves the MAC here all the same.
GARP_SCHEDULE = (0.0, 1.0, 3.0, 7.0)
# How often the loop wakes to read BFD while other gateway chassis exist.
GATEWAY_POLL = 0.1
# Seconds between two renderings of the metrics file (rewritten only if it changed).
METRICS_INTERVAL = 5.0
METERING_INTERVAL = 10.0  # (the agent_metering_interval setting's default)


@dataclass
class AgentStats:
    loops: int = 0
    changes: int = 0
    installs: int = 0
    flows_sent: int = 0  # adds + modifies + deletes over the agent's life
    install_errors: int = 0
    switch_restores: int = 0  # ovs-vswitchd restarts (or reconnections) put right
    status_writes: int = 0
    installed_revision: int = 0
    last_install_seconds: float = 0.0


class Agent:
    def __init__(
        self,
        store: Store,
        ovs: OvsInstance | None,
        chassis: ChassisInfo,
        *,
        apps: Sequence[App] | None = None,
        bridge: str = "br-int",
        lease_ttl: float = 30.0,
        poll_interval: float = 0.2,
        prefixes: Sequence[str] | None = None,
        packet_in: bool = True,
        selective: bool = False,
        liveness_grace: float = 0.0,
        mac_binding_refresh: float = 60.0,
        metadata: MetadataSettings | None = None,
        router_adverts: ra.RaSettings | None = None,
        dhcp: DhcpSettings | None = None,
        metrics_file: Path | None = None,
        metrics_interval: float = METRICS_INTERVAL,
        metering_interval: float = METERING_INTERVAL,
    ) -> None:
        """ovs None: a fake chassis (no switch; flows recorded, ports bound by
        binding:host_id; see wyvern/controller/interest.py). selective: follow only what
        the local ports need (interest.py) instead of every prefix. liveness_grace: how
        long a remote chassis with no BFD session outlives its lease (liveness.py).
        mac_binding_refresh: seconds between the ARP probes for learned MAC bindings.
        metadata: the metadata proxy's settings (None: no metadata port nor proxy; the
        default, MetadataSettings(), answers every VM 404 "not configured").
        router_adverts: the intervals and DNS domain of IPv6 router advertisements.
        dhcp: the DHCPv4 and DHCPv6 servers' lease time and domain.
        metrics_file: where the counters go in Prometheus's text format (metrics.py),
        rewritten every metrics_interval seconds if they changed; None: nowhere.
        metering_interval: seconds between two readings of the metering counters
        (wyvern.controller.metering), reported to the store when they moved."""
        self.store = store
        self.ovs = ovs
        # A trunk's subports: a patch pair each on br-int (wyvern.southbound.trunks)
        self.trunk_patches = TrunkPatches(ovs, bridge) if ovs is not None else None
        self.bridge = bridge
        self.chassis = chassis
        self.poll_interval = poll_interval
        self.mac_binding_refresh = mac_binding_refresh
        self._next_refresh = time.monotonic() + mac_binding_refresh
        self.view = LocalView(chassis_name=chassis.name)
        if prefixes is None:
            prefixes = Interest.base_prefixes(chassis.hostname) if selective else (ROOT,)
        self.sync = Sync(store, self.view, prefixes)
        self.interest = Interest(store, self.sync, chassis.hostname) if selective else None
        self._interest_version = -1
        self.engine = Engine(default_apps() if apps is None else apps)
        self.installer: FlowInstaller | RecordingInstaller
        self.bindings: BindingMonitor | FakeBindings
        # each local port's punt meter (apps/punts.py) and QoS meters (apps/qos.py)
        self.meters: Meters | None = None
        if ovs is None:
            self.installer = RecordingInstaller()
            self.bindings = FakeBindings(self.sync)
            packet_in = False
        else:
            self.installer = FlowInstaller(ovs, bridge)
            self.meters = Meters(ovs, bridge)
            self.bindings = BindingMonitor(ovs, on_change=self.sync.wake)
        self.status = StatusWriter(store, chassis.name, chassis.hostname)
        self.fip_status = FipStatusWriter(store, chassis.name)
        self.gateway_status = GatewayStatusWriter(store, chassis.name)
        self.router_port_status = RouterPortStatusWriter(store, chassis.name)
        self._announced: set[str] = set()  # floating IPs NATed here, announced by GARP
        self._hosted: set[str] = set()  # routers whose gateway is here, announced by GARP
        self._garps: dict[tuple[str, str], list[float]] = {}  # what -> when to announce it
        self.ra_settings = router_adverts or ra.RaSettings()
        self.adverts = ra.Schedule(self.ra_settings)  # unsolicited RAs to local ports
        self._gateway_watch = False  # other gateway chassis exist (BFD read every step)
        self._gateway_ready_at = time.monotonic() + GATEWAY_HOLD_MAX
        if chassis.gateway_priority > 0:  # held back until the others see us
            self.sync.set_chassis_down(chassis.name, True)
        self.registration = ChassisRegistration(store, chassis, lease_ttl)
        self.primer = NeighbourPrimer(ovs, chassis.tunnel_ip) if ovs is not None else None
        bfd = BfdSessions(ovs) if ovs is not None and chassis.encaps else None
        self.liveness = ChassisLiveness(self.view, chassis.encaps, bfd, liveness_grace)
        self.sync.keep_chassis = self.liveness.keep
        self.stats = AgentStats()
        self.metrics = MetricsFile(metrics_file) if metrics_file is not None else None
        self.metrics_interval = metrics_interval
        self._metrics_at = 0.0
        # Metering labels' counters from their flows' statistics (none on a fake chassis).
        self.metering = MeterCounters(store, chassis.name) if ovs is not None else None
        self.metering_interval = metering_interval
        self._metering_at = 0.0
        self.want_packet_in = packet_in
        self.packet_in: PacketInService | None = None
        self.metadata_settings = metadata
        self.dhcp_settings = dhcp or DhcpSettings()
        self.metadata: MetadataProxy | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dirty = False  # the switch may differ from the desired set (a failed sync)
        # The switch's flows are not known (a failed install, an OVS restart): the next
        # install recomputes everything and compares it with the switch (Engine.full
        # after forget_installed: a complete FlowChanges).
        self._switch_unknown = False
        self._retry_at = 0.0
        self._next_binding_poll = 0.0
        # ovs-vswitchd restarted: set by the watch's thread, acted on by the loop.
        self.switch_watch: SwitchWatch | None = None
        self._switch_restarted = threading.Event()
        self._restore_at = 0.0
        self.error: BaseException | None = None
        self.cycle = threading.Condition()
        # Store work that can wait while the store is unreachable (see _store_back).
        self._statuses_owed = False
        self._statuses_retry_at = 0.0
        self._interest_owed = False
        self._store_lost_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Register, read the switch, compute and install everything, then follow."""
        ovs = self.ovs
        if ovs is not None and ovs.ensure_bridge(self.bridge):
            LOG.info("chassis %s: created %s", self.chassis.name, self.bridge)
        if ovs is not None:  # from before the first read: no restart goes unseen
            self.switch_watch = SwitchWatch(
                ovs.mgmt_path(self.bridge), self._switch_reconnected, name=self.bridge
            )
            if not self.switch_watch.start():
                LOG.warning("chassis %s: no OpenFlow connection to %s yet", *self._names())
        self._setup_tunnels()  # before our record advertises the encaps (apps need both)
        if ovs is not None and self.chassis.bridge_mappings:  # likewise the mappings
            ensure_bridge_mappings(ovs, self.bridge, self.chassis.bridge_mappings)
        if isinstance(self.bindings, BindingMonitor):
            self.bindings.start()
        self.registration.start()
        self.sync.start()
        for other in list(self.view.chassis.values()):
            self._prime(other.tunnel_ip)
        self._update_bfd()
        for port_id, binding in self.bindings.poll().items():
            self.sync.set_binding(port_id, binding)
        self._follow_interest([], force=True)
        self._gateway_liveness(time.monotonic(), starting=True)
        self.engine.full(self.view)
        if ovs is not None and self.want_packet_in:
            self.adverts.update(self.view, time.monotonic())
        LOG.info(
            "chassis %s: initial view at revision %d: %d networks, %d ports (%d local); "
            "%d flows desired",
            self.chassis.name,
            self.sync.revision,
            len(self.view.networks),
            len(self.view.ports),
            len(self.view.bindings),
            self.engine.flow_count(),
        )
        self._install()
        # (after a restart with nothing changed meanwhile: 0, the datapath was not touched)
        LOG.info(
            "chassis %s: first install done: %d flow changes sent",
            self.chassis.name,
            self.stats.flows_sent,
        )
        # The initial view and flows live as long as the agent: keep them out of the
        # cyclic GC's full collections, which otherwise stall every later update (at
        # 10,000 ports a full collection walks millions of objects).
        gc.collect()
        gc.freeze()
        release_free_memory()
        if self.want_packet_in and ovs is not None:
            self.packet_in = PacketInService.start(
                self.sync, ovs, self.bridge, self.ra_settings, self.dhcp_settings
            )
        if ovs is not None and self.metadata_settings is not None:
            self._start_metadata(ovs, self.metadata_settings)
        self._write_metrics(time.monotonic())
        self._thread = threading.Thread(
            target=self._run, name=f"agent-{self.chassis.name}", daemon=True
        )
        self._thread.start()

    def _setup_tunnels(self) -> None:
        """Fragment handling, underlay address, tunnel ports and Geneve's option map (all
        idempotent, and all lost when vswitchd restarts)."""
        info = self.chassis
        if self.ovs is None:
            return  # a fake chassis has no switch
        self.ovs.ensure_frag_mode(self.bridge)
        if info.underlay_interface:
            ensure_underlay(
                self.ovs,
                info.underlay_bridge,
                info.underlay_interface,
                info.tunnel_ip,
                info.tunnel_prefixlen,
            )
        if info.encaps:
            ensure_tunnel_ports(self.ovs, self.bridge, info.encaps)

    def _start_metadata(self, ovs: OvsInstance, settings: MetadataSettings) -> None:
        """The metadata port, its namespace and the proxy serving it (apps/metadata.py).
        A failure costs the VMs their metadata, not the chassis its agent."""
        try:
            ns = metadata_port.ensure_port(ovs, self.bridge, self.chassis.name)
            sockets = metadata_port.listen(ns)
        except OvsError as exc:
            LOG.error("chassis %s: no metadata service: %s", self.chassis.name, exc)
            return
        self.metadata = MetadataProxy(settings, self._metadata_instance).start(sockets)
        LOG.info(
            "chassis %s: metadata proxy in namespace %s, Nova %s",
            self.chassis.name,
            ns,
            settings.url("/", "") if settings.configured else "not configured",
        )

    def _metadata_instance(self, ofport: int) -> Instance | None:
        """(The proxy's worker threads) the port bound here on OFPORT, from the view."""
        with self.sync.lock:
            view = self.view
            port_id = next((p for p, b in view.bindings.items() if b.ofport == ofport), None)
            port = view.ports.get(port_id) if port_id is not None else None
            if port is None:
                return None
            ipv4 = next((ip for ip in port.ips if "." in ip), None)
            return Instance(port.id, port.device_id, port.project_id, port.mac, ipv4)

    def _names(self) -> tuple[str, str]:
        return self.chassis.name, self.bridge

    def _switch_reconnected(self) -> None:
        """(SwitchWatch's thread) vswitchd is back, maybe a new one: wake the loop."""
        self._switch_restarted.set()
        self.sync.wake()

    def _prepare_restore(self) -> bool:
        """ovs-vswitchd restarted: put back what lived only in its memory, before the
        flows (which the caller reinstalls): br-int's fragment handling, the underlay
        address on br-phy's new tap, Geneve's option map (flows name tun_metadata0), and
        the tunnel neighbours. The installer forgets what it believed installed and
        re-reads the switch. False if OVS is not ready yet (tried again shortly)."""
        self._switch_restarted.clear()
        try:
            self._setup_tunnels()
            if self.ovs is not None and self.chassis.bridge_mappings:
                ensure_bridge_mappings(self.ovs, self.bridge, self.chassis.bridge_mappings)
        except OvsError as exc:
            LOG.error("chassis %s: cannot restore %s yet: %s", *self._names(), exc)
            self._switch_restarted.set()
            self._restore_at = time.monotonic() + 0.5
            return False
        self.installer.mark_stale()
        self._switch_unknown = True
        if self.meters is not None:
            self.meters.forget()  # (the punt meters went with the flows: read them again)
        if self.primer is not None:
            self.primer.primed.clear()
            for other in list(self.view.chassis.values()):
                self._prime(other.tunnel_ip)
        self.stats.switch_restores += 1
        return True

    def _prime(self, ip: str) -> None:
        """Make OVS learn a remote underlay neighbour before traffic needs it
        (docs/dataplane.md: tunnel neighbour)."""
        if self.primer is not None and self.chassis.encaps and ip and not ip.startswith("127."):
            self.primer.prime(ip)

    def _update_bfd(self) -> None:
        try:
            self.liveness.update_sessions()
        except OvsError as exc:
            LOG.error("chassis %s: cannot set up BFD sessions: %s", self.chassis.name, exc)

    def stop(self, *, expire: bool = True) -> None:
        """expire False: leave the chassis record as a crash would (its lease runs out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.switch_watch is not None:
            self.switch_watch.stop()
        if self.primer is not None:
            self.primer.close()
        if expire and self.liveness.bfd is not None:
            self.liveness.bfd.remove_all()  # (the others' sessions to us go down)
        if self.packet_in is not None:
            self.packet_in.stop()
            self.packet_in = None
        if self.metadata is not None:
            self.metadata.stop()
            self.metadata = None
            if expire and self.ovs is not None:  # (a crash leaves it, as the flows)
                metadata_port.remove_port(self.ovs, self.bridge, self.chassis.name)
        self.registration.stop(expire=expire)
        if self.metrics is not None and expire:  # (a crash leaves it, with its mtime)
            self.metrics.remove()
        if isinstance(self.bindings, BindingMonitor):
            self.bindings.stop()
        self.sync.close()

    def check(self) -> str | None:
        if self.error is not None:
            return f"agent loop died: {self.error!r}"
        if self._thread is not None and not self._thread.is_alive():
            return "agent loop stopped"
        return None

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step(self.poll_interval)
        except BaseException as exc:  # logged and reported through check()
            LOG.exception("chassis %s: agent loop failed", self.chassis.name)
            self.error = exc

    def step(self, timeout: float) -> int:
        """One iteration: gather changes, compute, install, write statuses."""
        changes: list[Change] = []
        if self._gateway_watch:  # other gateway chassis: read their BFD often
            timeout = min(timeout, GATEWAY_POLL)
        try:
            changes += self.sync.pump(timeout)
        except StoreError as exc:
            LOG.warning("chassis %s: store unavailable: %s", self.chassis.name, exc)
            self.sync.close()  # watches are re-opened from the applied revision
            time.sleep(min(1.0, timeout))
        now = time.monotonic()
        replug = False  # a binding came or went: what to follow may have changed
        # Bindings: every step when they are cheap (a fake chassis's; OVS's streamed by
        # the Interface monitor, which wakes the loop), else every poll_interval.
        cheap = isinstance(self.bindings, FakeBindings) or self.bindings.streaming
        if now >= self._next_binding_poll or cheap:
            self._next_binding_poll = now + self.poll_interval
            polled = self.bindings.poll()
            for port_id, binding in polled.items():
                changes += self.sync.set_binding(port_id, binding)
            # (a port whose network could not be looked up yet is tried again)
            replug = bool(polled) or bool(self.interest and self.interest.unresolved)
        # A burst: take what else is already there before computing.
        if changes:
            with contextlib.suppress(StoreError):
                changes += self.sync.pump(0)
        replug = self._store_back() or replug
        changes += self._gateway_liveness(now)
        if self._garps:
            self._send_garps(now)
        if now >= self._next_refresh:
            self._next_refresh = now + self.mac_binding_refresh
            self._send_out("MAC bindings", neighbours.refreshes(self.view))
        if self.sync.lease_gone:  # (a chassis kept past its lease: is it still there?)
            for name in self.liveness.dead(list(self.sync.lease_gone)):
                changes += self.sync.drop_chassis(name)
        changes += self._follow_interest(changes, force=replug)
        if self.trunk_patches is not None and (changes or self.trunk_patches.current is None):
            # (the pairs' interfaces come back as bindings through the monitor)
            self.trunk_patches.sync(local_subports(self.view))
        self._send_adverts(now, changes)
        self.stats.loops += 1
        with gc_paused():  # (the collector catches up once the flows are in)
            if changes:
                self.stats.changes += len(changes)
                self._compute(changes)
            restoring = self._switch_restarted.is_set() and time.monotonic() >= self._restore_at
            if restoring:
                restoring = self._prepare_restore()
            installing = (
                bool(changes) or restoring or (self._dirty and time.monotonic() >= self._retry_at)
            )
            if installing:
                self._install()
            if restoring:
                LOG.warning(
                    "chassis %s: %s restored after an OVS restart: %d flows in %.3f s%s",
                    *self._names(),
                    self.engine.flow_count(),
                    self.stats.last_install_seconds,
                    " (install failed: retrying)" if self._dirty else "",
                )
        for change in changes:
            if change.kind == "chassis" and change.new is not None:
                self._prime(change.new.tunnel_ip)
        if any(change.kind == "chassis" for change in changes):
            self._update_bfd()
        owed = self._statuses_owed and time.monotonic() >= self._statuses_retry_at
        if not installing and (self._statuses_stale() or owed):
            self._write_statuses()
        # Idle: file what a full recompute read (else the next change does), then hand
        # back what the filing left free (a few MiB at 10k ports).
        if not changes and self.engine.settle() > 1000:
            release_free_memory()
        self._read_meters(time.monotonic())
        self._write_metrics(time.monotonic())
        with self.cycle:
            self.cycle.notify_all()
        return len(changes)

    def _read_meters(self, now: float) -> None:
        """The metering counters, every metering_interval: read, summed, reported."""
        if self.metering is None or self.ovs is None or now < self._metering_at:
            return
        if not self.store.reachable or self._dirty:  # (flows not as computed: next time)
            return
        self._metering_at = now + self.metering_interval
        try:
            text = self.ovs.ofctl(
                "-O",
                "OpenFlow15",
                "--no-names",
                "dump-flows",
                self.bridge,
                f"table={pipeline.table_of('meter_count')}",
            )
            self.metering.update(self.view, parse_dump(text))
            self.metering.report()
        except (OvsError, StoreError) as exc:
            LOG.warning("chassis %s: metering counters not read: %s", self.chassis.name, exc)

    def _store_back(self) -> bool:
        """Note the store going and coming back; True once when it is back (what was put
        off meanwhile is owed). Without this the loop would wait out a request timeout per
        attempt, and could still be waiting when the store returns."""
        if not self.store.reachable:
            if self._store_lost_at is None:
                self._store_lost_at = time.monotonic()
                LOG.warning(
                    "chassis %s: store unreachable; the flows stay as they are, store work "
                    "waits until it is back",
                    self.chassis.name,
                )
            return False
        if self._store_lost_at is None:
            return False
        LOG.warning(
            "chassis %s: store back after %.1f s",
            self.chassis.name,
            time.monotonic() - self._store_lost_at,
        )
        self._store_lost_at = None
        owed = self._interest_owed
        self._interest_owed = False
        return owed

    def _follow_interest(self, changes: list[Change], force: bool = False) -> list[Change]:
        """With selective distribution: follow (or stop following) what the changes made
        (un)necessary; what that lists comes back as more changes."""
        interest = self.interest
        if interest is None:
            return []
        if not self.store.reachable:
            self._interest_owed = self._interest_owed or force or bool(changes)
            return []
        moved = self.sync.interest_version != self._interest_version
        if not (force or moved or Interest.touches(changes)):
            return []
        self._interest_version = self.sync.interest_version
        try:
            return interest.update()
        except StoreError as exc:
            LOG.warning("chassis %s: cannot follow what ports need: %s", self.chassis.name, exc)
            return []

    def _compute(self, changes: list[Change]) -> None:
        try:
            self.engine.apply_all(self.view, changes)  # each affected owner once
        except Exception:
            LOG.exception(
                "chassis %s: incremental update failed; recomputing everything",
                self.chassis.name,
            )
            self.engine.full(self.view)

    def _install(self) -> None:
        revision = self.sync.revision
        start = time.monotonic()
        meters = self.meters
        complete = self._switch_unknown
        try:
            if complete:
                self.engine.forget_installed()
                self.engine.full(self.view)
            changes = self.engine.render()
            if meters is not None:  # (before the flows that name them)
                wanted = self._meter_ids()
                meters.add(wanted)
            result = self.installer.apply(changes)
            if meters is not None:
                meters.remove_others(wanted)
        except (OvsError, ValueError) as exc:
            # Nothing was applied (bundles are atomic); try again a little later.
            if meters is not None:
                meters.forget()  # (a switch that lost its flows lost its meters too)
            self.stats.install_errors += 1
            self._dirty = self._switch_unknown = True
            self._retry_at = time.monotonic() + 1.0
            LOG.error("chassis %s: flow install failed: %s", self.chassis.name, exc)
            return
        self._dirty = self._switch_unknown = False
        if complete:
            release_free_memory()  # (as after the first install)
        self.stats.installs += 1
        self.stats.flows_sent += result.changed
        self.stats.installed_revision = revision
        self.stats.last_install_seconds = time.monotonic() - start
        self._write_statuses()

    def _write_metrics(self, now: float) -> None:
        """The counters to the metrics file, every metrics_interval at most."""
        if self.metrics is None or now < self._metrics_at:
            return
        self._metrics_at = now + self.metrics_interval
        self.metrics.write(
            render(agent_families(self.chassis.name, self.figures(), punts.NAMES.values()))
        )

    def figures(self) -> AgentFigures:
        """What the metrics file shows, now."""
        st = asdict(self.stats)
        packet_in = self.packet_in.counters() if self.packet_in is not None else None
        return AgentFigures(
            counters=st,
            installed_revision=self.stats.installed_revision,
            store_revision=self.sync.revision,
            last_install_seconds=self.stats.last_install_seconds,
            flows=self.engine.flow_count(),
            local_ports=sum(1 for p in self.view.bindings if p in self.view.ports),
            packet_in=packet_in,
        )

    def _meter_ids(self) -> dict[int, MeterSpec]:
        """The meters the local ports' flows may name (a superset is harmless): each one's
        punt meter, and the QoS meters of their policies' rules."""
        ports = self.view.ports
        punt = MeterSpec("pktps", punts.METER_RATE, punts.METER_BURST)
        out = {
            punts.meter_id(b.ofport): punt
            for p, b in self.view.bindings.items()
            if p in ports and 0 < b.ofport <= MAX_OFPORT  # (-1: an interface OVS failed)
        }
        out.update(qos.wanted_meters(self.view))
        return out

    def _statuses_stale(self) -> bool:
        return not self._dirty and self.stats.installed_revision < self.sync.revision

    def _write_statuses(self) -> None:
        if self._dirty:
            return
        if not self.store.reachable:
            self._statuses_owed = True
            return
        # Anything applied since the install changed no flow (else we would have
        # installed): the installed flows are those of the current revision too.
        self.stats.installed_revision = max(self.stats.installed_revision, self.sync.revision)
        ports = self.view.ports
        bound = {p: b.ofport for p, b in self.view.bindings.items() if p in ports}
        networks = {p: ports[p].network_id for p in bound}
        revisions = {p: self.sync.mod_revision.get(("port", p), 0) for p in bound}
        floor = self.stats.installed_revision
        installed = {p: max(floor, self.sync.applied_revision(("port", p))) for p in bound}
        natted = {f for f in self.view.floatingips if local_fip(self.view, f) is not None}
        now = time.monotonic()
        for fid in sorted(natted - self._announced):
            self._garps[("fip", fid)] = [now + d for d in GARP_SCHEDULE]
        self._announced = natted
        hosted = {r for r, rec in self.view.routers.items() if local_gateway(self.view, rec)}
        for rid in sorted(hosted - self._hosted):
            self._garps[("gateway", rid)] = [now + d for d in GARP_SCHEDULE]
        self._hosted = hosted
        self._send_garps(now)
        try:
            self.stats.status_writes += self.status.update(bound, networks, revisions, installed)
            # (and the floating IPs whose port forwardings this gateway chassis DNATs)
            forwarded = {
                pf.fip_id for r in sorted(hosted) for pf in self.view.routers[r].port_forwardings
            }
            self.stats.status_writes += self.fip_status.update(natted | forwarded)
            self.stats.status_writes += self.gateway_status.update(hosted)
            self.stats.status_writes += self.router_port_status.update(self._routed_ports(floor))
            self._statuses_owed = False
        except StoreError as exc:
            self._statuses_owed = True  # (tried again in a second: nothing else would)
            self._statuses_retry_at = time.monotonic() + 1.0
            LOG.warning("chassis %s: cannot write port status: %s", self.chassis.name, exc)

    def _routed_ports(self, floor: int) -> set[str]:
        """Router interface ports this chassis routes for, with the flows computed from
        revisions at least the port's and its router's installed."""
        out: set[str] = set()
        sync = self.sync
        for router in self.view.routers.values():
            rkey = ("router", router.id)
            for itf in router.interfaces:
                pkey = ("port", itf.port_id)
                if itf.port_id not in self.view.ports:
                    continue
                need = max(sync.mod_revision.get(pkey, 0), sync.mod_revision.get(rkey, 0))
                have = max(floor, min(sync.applied_revision(pkey), sync.applied_revision(rkey)))
                if have >= need:
                    out.add(itf.port_id)
        return out

    def _send_garps(self, now: float) -> None:
        """The gratuitous ARPs due (GARP_SCHEDULE), for what is still ours."""
        for key, times in list(self._garps.items()):
            if times[0] > now:
                continue
            kind, id_ = key
            if kind == "fip":
                found = neighbours.announcement(self.view, id_)
                frames = [found] if found else []
            else:
                frames = neighbours.gateway_announcements(self.view, id_)
            self._send_out(id_, frames)
            while times and times[0] <= now:
                times.pop(0)
            if not times or not frames:
                del self._garps[key]

    def _send_adverts(self, now: float, changes: list[Change]) -> None:
        """The unsolicited router advertisements due (wyvern/controller/ra.py): at once
        to a port that appeared or whose network's advertisements changed, then every
        min..max_rtr_adv_interval. Out of each VM's own port only."""
        if self.ovs is None or not self.want_packet_in:
            return  # (no switch to send them to)
        if changes:
            self.adverts.update(self.view, now, changes)
        if self.packet_in is None or not self.packet_in.ready:
            return  # (kept due until the packet-in channel is up: one message each then)
        due = self.adverts.next_due()
        if due is None or due > now:
            return
        self._send_out("router advertisements", self.adverts.due(self.view, now))

    def _send_out(self, what: str, frames: Sequence[tuple[int | Inject, bytes]]) -> None:
        """ARP frames out of the patch ports: gratuitous ARPs for a floating IP or gateway
        NATed here from now on, probes for learned neighbours."""
        if self.ovs is None or not frames:
            return
        if self.packet_in is not None and self.packet_in.send(what, frames):
            return
        for patch, frame in frames:
            actions = patch.ofctl_actions() if isinstance(patch, Inject) else f"output:{patch}"
            try:
                self.ovs.ofctl(
                    "-O", "OpenFlow15", "packet-out", self.bridge,
                    f"in_port=controller packet={frame.hex()} actions={actions}",
                )  # fmt: skip
            except OvsError as exc:
                LOG.warning("%s: ARP not sent: %s", what, exc)

    def _gateway_liveness(self, now: float, starting: bool = False) -> list[Change]:
        """Gateway failover: another gateway chassis whose BFD says its dataplane is down
        hosts no gateway here (within BFD's ~0.3 s, not the store lease's TTL); this one,
        after a (re)start, holds back until the others' BFD is up (they see it too, and
        release what it takes) or GATEWAY_HOLD_MAX has passed (they are down). An agent
        that restarts finds the others' BFD up (sessions live in OVSDB) and holds nothing
        back: the gateways it hosted stay installed."""
        peers = self.liveness.gateway_peers()
        self._gateway_watch = bool(peers)
        out: list[Change] = []
        for name, forwarding in peers.items():
            down = forwarding is False
            if bool(self.view.chassis_down.get(name)) != down:
                LOG.warning("chassis %s: gateway chassis %s %s", self.chassis.name, name,
                            "is down (BFD)" if down else "is back (BFD)")  # fmt: skip
                out += self.sync.set_chassis_down(name, down)
        for name in [n for n in self.view.chassis_down if n not in peers]:
            if name != self.chassis.name:
                out += self.sync.set_chassis_down(name, False)  # (its record went)
        me = self.chassis.name
        if self.view.chassis_down.get(me):
            if all(peers.values()):
                hold = 0.0 if starting else GATEWAY_HOLD
                self._gateway_ready_at = min(self._gateway_ready_at, now + hold)
            if now >= self._gateway_ready_at:
                LOG.info("chassis %s: hosting gateways from now on", me)
                out += self.sync.set_chassis_down(me, False)
        return out

    # -- for tests and tools ---------------------------------------------------------------
    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Until predicate() holds after a loop iteration (or TIMEOUT)."""
        deadline = time.monotonic() + timeout
        with self.cycle:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cycle.wait(min(left, 0.5))
        return True


class PacketInService:
    """The packet-in dispatcher on an asyncio loop of its own thread."""

    def __init__(
        self,
        sync: Sync,
        ovs: OvsInstance,
        bridge: str,
        adverts: ra.RaSettings | None = None,
        dhcp: DhcpSettings | None = None,
    ) -> None:
        self.sync = sync
        self.ovs = ovs
        self.bridge = bridge
        self.adverts = adverts
        self.dhcp = dhcp or DhcpSettings()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="packet-in", daemon=True)
        self._channel: Any = None  # the OfChannel while serving
        self.dispatcher: Any = None  # the PacketInDispatcher, once serving
        self._stopping = asyncio.Event()  # bound to self.loop on first use

    @classmethod
    def start(
        cls,
        sync: Sync,
        ovs: OvsInstance,
        bridge: str,
        adverts: ra.RaSettings | None = None,
        dhcp: DhcpSettings | None = None,
    ) -> PacketInService:
        service = cls(sync, ovs, bridge, adverts, dhcp)
        service._thread.start()
        return service

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except Exception:
            LOG.exception("packet-in service failed")
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        from wyvern.controller import packetin
        from wyvern.southbound.ofchannel import OfChannel

        # Back within a second of a restarted vswitchd (DHCP and friends stop meanwhile).
        channel = OfChannel(
            self.ovs.mgmt_path(self.bridge), name=f"{self.bridge}-packet-in", reconnect_max=1.0
        )
        dispatcher = packetin.PacketInDispatcher(
            self.sync.view, dhcp_settings=self.dhcp, ra_settings=self.adverts
        )
        inner = dispatcher.handle
        lock = self.sync.lock
        self.dispatcher = dispatcher

        def handle(pin: Any, now: float) -> Any:
            with lock:  # the agent thread changes the view under the same lock
                outs = inner(pin, now)
                learned, dispatcher.learned = dispatcher.learned, []
            for binding in learned:  # (a store write: never under the view's lock)
                self._write_binding(binding)
            return outs

        dispatcher.handle = handle  # type: ignore[method-assign]
        run = dispatcher.run  # type: ignore[attr-defined,unused-ignore]
        async with channel:
            self._channel = channel
            task = asyncio.create_task(run(channel))
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            for t in (task, stop):
                t.cancel()
            for t in (task, stop):
                try:
                    await t
                except asyncio.CancelledError:
                    pass
                except Exception:
                    LOG.exception("packet-in service on %s stopped", self.bridge)

    @property
    def ready(self) -> bool:
        """Whether `send` would queue packet-outs now (the channel is connected)."""
        return self._channel is not None and not self.loop.is_closed()

    def send(self, what: str, frames: Sequence[tuple[int | Inject, bytes]]) -> bool:
        """Queue FRAMES (ofport, bytes) as packet-outs on this service's OpenFlow
        connection and return at once (False: not serving). Thousands of gratuitous ARPs
        at a bulk association cost the agent's loop nothing: one `ovs-ofctl packet-out`
        process per frame used to take most of it."""
        channel = self._channel
        if not frames:
            return True
        if channel is None or self.loop.is_closed():
            return False

        async def out() -> None:
            from wyvern.southbound.ofchannel import ChannelError

            try:
                for port, data in frames:
                    await channel.packet_out(port, data)
            except (ChannelError, OSError) as exc:  # (lost: the schedule sends them again)
                LOG.warning("%s: ARP not sent: %s", what, exc)

        try:
            asyncio.run_coroutine_threadsafe(out(), self.loop)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    def counters(self) -> dict[str, int]:
        """(Any thread) a copy of the dispatcher's counters. They change only inside its
        handle(), which runs under the view's lock: a copy under that lock is whole."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return {}
        with self.sync.lock:
            return dict(dispatcher.stats)

    def _write_binding(self, binding: MacBinding) -> None:
        """Publish a learned neighbour to every agent following its network."""
        key = mac_binding_key(binding.network_id, binding.ip)
        value = orjson.dumps(
            {"id": binding.id, "network_id": binding.network_id, "ip": binding.ip,
             "mac": binding.mac}
        )  # fmt: skip
        # Only while the network exists: its delete removes its bindings (the API's).
        alive = Compare(obj_key("networks", binding.network_id), "version", ">", 0)
        try:
            self.sync.store.txn([alive], [Put(key, value)])
        except StoreError as exc:  # learned again at the next ARP
            LOG.warning("mac binding %s %s: not stored: %s", binding.ip, binding.mac, exc)

    def stop(self) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(5)
