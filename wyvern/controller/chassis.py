"""This chassis in the store: /wyvern/chassis/<name>, attached to a lease.

The record carries what other chassis need (hostname, tunnel IP, encap types, bridge
mappings). It is put with a store lease that the agent keeps alive every TTL/3; a
keepalive is no write and no event, so a hundred idle chassis wake nobody. When the
lease runs out (the agent died, or was cut off from the store for a whole TTL) the store
deletes the record, an ordinary delete every other agent sees in revision order: they
drop its tunnels and remote flows once BFD to its OVS is down too (liveness.py). A clean
stop removes its BFD sessions and revokes the lease (the same, within BFD's detection).
An agent whose keepalive finds its lease gone grants a new one and puts the record
again, and the others take it back as a new chassis.

Neutron keeps dead agents listed (alive: false), so the agent also keeps a registry
record, /wyvern/agents/<name>, with no lease (created_at, started_at, and a
heartbeat_timestamp refreshed every TTL). Agents never follow it; the API's agents
resource lists it, alive while the chassis record exists. The API writes an agent's
admin_state_up and description there (and admin_state_up into the live chassis record,
which other agents follow); the agent adopts them whenever it writes its records.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from wyvern.model.keys import chassis_key, registry_key
from wyvern.nb.store import Compare, KeyValue, Put, Store, StoreError

LOG = logging.getLogger(__name__)


def iso(ts: float) -> str:
    """Neutron's timestamp format: `2024-01-31 12:00:00` (UTC, no zone)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class ChassisInfo:
    name: str
    tunnel_ip: str
    hostname: str = field(default_factory=socket.gethostname)
    encaps: tuple[str, ...] = ("geneve", "vxlan")
    bridge_mappings: dict[str, str] = field(default_factory=dict)
    bridge: str = "br-int"
    gateway_priority: int = 0  # 0: not a gateway chassis (wyvern.apps.gateway)
    availability_zone: str = "nova"  # (Neutron's default zone)
    # The underlay (wyvern.southbound.tunnels): the NIC put into `underlay_bridge`, which
    # gets tunnel_ip/tunnel_prefixlen. Empty: the underlay is set up by someone else.
    underlay_interface: str = ""
    underlay_bridge: str = "br-phy"
    tunnel_prefixlen: int = 24


class ChassisRegistration:
    """Puts the chassis record with a lease, then keeps the lease alive from a thread of
    its own."""

    def __init__(self, store: Store, info: ChassisInfo, ttl: float = 30.0) -> None:
        self.store = store
        self.info = info
        self.ttl = ttl
        self.started_at = time.time()
        self.created_at = self.started_at
        self.lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0  # keepalives that reached the store
        self.registrations = 0  # leases granted (1 unless the store let one expire)
        self.last_beat = float("-inf")  # time.monotonic() of the last keepalive
        self._last_registry = float("-inf")
        # Set through the API (`openstack network agent set --disable`), kept in the
        # registry record: a disabled gateway chassis takes no router gateway.
        self.admin_state_up = True
        self.description: str | None = None

    @property
    def key(self) -> str:
        return chassis_key(self.info.name)

    def record(self) -> dict[str, Any]:
        """What other chassis follow: nothing in it changes while the agent runs."""
        i = self.info
        return {
            "name": i.name,
            "hostname": i.hostname,
            "tunnel_ip": i.tunnel_ip,
            "encaps": list(i.encaps),
            "bridge_mappings": dict(i.bridge_mappings),
            "bridge": i.bridge,
            "gateway_priority": i.gateway_priority,
            "availability_zone": i.availability_zone,
            "admin_state_up": self.admin_state_up,
            "lease_ttl": self.ttl,
        }

    def registry_record(self, now: float) -> dict[str, Any]:
        return {
            **self.record(),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "heartbeat_timestamp": iso(now),
            "description": self.description,
        }

    def register(self) -> None:
        """Grant a lease and put the record with it (keeping the registry's first
        created_at, and what the API set: admin_state_up, description)."""
        self._adopt(self.store.get(registry_key(self.info.name)))
        self._put_with_new_lease()
        LOG.info("chassis %s: registered (tunnel %s)", self.info.name, self.info.tunnel_ip)

    def _adopt(self, kv: KeyValue | None) -> None:
        """Take the API's fields from the registry record KV; none (never registered, or
        deleted through the API): a new agent, enabled, created now (as Neutron's agent
        that reports after `openstack network agent delete`)."""
        old: Any = None
        if kv is not None:
            try:
                old = orjson.loads(kv.value)
            except orjson.JSONDecodeError:
                old = None
        if not isinstance(old, dict):
            if kv is None and self.registrations:
                self.created_at = time.time()
            self.admin_state_up, self.description = True, None
            return
        created = old.get("created_at")
        if isinstance(created, str):
            with contextlib.suppress(ValueError):
                self.created_at = (
                    datetime.strptime(created, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
                )
        self.admin_state_up = old.get("admin_state_up") is not False
        description = old.get("description")
        self.description = description if isinstance(description, str) else None

    def _put_with_new_lease(self) -> None:
        lease = self.store.grant(self.ttl)
        now = time.time()
        self.store.txn(
            [],
            [
                Put(self.key, orjson.dumps(self.record()), lease=lease),
                Put(registry_key(self.info.name), orjson.dumps(self.registry_record(now))),
            ],
        )
        self.lease = lease
        self.registrations += 1
        self.last_beat = time.monotonic()
        self._last_registry = self.last_beat

    def heartbeat(self) -> None:
        """Keep the lease alive; if the store let it expire, register again. The registry's
        heartbeat_timestamp is rewritten once per TTL (nobody follows it), guarded by its
        revision so an API change made meanwhile is not overwritten (it is adopted, and
        put into the chassis record too)."""
        if not self.store.keepalive(self.lease):
            LOG.warning("chassis %s: lease expired in the store; registering again", self.info.name)
            self._adopt(self.store.get(registry_key(self.info.name)))
            self._put_with_new_lease()
            return
        self.beats += 1
        self.last_beat = now = time.monotonic()
        if now - self._last_registry >= self.ttl:
            key = registry_key(self.info.name)
            kv = self.store.get(key)
            self._adopt(kv)
            guard = Compare(key, "mod", "==", kv.mod_revision if kv is not None else 0)
            puts = [Put(key, orjson.dumps(self.registry_record(time.time())))]
            if self._followed_state() != self.admin_state_up:
                puts.append(Put(self.key, orjson.dumps(self.record()), lease=self.lease))
            if self.store.txn([guard], puts).succeeded:
                self._last_registry = now

    def _followed_state(self) -> bool | None:
        """admin_state_up as our chassis record (what other agents follow) holds it."""
        kv = self.store.get(self.key)
        if kv is None:
            return None
        try:
            return orjson.loads(kv.value).get("admin_state_up") is not False
        except (orjson.JSONDecodeError, AttributeError):
            return None

    def start(self) -> None:
        self.register()
        self._thread = threading.Thread(
            target=self._run, name=f"chassis-{self.info.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.heartbeat()
            except StoreError as exc:
                LOG.warning("chassis %s: keepalive failed: %s", self.info.name, exc)

    def stop(self, *, expire: bool = True) -> None:
        """expire: revoke the lease, so other chassis drop this one now (else it stays
        until the lease runs out, as after a crash)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if expire and self.lease:
            try:
                self.store.revoke(self.lease)
            except StoreError as exc:
                LOG.warning("chassis %s: could not revoke its lease: %s", self.info.name, exc)
