"""Selective distribution: which parts of the store one chassis follows.

An agent does not follow the whole topology. It always follows the small, global
prefixes (chassis, routers, security groups, address groups and the ports requested on
its own host), and per network only what its ports need:

- the networks of its local ports (plugged here, or requested here by binding:host_id),
- and every network reachable from those through routers (transitively, as OVN's local
  datapaths: a distributed router routes on the sending chassis, so it needs each
  network the packet may leave into, and the routers beyond it),

each as four prefixes: the network record, its subnets, its ports and their binding
statuses (the store keeps subnets, ports and statuses under their network's id;
wyvern/api/repo.py), so a port's status wakes only the chassis that may send to it.
Security group rules are followed per group, for the groups of local ports and the remote
groups their rules name. Remote-group members are seen in the networks followed, which
hold every member a local port can exchange packets with.

The first port of a network on the chassis starts following it (list, then watch);
removing the last stops it and its objects leave the view as deletions, so their flows
go. Each prefix is a `Sync` follower with its own watch and its own Gap handling, so a
compaction resyncs only the prefixes that lost history.
"""

from __future__ import annotations

import logging

from wyvern.api.repo import ROOT, host_port_key, index_key
from wyvern.controller.sync import Sync, status_prefix
from wyvern.controller.view import Binding, Change
from wyvern.nb.store import Store, StoreError

LOG = logging.getLogger(__name__)

GLOBAL_PREFIXES = (
    f"{ROOT}chassis/",
    f"{ROOT}routers/",
    f"{ROOT}security_groups/",
    f"{ROOT}address_groups/",
)


def network_prefixes(network_id: str) -> tuple[str, ...]:
    return (
        f"{ROOT}networks/{network_id}",  # an id is a fixed-length UUID: prefix == key
        f"{ROOT}subnets/{network_id}/",
        f"{ROOT}ports/{network_id}/",
        status_prefix(network_id),
    )


def rules_prefix(sg_id: str) -> str:
    return f"{ROOT}security_group_rules/{sg_id}/"


def host_prefix(host: str) -> str:
    return host_port_key(host, "")


class Interest:
    """Keeps a Sync's followers to what the chassis's local and requested ports need."""

    def __init__(self, store: Store, sync: Sync, host: str) -> None:
        self.store = store
        self.sync = sync
        self.host = host
        self.networks: set[str] = set()
        self.groups: set[str] = set()
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

    def wanted(self) -> tuple[set[str], set[str]]:
        """(networks, security groups) the local ports need now."""
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
        # Routers as followed, including those the view still holds back because a
        # network they reach is not followed yet (that is what we are deciding).
        reach_by_net: dict[str, set[str]] = {}
        for (kind, _), router in self.sync.latest.items():
            if kind != "router":
                continue
            reach = {i.network_id for i in router.interfaces}
            if router.gateway_network_id:
                reach.add(router.gateway_network_id)
            for n in reach:
                reach_by_net.setdefault(n, set()).update(reach)
        nets = set(roots)
        todo = list(roots)
        while todo:  # through routers, transitively
            for n in reach_by_net.get(todo.pop(), set()) - nets:
                nets.add(n)
                todo.append(n)
        groups: set[str] = set()
        for pid in local:
            port = view.ports.get(pid)
            if port is not None:
                groups.update(port.security_group_ids)
        for g in list(groups):
            for rule in view.sg_rules(g):
                if rule.remote_group_id:
                    groups.add(rule.remote_group_id)
        return nets, groups

    def update(self) -> list[Change]:
        """Follow what is now needed, stop following what no longer is (until stable: a
        newly followed network may bring routers to more networks, or rules to more
        groups)."""
        changes: list[Change] = []
        for _ in range(16):
            nets, groups = self.wanted()
            if nets == self.networks and groups == self.groups:
                break
            for n in sorted(nets - self.networks):
                for prefix in network_prefixes(n):
                    changes += self.sync.follow(prefix)
            for g in sorted(groups - self.groups):
                changes += self.sync.follow(rules_prefix(g))
            for n in sorted(self.networks - nets):
                for prefix in reversed(network_prefixes(n)):  # statuses, ports, ...
                    changes += self.sync.unfollow(prefix)
            for g in sorted(self.groups - groups):
                changes += self.sync.unfollow(rules_prefix(g))
            if self.networks != nets or self.groups != groups:
                LOG.info(
                    "chassis %s: following %d networks (+%d -%d), %d security groups",
                    self.host,
                    len(nets),
                    len(nets - self.networks),
                    len(self.networks - nets),
                    len(groups),
                )
            self.networks, self.groups = nets, groups
        return changes

    @staticmethod
    def touches(changes: list[Change]) -> bool:
        """Whether changes may move what is needed (bindings, ports, routers, rules)."""
        return any(c.kind in ("binding", "router", "port", "security_group_rule") for c in changes)


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
