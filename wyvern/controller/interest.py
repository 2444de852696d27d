"""Selective distribution: which parts of the store one chassis follows.

An agent does not follow the whole topology. It always follows the chassis list and the
ports requested on its own host, and otherwise only what its ports need:

- the networks of its local ports (plugged here, or requested here by binding:host_id),
- the routers with a port (interface or gateway) on those networks, and every network
  those routers reach, transitively (as OVN's local datapaths: a distributed router
  routes on the sending chassis, so it needs each network the packet may leave into, and
  the routers beyond it), and for those with a gateway its status key (which chassis
  hosts it: wyvern.apps.gateway keeps it there on a tie of priorities),
- the security groups of its local ports and the remote groups their rules name (each
  group's record and rules), and the address groups those rules name,
- the QoS policies of its local ports and of their networks (one record each).

A network is four prefixes: the record, its subnets, its ports and their binding
statuses (the store keeps subnets, ports and statuses under their network's id;
wyvern.model.keys), so a port's status wakes only the chassis that may send to it.
Routers, groups and address groups are followed one record each. Remote-group members
are seen in the networks followed, which hold every member a local port can exchange
packets with.

The first port of a network on the chassis starts following it (list, then watch);
removing the last stops it and its objects leave the view as deletions, so their flows
go. Each prefix is a `Sync` follower with its own watch and its own Gap handling, so a
compaction resyncs only the prefixes that lost history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

from wyvern.controller.sync import Sync
from wyvern.model.keys import (
    CHASSIS_PREFIX,
    METERING_LABELS,
    address_group_prefixes,
    gateway_prefixes,
    group_prefixes,
    host_ports_prefix,
    index_key,
    network_prefixes,
    qos_policy_prefixes,
    router_prefixes,
)
from wyvern.model.view import Binding, Change
from wyvern.nb.store import Store, StoreError

LOG = logging.getLogger(__name__)

# (metering labels: few, and every router of their project may need them)
GLOBAL_PREFIXES = (CHASSIS_PREFIX, METERING_LABELS)
# Ports that attach a router to a network (their device_id is the router's id).
ROUTER_PORT_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:router_gateway",
        "network:router_interface_distributed",
        "network:ha_router_replicated_interface",
    }
)


@dataclass(frozen=True)
class Wanted:
    """What the local ports need now, by kind of followed object."""

    networks: frozenset[str] = frozenset()
    routers: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    address_groups: frozenset[str] = frozenset()
    gateways: frozenset[str] = frozenset()  # routers with a gateway (their status key)
    qos_policies: frozenset[str] = frozenset()  # of local ports and their networks


PREFIXES: dict[str, Callable[[str], tuple[str, ...]]] = {
    "networks": network_prefixes,
    "routers": router_prefixes,
    "gateways": gateway_prefixes,
    "groups": group_prefixes,
    "address_groups": address_group_prefixes,
    "qos_policies": qos_policy_prefixes,
}


def host_prefix(host: str) -> str:
    return host_ports_prefix(host)


class Interest:
    """Keeps a Sync's followers to what the chassis's local and requested ports need."""

    def __init__(self, store: Store, sync: Sync, host: str) -> None:
        self.store = store
        self.sync = sync
        self.host = host
        self.following = Wanted()
        self._port_network: dict[str, str] = {}  # local port id -> network id (index)
        self.unresolved: set[str] = set()  # local ports whose network is not known yet

    @staticmethod
    def base_prefixes(host: str) -> tuple[str, ...]:
        return (*GLOBAL_PREFIXES, host_prefix(host))

    def local_ports(self) -> set[str]:
        bound = {k[1] for k in self.sync.latest if k[0] == "binding"}
        return bound | set(self.sync.requested)

    def _network_of(self, port_id: str) -> str | None:
        port = self.sync.view.ports.get(port_id)
        if port is not None:
            return port.network_id
        known = self.sync.requested.get(port_id) or self._port_network.get(port_id)
        if known:
            return known
        try:
            got = self.store.get(index_key("ports", port_id))
        except StoreError as exc:
            LOG.warning("cannot look up port %s's network: %s", port_id, exc)
            return None
        if got is None:
            return None  # not in the store (yet): a later binding poll retries
        net = got.value.decode()
        self._port_network[port_id] = net
        return net

    def wanted(self) -> Wanted:
        """What the local ports need now (from what is followed so far: update() repeats
        until nothing new is found)."""
        view = self.sync.view
        local = self.local_ports()
        for gone in [p for p in self._port_network if p not in local]:
            del self._port_network[gone]
        roots: set[str] = set()
        self.unresolved = set()
        for pid in sorted(local):
            net = self._network_of(pid)
            if net:
                roots.add(net)
            else:
                self.unresolved.add(pid)
        # Router records as followed, including those the view still holds back because a
        # network they reach is not followed yet (that is what we are deciding).
        latest = self.sync.latest
        nets = set(roots)
        routers: set[str] = set()
        gateways: set[str] = set()
        todo = list(roots)
        while todo:  # through routers, transitively
            for pid in view.ports_by_network.get(todo.pop(), ()):
                port = view.ports[pid]
                if port.device_owner not in ROUTER_PORT_OWNERS or not port.device_id:
                    continue
                if port.device_id in routers:
                    continue
                routers.add(port.device_id)
                router = latest.get(("router", port.device_id))
                if router is None:
                    continue  # not followed yet: the next round
                reach = {i.network_id for i in router.interfaces}
                if router.gateway_network_id:
                    reach.add(router.gateway_network_id)
                    gateways.add(router.id)
                for n in reach - nets:
                    nets.add(n)
                    todo.append(n)
        groups: set[str] = set()
        policies: set[str] = set()
        for pid in local:
            found = view.ports.get(pid)
            if found is not None:
                groups.update(found.security_group_ids)
                network = view.networks.get(found.network_id)
                for policy in (found.qos_policy_id, network.qos_policy_id if network else None):
                    if policy:
                        policies.add(policy)
        address_groups: set[str] = set()
        for g in list(groups):
            for rule in view.sg_rules(g):
                if rule.remote_group_id:
                    groups.add(rule.remote_group_id)
                if rule.remote_address_group_id:
                    address_groups.add(rule.remote_address_group_id)
        return Wanted(
            frozenset(nets),
            frozenset(routers),
            frozenset(groups),
            frozenset(address_groups),
            frozenset(gateways),
            frozenset(policies),
        )

    def update(self) -> list[Change]:
        """Follow what is now needed, stop following what no longer is (until stable: a
        newly followed network may bring routers to more networks, or a group rules that
        name more groups)."""
        changes: list[Change] = []
        for _ in range(16):
            want = self.wanted()
            have = self.following
            if want == have:
                break
            for f in fields(Wanted):
                new: frozenset[str] = getattr(want, f.name)
                old: frozenset[str] = getattr(have, f.name)
                for id_ in sorted(new - old):
                    for prefix in PREFIXES[f.name](id_):
                        changes += self.sync.follow(prefix)
            for f in fields(Wanted):
                new = getattr(want, f.name)
                old = getattr(have, f.name)
                for id_ in sorted(old - new):
                    for prefix in reversed(PREFIXES[f.name](id_)):  # children first
                        changes += self.sync.unfollow(prefix)
            LOG.info(
                "chassis %s: following %d networks (+%d -%d), %d routers, %d security "
                "groups, %d address groups",
                self.host,
                len(want.networks),
                len(want.networks - have.networks),
                len(have.networks - want.networks),
                len(want.routers),
                len(want.groups),
                len(want.address_groups),
            )
            self.following = want
        return changes

    @staticmethod
    def touches(changes: list[Change]) -> bool:
        """Whether changes may move what is needed (bindings, ports, routers, rules)."""
        kinds = ("binding", "router", "port", "security_group_rule", "network")
        return any(c.kind in kinds for c in changes)


class FakeBindings:
    """A fake chassis's "OVS": every port requested on its host (binding:host_id) is
    plugged, with a made-up ofport kept for the port's life. Same poll() contract as
    bindings.BindingMonitor: what changed since the last call."""

    def __init__(self, sync: Sync) -> None:
        self.sync = sync
        self.current: dict[str, Binding] = {}
        self._next_ofport = 1

    def poll(self) -> dict[str, Binding | None]:
        wanted = self.sync.requested
        out: dict[str, Binding | None] = {}
        for pid in [p for p in self.current if p not in wanted]:
            del self.current[pid]
            out[pid] = None
        for pid in wanted:
            if pid not in self.current:
                self.current[pid] = out[pid] = Binding(pid, self._next_ofport)
                self._next_ofport += 1
        return out
