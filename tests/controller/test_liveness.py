"""Chassis liveness and watch gaps, with fake chassis (no OVS) on every store backend.

A chassis whose agent dies stops beating: once its lease runs out the others drop every
flow that names its tunnel IP, and when it comes back they recompute only those. An
agent whose watch lost history (compaction while it was cut off) resyncs and ends with
exactly the flows a full recompute from a fresh view of the store gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import create, make_client
from tests.controller.test_interest import _active, _network, _recorded
from wyvern.controller.agent import Agent
from wyvern.controller.chassis import ChassisInfo
from wyvern.controller.engine import Engine, default_apps
from wyvern.controller.sync import Sync
from wyvern.model.view import LocalView
from wyvern.nb.store import Store

TTL = 1.5


def fake(store: Store, name: str, ip: str) -> Agent:
    return Agent(
        store,
        None,
        ChassisInfo(name, ip, hostname=name),
        lease_ttl=TTL,
        poll_interval=0.05,
        selective=True,
    )


@pytest.fixture
def agents(store: Store) -> Iterator[dict[str, Agent]]:
    running: dict[str, Agent] = {}
    try:
        for i, name in enumerate(("hv1", "hv2", "hv3")):
            running[name] = fake(store, name, f"192.0.2.{i + 1}")
            running[name].start()
        yield running
    finally:
        for agent in running.values():
            agent.stop()


def _vm(client: TestClient, net: dict[str, object], host: str) -> dict[str, object]:
    return create(client, "ports", network_id=net["id"], **{"binding:host_id": host})


def test_a_dead_chassis_is_dropped_and_comes_back_without_a_flood(
    store: Store, agents: dict[str, Agent]
) -> None:
    hv1, hv2 = agents["hv1"], agents["hv2"]
    ip3 = agents["hv3"].chassis.tunnel_ip
    with make_client(store) as client:
        net, _ = _network(client, "n", "10.1.0.0/24")
        ports = {h: _vm(client, net, h) for h in agents}
        for h, p in ports.items():
            assert agents[h].wait_for(lambda p=p, h=h: _active(store, p, h))
        assert hv1.wait_for(lambda: any(ip3 in line for line in _recorded(hv1)))
        assert hv1.wait_for(lambda: any("192.0.2.2" in line for line in _recorded(hv1)))
        before = set(_recorded(hv1))

        # hv3's agent dies (no clean stop): once its lease runs out, nobody tunnels to it.
        agents["hv3"].stop(expire=False)
        for agent in (hv1, hv2):
            assert agent.wait_for(lambda a=agent: not any(ip3 in x for x in _recorded(a)))
            assert "hv3" not in agent.view.chassis
        # hv1 and hv2 still reach each other (unicast and flood).
        assert any("192.0.2.2" in line for line in _recorded(hv1))
        assert any("192.0.2.1" in line for line in _recorded(hv2))
        during = set(_recorded(hv1))
        recomputes = hv1.engine.recomputes

        # The agent comes back (a new process, same chassis): hv1 recomputes only what
        # names hv3 (its port's tunnel flow and the network's flood) and ends as before.
        agents["hv3"] = fake(store, "hv3", ip3)
        agents["hv3"].start()
        assert hv1.wait_for(lambda: set(_recorded(hv1)) == before)
        assert hv1.engine.recomputes == recomputes  # no full recompute
        added, removed = before - during, during - before
        assert added and all(ip3 in line for line in added), added
        assert len(removed) <= 1, removed  # the flood flow without hv3's copy


def _desired_from_scratch(store: Store, agent: Agent) -> set[str]:
    """What a fresh agent on the same chassis computes: a new view of the store (the
    same prefixes, the same local bindings), every flow computed from scratch."""
    view = LocalView(chassis_name=agent.chassis.name)
    sync = Sync(store, view, [f.prefix for f in agent.sync.followers])
    sync.start()
    for port_id, binding in agent.view.bindings.items():
        sync.set_binding(port_id, binding)
    sync.close()
    engine = Engine(default_apps())
    engine.full(view)
    assert view.chassis == agent.view.chassis and view.ports == agent.view.ports
    return set(engine.render().lines())


def test_after_a_watch_gap_the_flows_equal_a_full_recompute(
    store: Store, agents: dict[str, Agent]
) -> None:
    hv1 = agents["hv1"]
    with make_client(store) as client:
        net, _ = _network(client, "n", "10.1.0.0/24")
        other, _ = _network(client, "m", "10.2.0.0/24")
        sg = create(client, "security-groups", name="g")
        keep = _vm(client, net, "hv1")
        gone = _vm(client, net, "hv2")
        _vm(client, other, "hv3")
        for p, h in ((keep, "hv1"), (gone, "hv2")):
            assert agents[h].wait_for(lambda p=p, h=h: _active(store, p, h))
        assert hv1.wait_for(lambda: "192.0.2.2" in "".join(_recorded(hv1)))

        # hv1 is frozen and cut off from the store while history moves on and is
        # compacted away (its loop stops; its watches close).
        hv1._stop.set()
        assert hv1._thread is not None
        hv1._thread.join(10)
        hv1.sync.close()
        resyncs = hv1.sync.stats.resyncs
        client.delete(f"/v2.0/ports/{gone['id']}")
        added = _vm(client, net, "hv3")
        moved = create(client, "ports", network_id=other["id"], security_groups=[sg["id"]])
        create(
            client,
            "security-group-rules",
            security_group_id=sg["id"],
            direction="ingress",
            protocol="tcp",
            remote_group_id=sg["id"],
        )
        temp = _vm(client, net, "hv2")
        client.delete(f"/v2.0/ports/{temp['id']}")
        assert agents["hv3"].wait_for(lambda: _active(store, added, "hv3"))
        client.put(
            f"/v2.0/ports/{moved['id']}", json={"port": {"binding:host_id": "hv1"}}
        ).raise_for_status()
        head = store.revision()
        store.compact(head)

        # Thawed: the loop runs again, hits the gap, resyncs.
        for _ in range(400):
            hv1.step(0.05)
            if hv1.sync.revision >= head and _active(store, moved, "hv1"):
                break
        hv1.step(0.05)
        assert hv1.sync.stats.resyncs > resyncs
        assert _active(store, moved, "hv1")
        assert set(_recorded(hv1)) == _desired_from_scratch(store, hv1)
        assert any("192.0.2.3" in line for line in _recorded(hv1))
        assert not any(str(gone["mac_address"]) in line for line in _recorded(hv1))


def test_without_bfd_a_chassis_outlives_its_lease_by_the_grace_period(store: Store) -> None:
    """A fake chassis has no BFD session: with liveness_grace, one whose lease ran out
    stays (its flows too) for that long, then goes. (With real chassis and BFD:
    tests/e2e/test_chassis_outage.py.)"""
    grace = 3.0
    keeper = Agent(
        store,
        None,
        ChassisInfo("k1", "192.0.2.1", hostname="k1"),
        lease_ttl=TTL,
        poll_interval=0.05,
        selective=True,
        liveness_grace=grace,
    )
    other = fake(store, "k2", "192.0.2.2")
    keeper.start()
    other.start()
    try:
        # (the client stays open throughout: leaving it closes the store, and with it the
        # agents' watches)
        with make_client(store) as client:
            net, _ = _network(client, "n", "10.1.0.0/24")
            ports = {h: (_vm(client, net, h), a) for h, a in (("k1", keeper), ("k2", other))}
            for h, (p, a) in ports.items():
                assert a.wait_for(lambda p=p, h=h: _active(store, p, h))
            assert keeper.wait_for(lambda: any("192.0.2.2" in x for x in _recorded(keeper))), (
                keeper.view.chassis,
                keeper.view.port_chassis,
            )
            flows = set(_recorded(keeper))

            other.stop(expire=False)  # dies: its lease runs out, the store deletes its record
            assert keeper.wait_for(lambda: "k2" in keeper.sync.lease_gone, timeout=15)
            gone_at = time.monotonic()
            assert set(_recorded(keeper)) == flows  # kept, flows and all
            assert keeper.wait_for(lambda: "k2" not in keeper.view.chassis, timeout=2 * grace)
            assert time.monotonic() - gone_at >= grace - 0.5
            assert not any("192.0.2.2" in x for x in _recorded(keeper))
    finally:
        keeper.stop()
        other.stop()
