"""This chassis in the store: /wyvern/chassis/<name>, with a lease kept alive by heartbeats.

The record carries what other chassis and the API need (hostname, tunnel IP, encap types,
bridge mappings) and `expires_at`, an epoch timestamp refreshed every TTL/3: the API's
agents resource reports `alive = expires_at > now`. The agent is the only writer of its
own chassis key; a clean stop marks it expired rather than deleting it, so operators
still see the chassis (Neutron keeps dead agents listed too).

Other agents take a chassis whose `expires_at` has passed out of their view (Sync.expire),
which removes its tunnels and remote flows; its next heartbeat brings it back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from wyvern.api.repo import ROOT
from wyvern.nb.store import Put, Store, StoreError

LOG = logging.getLogger(__name__)
CHASSIS_PREFIX = f"{ROOT}chassis/"


def chassis_key(name: str) -> str:
    return f"{CHASSIS_PREFIX}{name}"


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
    # The underlay (wyvern.southbound.tunnels): the NIC put into `underlay_bridge`, which
    # gets tunnel_ip/tunnel_prefixlen. Empty: the underlay is set up by someone else.
    underlay_interface: str = ""
    underlay_bridge: str = "br-phy"
    tunnel_prefixlen: int = 24


class ChassisRegistration:
    """Writes the chassis record, then refreshes its lease from a thread of its own."""

    def __init__(self, store: Store, info: ChassisInfo, ttl: float = 30.0) -> None:
        self.store = store
        self.info = info
        self.ttl = ttl
        self.started_at = time.time()
        self.created_at = self.started_at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0
        self.last_beat = float("-inf")  # time.monotonic() of the last heartbeat written

    @property
    def key(self) -> str:
        return chassis_key(self.info.name)

    def record(self, now: float, expires_at: float) -> dict[str, Any]:
        i = self.info
        return {
            "name": i.name,
            "hostname": i.hostname,
            "tunnel_ip": i.tunnel_ip,
            "encaps": list(i.encaps),
            "bridge_mappings": dict(i.bridge_mappings),
            "bridge": i.bridge,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "heartbeat_timestamp": iso(now),
            "heartbeat_at": now,
            "expires_at": expires_at,
            "lease_ttl": self.ttl,
        }

    def register(self) -> None:
        """Write the record now (keeping the first registration's created_at)."""
        kv = self.store.get(self.key)
        if kv is not None:
            try:
                old = orjson.loads(kv.value)
                created = old.get("created_at")
                if isinstance(created, str):
                    self.created_at = (
                        datetime.strptime(created, "%Y-%m-%d %H:%M:%S")
                        .replace(tzinfo=UTC)
                        .timestamp()
                    )
            except (orjson.JSONDecodeError, ValueError):
                pass
        self.heartbeat()
        LOG.info("chassis %s: registered (tunnel %s)", self.info.name, self.info.tunnel_ip)

    def heartbeat(self, expires_at: float | None = None) -> None:
        now = time.time()
        record = self.record(now, now + self.ttl if expires_at is None else expires_at)
        self.store.txn([], [Put(self.key, orjson.dumps(record))])
        self.beats += 1
        self.last_beat = time.monotonic()

    def in_touch(self) -> bool:
        """Our own heartbeats reach the store: only then may we judge others' leases (an
        agent cut off from the store, or frozen, must not take every other chassis down
        because it stopped hearing their heartbeats)."""
        return time.monotonic() - self.last_beat < self.ttl

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
                LOG.warning("chassis %s: heartbeat failed: %s", self.info.name, exc)

    def stop(self, *, expire: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if expire:
            try:
                self.heartbeat(expires_at=time.time())
            except StoreError as exc:
                LOG.warning("chassis %s: could not mark it stopped: %s", self.info.name, exc)
