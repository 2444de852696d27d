"""Which remote chassis are alive: the store's lease, and BFD over the underlay.

A chassis record lives on its agent's store lease (chassis.py), but a lease is control
plane: it also runs out when that agent is merely cut off from the store, or when etcd
hangs past the TTL and revokes every lease on resume. Dropping the chassis then would
turn a store outage into a dataplane outage. So a record deleted by the store is only a
question: the agent asks here, and keeps the chassis in its view while BFD to its tunnel
IP says the path forwards (southbound.tunnels.BfdSessions: the remote OVS itself
answers, with or without its agent). It drops the chassis once BFD is down too, or, with
no BFD session to it (no encaps, no switch), once `grace` seconds have passed.

Apps never see any of this: a chassis is in the view or not (docs/architecture.md:
chassis liveness).
"""

from __future__ import annotations

import logging
import time

from wyvern.model.view import LocalView
from wyvern.southbound.tunnels import BFD_DST_PORTS, BfdSessions

LOG = logging.getLogger(__name__)
CHECK_EVERY = 0.25  # seconds between BFD reads while some lease is gone


class ChassisLiveness:
    def __init__(
        self,
        view: LocalView,
        own_encaps: tuple[str, ...],
        bfd: BfdSessions | None,
        grace: float = 0.0,
    ) -> None:
        self.view = view
        self.own_encaps = own_encaps
        self.bfd = bfd
        self.grace = grace
        self.gone_since: dict[str, float] = {}  # name -> when its lease was seen gone
        self.next_check = 0.0

    def peers(self) -> dict[str, str]:
        """Remote tunnel IP -> the encap its BFD session uses (one both chassis have)."""
        out: dict[str, str] = {}
        for c in self.view.chassis.values():
            if c.name == self.view.chassis_name or not c.tunnel_ip:
                continue
            shared = [e for e in self.own_encaps if e in c.encaps and e in BFD_DST_PORTS]
            if shared and not c.tunnel_ip.startswith("127."):
                out[c.tunnel_ip] = shared[0]
        return out

    def update_sessions(self) -> None:
        """One BFD session per chassis in the view (held ones included); fast ones where
        either end is a gateway chassis (its failover waits for BFD)."""
        if self.bfd is not None:
            self.bfd.ensure(self.peers(), self.fast_peers())

    def fast_peers(self) -> frozenset[str]:
        me = self.view.chassis.get(self.view.chassis_name)
        mine = me is not None and me.gateway_priority > 0
        return frozenset(
            c.tunnel_ip
            for c in self.view.chassis.values()
            if c.name != self.view.chassis_name and (mine or c.gateway_priority > 0)
        )

    def gateway_peers(self) -> dict[str, bool | None]:
        """Other gateway chassis -> whether BFD says their dataplane forwards (None: no
        session to say)."""
        out: dict[str, bool | None] = {}
        for c in self.view.chassis.values():
            if c.name == self.view.chassis_name or c.gateway_priority <= 0:
                continue
            out[c.name] = self.bfd.forwarding(c.tunnel_ip, 0.05) if self.bfd else None
        return out

    def keep(self, name: str) -> bool:
        """The store deleted NAME's record: keep it in the view?"""
        self.gone_since[name] = time.monotonic()
        alive = self.alive(name)
        LOG.warning(
            "chassis %s: its lease ran out in the store; %s",
            name,
            "its dataplane answers, kept" if alive else "dropped",
        )
        if not alive:
            self.gone_since.pop(name, None)
        return alive

    def alive(self, name: str) -> bool:
        chassis = self.view.chassis.get(name)
        if chassis is None:
            return False
        if self.bfd is not None:
            forwarding = self.bfd.forwarding(chassis.tunnel_ip)
            if forwarding is not None:
                return forwarding
        return time.monotonic() - self.gone_since.get(name, time.monotonic()) < self.grace

    def dead(self, lease_gone: list[str]) -> list[str]:
        """Of the chassis whose lease is gone, those to drop now (checked every
        CHECK_EVERY seconds)."""
        now = time.monotonic()
        if now < self.next_check:
            return []
        self.next_check = now + CHECK_EVERY
        gone = [n for n in lease_gone if not self.alive(n)]
        for name in gone:
            LOG.warning("chassis %s: lease gone and its dataplane silent: dropped", name)
            self.gone_since.pop(name, None)
        for name in [n for n in self.gone_since if n not in lease_gone]:
            del self.gone_since[name]  # (its agent put the record back)
        return gone
