"""The sync layer: API objects in the store -> the local view, in order, with nothing lost.

Objects are written either through the real API (TestClient over the same store) or as
raw keys, to force what the API never does on its own (a port before its network).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tests.api.conftest import create, make_client
from wyvern.controller.sync import Sync, kinds_of, wait_caught_up
from wyvern.model.keys import gateway_status_key, status_key
from wyvern.model.view import Binding, GatewayHost, LocalView
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Delete, Put, Store


def put(store: Store, key: str, obj: dict[str, Any]) -> int:
    return store.txn([], [Put(key, orjson.dumps(obj))]).revision


def delete(store: Store, key: str) -> int:
    return store.txn([], [], [Delete(key)]).revision


def net(id_: str, key: int = 1) -> dict[str, Any]:
    return {"id": id_, "_key": key, "mtu": 1450}


def subnet(id_: str, net_id: str, cidr: str = "10.0.0.0/24") -> dict[str, Any]:
    return {"id": id_, "network_id": net_id, "cidr": cidr, "ip_version": 4}


def port(id_: str, net_id: str, key: int = 1, fixed: list[tuple[str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "id": id_,
        "network_id": net_id,
        "_key": key,
        "mac_address": f"fa:16:3e:00:00:{key:02x}",
        "fixed_ips": [{"subnet_id": s, "ip_address": ip} for s, ip in fixed],
    }


def test_follows_what_the_api_writes(store: Store) -> None:
    with make_client(store) as client:
        view = LocalView()
        sync = Sync(store, view)
        n = create(client, "networks", name="n")
        s = create(client, "subnets", network_id=n["id"], cidr="10.1.0.0/24", ip_version=4)
        p1 = create(client, "ports", network_id=n["id"])
        changes = sync.start()
        assert {(c.kind, c.id) for c in changes} >= {
            ("network", n["id"]),
            ("subnet", s["id"]),
            ("port", p1["id"]),
        }
        assert view.ports[p1["id"]].ips == (p1["fixed_ips"][0]["ip_address"],)
        assert view.network_subnets(n["id"])[0].cidr == "10.1.0.0/24"
        assert sync.held() == []

        p2 = create(client, "ports", network_id=n["id"], name="second")
        changes = wait_caught_up(sync, store.revision())
        assert ("port", p2["id"], True) in kinds_of(changes)
        assert view.ports[p2["id"]].name == "second"
        assert sync.mod_revision[("port", p2["id"])] > 0

        resp = client.delete(f"/v2.0/ports/{p1['id']}")
        assert resp.status_code == 204
        changes = wait_caught_up(sync, store.revision())
        assert ("port", p1["id"], False) in kinds_of(changes)
        assert p1["id"] not in view.ports
        assert p1["id"] not in view.ports_by_network[n["id"]]
        sync.close()


def test_a_port_before_its_network_waits_then_follows_it(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view)
    sync.start()
    put(store, "/wyvern/ports/n1/p1", port("p1", "n1", 1, [("s1", "10.0.0.5")]))
    put(store, "/wyvern/subnets/n1/s1", subnet("s1", "n1"))
    changes = wait_caught_up(sync, store.revision())
    assert changes == []  # neither may be seen without the network
    assert sync.held() == [("port", "p1"), ("subnet", "s1")]
    assert view.ports == {} and view.subnets == {}

    put(store, "/wyvern/networks/n1", net("n1"))
    changes = wait_caught_up(sync, store.revision())
    # Dependency order: the network, then its subnet, then the port that uses both.
    assert kinds_of(changes) == [
        ("network", "n1", True),
        ("subnet", "s1", True),
        ("port", "p1", True),
    ]
    assert sync.held() == []
    assert view.network_ports("n1")[0].id == "p1"


def test_a_binding_for_an_unknown_port_waits_for_the_port(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view)
    sync.start()
    assert sync.set_binding("p1", Binding("p1", 7)) == []
    assert view.bindings == {}
    put(store, "/wyvern/networks/n1", net("n1"))
    put(store, "/wyvern/ports/n1/p1", port("p1", "n1"))
    changes = wait_caught_up(sync, store.revision())
    assert kinds_of(changes)[-1] == ("binding", "p1", True)
    assert view.bindings["p1"].ofport == 7
    assert kinds_of(sync.set_binding("p1", None)) == [("binding", "p1", False)]


def test_deleting_a_referenced_object_removes_its_dependents_first(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view)
    put(store, "/wyvern/networks/n1", net("n1"))
    put(store, "/wyvern/ports/n1/p1", port("p1", "n1"))
    sync.start()
    assert "p1" in view.ports

    delete(store, "/wyvern/networks/n1")
    changes = wait_caught_up(sync, store.revision())
    assert kinds_of(changes) == [("port", "p1", False), ("network", "n1", False)]
    assert sync.held() == [("port", "p1")]  # still in the store: waits for a network

    put(store, "/wyvern/networks/n1", net("n1", key=9))
    changes = wait_caught_up(sync, store.revision())
    assert kinds_of(changes) == [("network", "n1", True), ("port", "p1", True)]
    assert view.networks["n1"].key == 9

    delete(store, "/wyvern/ports/n1/p1")
    delete(store, "/wyvern/networks/n1")
    changes = wait_caught_up(sync, store.revision())
    assert kinds_of(changes) == [("port", "p1", False), ("network", "n1", False)]
    assert sync.latest == {} and sync.held() == []


def test_objects_being_deleted_count_as_gone(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view)
    put(store, "/wyvern/networks/n1", net("n1"))
    sync.start()
    put(store, "/wyvern/networks/n1", {**net("n1"), "_deleting": True})
    assert kinds_of(wait_caught_up(sync, store.revision())) == [("network", "n1", False)]


def test_a_gap_resyncs_the_prefix_and_emits_only_the_differences(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view)
    put(store, "/wyvern/networks/n1", net("n1"))
    put(store, "/wyvern/networks/n2", net("n2", 2))
    put(store, "/wyvern/ports/n1/keep", port("keep", "n1", 1))
    put(store, "/wyvern/ports/n1/gone", port("gone", "n1", 2))
    put(store, "/wyvern/ports/n1/edit", port("edit", "n1", 3))
    put(store, status_key("n1", "gone"), {"chassis": "c9", "status": "ACTIVE"})
    sync.start()
    sync.pump(0.05)  # the watch is open and caught up
    assert view.port_chassis == {"gone": "c9"}
    before = sync.stats.resyncs

    # The watcher is paused (its watch closed: etcd's would stream events in the
    # background) while history moves on and is compacted.
    sync.close()
    delete(store, "/wyvern/ports/n1/gone")
    delete(store, status_key("n1", "gone"))
    put(store, "/wyvern/ports/n1/edit", {**port("edit", "n1", 3), "name": "edited"})
    put(store, "/wyvern/ports/n2/new", port("new", "n2", 1))
    put(store, "/wyvern/ports/n1/tmp", port("tmp", "n1", 4))
    delete(store, "/wyvern/ports/n1/tmp")  # created and deleted inside the gap: unseen
    head = store.revision()
    store.compact(head)

    changes = wait_caught_up(sync, head)
    assert sync.stats.resyncs == before + 1
    assert sorted(kinds_of(changes)) == [
        ("port", "edit", True),
        ("port", "gone", False),
        ("port", "new", True),
        ("port_chassis", "gone", False),  # its binding status went too
    ]
    assert view.ports["edit"].name == "edited"
    assert set(view.ports) == {"keep", "edit", "new"}
    assert view.port_chassis == {}
    assert sync.revision == head

    # And the watch goes on from there.
    put(store, "/wyvern/ports/n2/later", port("later", "n2", 2))
    assert kinds_of(wait_caught_up(sync, store.revision())) == [("port", "later", True)]
    sync.close()


def test_each_prefix_is_followed_and_resynced_on_its_own(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view, prefixes=["/wyvern/networks/", "/wyvern/ports/"])
    put(store, "/wyvern/ports/n1/p1", port("p1", "n1"))
    put(store, "/wyvern/networks/n1", net("n1"))
    changes = sync.start()
    assert kinds_of(changes) == [("network", "n1", True), ("port", "p1", True)]
    followers = {f.prefix: f for f in sync.followers}
    sync.pump(0.05)
    # Only the ports prefix falls behind a compaction: only it is listed again.
    put(store, "/wyvern/ports/n1/p2", port("p2", "n1", 2))
    put(store, "/wyvern/quotas/x", {})
    store.compact(store.revision())
    quiet = followers["/wyvern/networks/"]
    quiet.seen = quiet.revision = store.revision()  # as if it had seen it all
    sync.close()  # re-open watches from each follower's own revision
    changes = wait_caught_up(sync, store.revision())
    assert kinds_of(changes) == [("port", "p2", True)]
    assert followers["/wyvern/ports/"].resyncs == 2
    assert followers["/wyvern/networks/"].resyncs == 1


def test_statuses_of_other_chassis_say_where_ports_are() -> None:
    store = MemoryStore()
    view = LocalView()
    sync = Sync(store, view)
    sync.start()
    put(store, status_key("n1", "p1"), {"chassis": "c2", "status": "ACTIVE"})
    put(store, status_key("n1", "p2"), {"chassis": "c3", "status": "DOWN"})
    wait_caught_up(sync, store.revision())
    assert view.port_chassis == {"p1": "c2"}
    delete(store, status_key("n1", "p1"))
    wait_caught_up(sync, store.revision())
    assert view.port_chassis == {}


def test_gateway_statuses_say_which_chassis_hosts_each_gateway(store: Store) -> None:
    view = LocalView()
    sync = Sync(store, view, prefixes=[gateway_status_key(r) for r in ("r1", "r2", "r4")])
    sync.start()
    put(store, gateway_status_key("r1"), {"chassis": "c2", "status": "ACTIVE"})
    put(store, gateway_status_key("r2"), {"chassis": "c3", "status": "ACTIVE"})
    put(store, gateway_status_key("r3"), {"chassis": "c3", "status": "ACTIVE"})  # (unfollowed)
    store.txn([], [Put(gateway_status_key("r4"), b'"c1"')])  # (malformed: ignored)
    wait_caught_up(sync, store.revision())
    assert view.gateway_hosts == {"r1": GatewayHost("c2"), "r2": GatewayHost("c3")}
    put(store, gateway_status_key("r1"), {"chassis": "c3", "status": "ACTIVE"})
    delete(store, gateway_status_key("r2"))
    assert sorted(kinds_of(wait_caught_up(sync, store.revision()))) == [
        ("gateway_host", "r1", True),
        ("gateway_host", "r2", False),
    ]
    assert view.gateway_hosts == {"r1": GatewayHost("c3")}
    assert kinds_of(sync.unfollow(gateway_status_key("r1"))) == [("gateway_host", "r1", False)]
    assert view.gateway_hosts == {}
    sync.close()


def test_prefixes_can_be_followed_and_dropped_later(store: Store) -> None:
    """The seam for per-network distribution: follow a network's keys when needed."""
    view = LocalView()
    sync = Sync(store, view, prefixes=["/wyvern/networks/"])
    put(store, "/wyvern/networks/n1", net("n1"))
    put(store, "/wyvern/ports/n1/p1", port("p1", "n1"))
    put(store, "/wyvern/ports/n2/p2", port("p2", "n2"))
    sync.start()
    assert set(view.networks) == {"n1"} and view.ports == {}
    assert kinds_of(sync.follow("/wyvern/ports/n1/")) == [("port", "p1", True)]
    put(store, "/wyvern/ports/n1/p3", port("p3", "n1", 3))
    put(store, "/wyvern/ports/n2/p4", port("p4", "n2", 4))
    wait_caught_up(sync, store.revision())
    assert set(view.ports) == {"p1", "p3"}
    assert sorted(kinds_of(sync.unfollow("/wyvern/ports/n1/"))) == [
        ("port", "p1", False),
        ("port", "p3", False),
    ]
    assert view.ports == {} and set(view.networks) == {"n1"}
    sync.close()


def chassis_rec(name: str, ip: str) -> dict[str, Any]:
    return {"name": name, "tunnel_ip": ip, "encaps": ["geneve"]}


def test_a_chassis_whose_lease_ran_out_leaves_the_view_and_returns_when_put_again(
    store: Store,
) -> None:
    """Chassis records live on store leases: the store deletes one when its lease runs
    out (or is revoked), and every sync sees that as an ordinary delete. Our own record's
    deletion is ignored: our flows must not depend on the store's view of us."""
    view = LocalView(chassis_name="me")
    sync = Sync(store, view)
    leases = {n: store.grant(30) for n in ("me", "c2", "c3")}
    for i, n in enumerate(("me", "c2", "c3")):
        store.txn(
            [],
            [
                Put(
                    f"/wyvern/chassis/{n}",
                    orjson.dumps(chassis_rec(n, f"192.0.2.{i}")),
                    lease=leases[n],
                )
            ],
        )
    short = store.grant(1)
    store.txn(
        [], [Put("/wyvern/chassis/c4", orjson.dumps(chassis_rec("c4", "192.0.2.4")), lease=short)]
    )
    sync.start()
    assert set(view.chassis) == {"me", "c2", "c3", "c4"}

    # c4 stops keeping its lease alive: the store deletes it, the view follows.
    deadline = time.monotonic() + 10
    while "c4" in view.chassis and time.monotonic() < deadline:
        sync.pump(0.1)
    assert set(view.chassis) == {"me", "c2", "c3"}
    # A clean stop (revoke) takes c2 down at once; our own record's loss changes nothing.
    store.revoke(leases["c2"])
    store.revoke(leases["me"])
    assert kinds_of(wait_caught_up(sync, store.revision())) == [("chassis", "c2", False)]
    assert set(view.chassis) == {"me", "c3"}
    # c2's agent is back: a new lease, the record put again.
    back = store.grant(30)
    store.txn(
        [], [Put("/wyvern/chassis/c2", orjson.dumps(chassis_rec("c2", "192.0.2.1")), lease=back)]
    )
    assert kinds_of(wait_caught_up(sync, store.revision())) == [("chassis", "c2", True)]
    sync.close()
