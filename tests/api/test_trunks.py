"""Trunks (`trunk`, `trunk-details`) and forced subport delete: Neutron's contract, its
errors, and that a refused request stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type, make_client
from wyvern.model.keys import ROOT, status_key
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Put


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def c(store: MemoryStore) -> Iterator[TestClient]:
    with make_client(store) as client:
        yield client


def snapshot(store: MemoryStore) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.list(ROOT).items}


def trunk_body(parent: str, *subs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "trunk": {
            "port_id": parent,
            "sub_ports": [
                {"port_id": p, "segmentation_type": "vlan", "segmentation_id": v} for p, v in subs
            ],
            **extra,
        }
    }


def setup(c: TestClient, n: int = 2, **net: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A parent port on one network and N candidate subports, each on a network of its own."""
    parent_net = create(c, "networks", name="parent")
    parent = create(c, "ports", network_id=parent_net["id"])
    subs = []
    for i in range(n):
        net_i = create(c, "networks", name=f"sub{i}", **net)
        subs.append(create(c, "ports", network_id=net_i["id"]))
    return parent, subs


def report(store: MemoryStore, port: dict[str, Any], status: str, host: str = "h1") -> None:
    """What a port's agent writes (wyvern.controller.bindings)."""
    value = {"chassis": host, "host": host, "status": status, "installed_revision": 1, "ofport": 1}
    store.txn([], [Put(status_key(port["network_id"], port["id"]), orjson.dumps(value))], [])


def test_create_show_list_and_trunk_details(c: TestClient) -> None:
    parent, (s1, s2) = setup(c)
    resp = c.post(
        "/v2.0/trunks",
        json=trunk_body(parent["id"], (s1["id"], 100), (s2["id"], 200), name="t", tags=["x"]),
    )
    assert resp.status_code == 201, resp.text
    t = resp.json()["trunk"]
    assert t["name"] == "t" and t["tags"] == ["x"] and t["admin_state_up"] is True
    assert t["status"] == "DOWN" and t["port_id"] == parent["id"]
    assert t["sub_ports"] == [
        {"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 100},
        {"port_id": s2["id"], "segmentation_type": "vlan", "segmentation_id": 200},
    ]
    for key in ("id", "project_id", "tenant_id", "created_at", "updated_at", "revision_number"):
        assert key in t
    shown = c.get(f"/v2.0/trunks/{t['id']}").json()["trunk"]
    assert shown == t
    details = c.get(f"/v2.0/ports/{parent['id']}").json()["port"]["trunk_details"]
    assert details["trunk_id"] == t["id"]
    assert {
        (s["port_id"], s["segmentation_id"], s["mac_address"]) for s in details["sub_ports"]
    } == {
        (s1["id"], 100, s1["mac_address"]),
        (s2["id"], 200, s2["mac_address"]),
    }
    sub = c.get(f"/v2.0/ports/{s1['id']}").json()["port"]
    assert sub["device_owner"] == "trunk:subport" and "trunk_details" not in sub
    assert c.get(f"/v2.0/trunks/{t['id']}/get_subports").json() == {"sub_ports": t["sub_ports"]}
    # lists: filters, fields, tags, pagination
    other, _ = setup(c, 0)
    create_trunk(c, other["id"], name="u")
    assert [x["name"] for x in c.get("/v2.0/trunks?name=t").json()["trunks"]] == ["t"]
    assert [x["name"] for x in c.get("/v2.0/trunks?tags=x").json()["trunks"]] == ["t"]
    assert c.get(f"/v2.0/trunks?port_id={parent['id']}&fields=id").json()["trunks"] == [
        {"id": t["id"]}
    ]
    page = c.get("/v2.0/trunks?limit=1&sort_key=name&sort_dir=asc").json()
    assert [x["name"] for x in page["trunks"]] == ["t"] and page["trunks_links"]
    assert len(c.get("/v2.0/trunks?status=DOWN").json()["trunks"]) == 2
    assert error_type(c.get("/v2.0/trunks?bogus=1")) == "HTTPBadRequest"


def create_trunk(c: TestClient, parent: str, *subs: tuple[str, int], **extra: Any) -> Any:
    resp = c.post("/v2.0/trunks", json=trunk_body(parent, *subs, **extra))
    assert resp.status_code == 201, resp.text
    return resp.json()["trunk"]


def test_update_name_and_admin_state(c: TestClient) -> None:
    parent, _ = setup(c, 0)
    t = create_trunk(c, parent["id"])
    resp = c.put(f"/v2.0/trunks/{t['id']}", json={"trunk": {"name": "n", "admin_state_up": False}})
    assert resp.status_code == 200
    assert resp.json()["trunk"]["name"] == "n"
    bad = c.put(f"/v2.0/trunks/{t['id']}", json={"trunk": {"port_id": parent["id"]}})
    assert bad.status_code == 400
    # Neutron: a disabled trunk cannot be managed
    r = c.delete(f"/v2.0/trunks/{t['id']}")
    assert r.status_code == 409 and error_type(r) == "TrunkDisabled"


def test_add_and_remove_subports(c: TestClient, store: MemoryStore) -> None:
    parent, (s1, s2, s3) = setup(c, 3)
    t = create_trunk(c, parent["id"], (s1["id"], 10))
    add = {"sub_ports": [{"port_id": s2["id"], "segmentation_type": "vlan", "segmentation_id": 20}]}
    resp = c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add)
    assert resp.status_code == 200, resp.text
    assert [s["segmentation_id"] for s in resp.json()["sub_ports"]] == [10, 20]  # bare
    # the same VLAN again, on another port: DuplicateSubPort, nothing stored
    before = snapshot(store)
    dup = {"sub_ports": [{"port_id": s3["id"], "segmentation_type": "vlan", "segmentation_id": 20}]}
    r = c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=dup)
    assert r.status_code == 409 and error_type(r) == "DuplicateSubPort"
    # a port already a subport
    again = {
        "sub_ports": [{"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 30}]
    }
    r = c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=again)
    assert r.status_code == 409 and error_type(r) == "TrunkPortInUse"
    assert snapshot(store) == before
    rm = {"sub_ports": [{"port_id": s1["id"]}]}
    resp = c.put(f"/v2.0/trunks/{t['id']}/remove_subports", json=rm)
    assert resp.status_code == 200
    assert [s["port_id"] for s in resp.json()["sub_ports"]] == [s2["id"]]
    freed = c.get(f"/v2.0/ports/{s1['id']}").json()["port"]
    assert freed["device_owner"] == ""
    # removed: its VLAN is free again, and it is not on the trunk any more
    r = c.put(f"/v2.0/trunks/{t['id']}/remove_subports", json=rm)
    assert r.status_code == 404 and error_type(r) == "SubPortNotFound"
    reuse = {
        "sub_ports": [{"port_id": s3["id"], "segmentation_type": "vlan", "segmentation_id": 10}]
    }
    assert c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=reuse).status_code == 200


@pytest.mark.parametrize(
    ("subports", "fragment"),
    [
        ("nope", "is not a list"),
        (["x"], "is not a dict"),
        ([{"segmentation_id": 1}], "A valid port UUID must be specified"),
        ([{"port_id": "abc"}], "Invalid UUID for subport"),
        ([{"port_id": "SUB", "segmentation_type": "vlan"}], "missing segmentation information"),
        ([{"port_id": "SUB", "segmentation_type": "vlan", "segmentation_id": 0}], "not in range"),
        (
            [{"port_id": "SUB", "segmentation_type": "vlan", "segmentation_id": 4095}],
            "not in range",
        ),
        ([{"port_id": "SUB", "segmentation_type": "vxlan", "segmentation_id": 5}], "Unknown"),
        ([{"port_id": "SUB", "segmentation_type": "vlan", "segmentation_id": "x"}], "integer"),
        ([{"port_id": "SUB", "segmentation_type": "inherit"}], "Unknown segmentation_type"),
    ],
)
def test_bad_subports_are_400_and_store_nothing(
    c: TestClient, store: MemoryStore, subports: Any, fragment: str
) -> None:
    parent, (sub,) = setup(c, 1)
    if isinstance(subports, list):
        subports = [
            {k: (sub["id"] if v == "SUB" else v) for k, v in s.items()}
            if isinstance(s, dict)
            else s
            for s in subports
        ]
    before = snapshot(store)
    r = c.post("/v2.0/trunks", json={"trunk": {"port_id": parent["id"], "sub_ports": subports}})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["NeutronError"]["message"]
    assert snapshot(store) == before


def test_non_unique_subports(c: TestClient) -> None:
    parent, (s1, s2) = setup(c)
    same_port = [
        {"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 1},
        {"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 2},
    ]
    same_vlan = [
        {"port_id": s1["id"], "segmentation_type": "vlan", "segmentation_id": 1},
        {"port_id": s2["id"], "segmentation_type": "vlan", "segmentation_id": 1},
    ]
    for subs, fragment in ((same_port, "Non unique UUID"), (same_vlan, "is not unique")):
        r = c.post("/v2.0/trunks", json={"trunk": {"port_id": parent["id"], "sub_ports": subs}})
        assert r.status_code == 400 and fragment in r.text


def test_inherit_takes_the_networks_vlan(c: TestClient) -> None:
    parent, _ = setup(c, 0)
    net = create(
        c,
        "networks",
        **{
            "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
            "provider:segmentation_id": 321,
            "mtu": 1400,  # (not above the parent's overlay network's)
        },
    )
    sub = create(c, "ports", network_id=net["id"])
    body = {
        "trunk": {
            "port_id": parent["id"],
            "sub_ports": [{"port_id": sub["id"], "segmentation_type": "inherit"}],
        }
    }
    resp = c.post("/v2.0/trunks", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["trunk"]["sub_ports"] == [
        {"port_id": sub["id"], "segmentation_type": "vlan", "segmentation_id": 321}
    ]


def test_parent_rules(c: TestClient, store: MemoryStore) -> None:
    parent, (s1,) = setup(c, 1)
    t = create_trunk(c, parent["id"], (s1["id"], 5))
    # a parent already in a trunk, a subport as parent, the parent as its own subport
    r = c.post("/v2.0/trunks", json=trunk_body(parent["id"]))
    assert r.status_code == 409 and error_type(r) == "ParentPortInUse"
    r = c.post("/v2.0/trunks", json=trunk_body(s1["id"]))
    assert r.status_code == 409 and error_type(r) == "TrunkPortInUse"
    other, _ = setup(c, 0)
    r = c.post("/v2.0/trunks", json=trunk_body(other["id"], (other["id"], 7)))
    assert r.status_code == 409 and error_type(r) == "ParentPortInUse"
    r = c.post("/v2.0/trunks", json=trunk_body(other["id"], (parent["id"], 7)))
    assert r.status_code == 409 and error_type(r) == "ParentPortInUse"
    # a bound parent can be neither trunked nor untrunked
    bound, _ = setup(c, 0)
    assert (
        c.put(f"/v2.0/ports/{bound['id']}", json={"port": {"binding:host_id": "h1"}}).status_code
        == 200
    )
    r = c.post("/v2.0/trunks", json=trunk_body(bound["id"]))
    assert r.status_code == 409 and error_type(r) == "ParentPortInUse"
    report(store, parent, "ACTIVE")  # its agent bound it
    r = c.delete(f"/v2.0/trunks/{t['id']}")
    assert r.status_code == 409 and error_type(r) == "TrunkInUse"
    # a port with a device is not a subport (Neutron's PortInUse)
    net = create(c, "networks")
    used = create(c, "ports", network_id=net["id"], device_id="vm-1")
    r = c.post("/v2.0/trunks", json=trunk_body(other["id"], (used["id"], 9)))
    assert r.status_code == 409 and error_type(r) == "PortInUse"
    # unknown ports
    missing = "00000000-0000-4000-8000-000000000001"
    r = c.post("/v2.0/trunks", json=trunk_body(missing))
    assert r.status_code == 404 and error_type(r) == "PortNotFound"
    r = c.post("/v2.0/trunks", json=trunk_body(other["id"], (missing, 9)))
    assert r.status_code == 404 and error_type(r) == "PortNotFound"


def test_subport_mtu_above_the_parents(c: TestClient) -> None:
    small = create(c, "networks", mtu=1300)
    parent = create(c, "ports", network_id=small["id"])
    big = create(c, "networks", mtu=1400)
    sub = create(c, "ports", network_id=big["id"])
    r = c.post("/v2.0/trunks", json=trunk_body(parent["id"], (sub["id"], 3)))
    assert r.status_code == 409 and error_type(r) == "SubPortMtuGreaterThanTrunkPortMtu"


def test_delete_frees_everything(c: TestClient, store: MemoryStore) -> None:
    before = snapshot(store)
    parent, (s1,) = setup(c, 1)
    ports_only = snapshot(store)
    t = create_trunk(c, parent["id"], (s1["id"], 5))
    assert c.delete(f"/v2.0/trunks/{t['id']}").status_code == 204
    assert c.get(f"/v2.0/trunks/{t['id']}").status_code == 404
    assert "trunk_details" not in c.get(f"/v2.0/ports/{parent['id']}").json()["port"]
    # the ports are free again: another trunk may take them
    t2 = create_trunk(c, parent["id"], (s1["id"], 5))
    assert c.delete(f"/v2.0/trunks/{t2['id']}").status_code == 204
    after = snapshot(store)
    assert {k for k in after if "/uniq/trunk" in k or "/trunks/" in k} == set()
    assert set(after) == set(ports_only) and before.keys() <= after.keys()


def test_port_delete_rules_and_force(c: TestClient, store: MemoryStore) -> None:
    parent, (s1, s2) = setup(c)
    t = create_trunk(c, parent["id"], (s1["id"], 5), (s2["id"], 6))
    r = c.delete(f"/v2.0/ports/{parent['id']}")
    assert r.status_code == 409 and error_type(r) == "PortInUseAsTrunkParent"
    before = snapshot(store)
    r = c.delete(f"/v2.0/ports/{s1['id']}")
    assert r.status_code == 409 and error_type(r) == "PortInUseAsSubPort"
    r = c.delete(f"/v2.0/ports/{s1['id']}?force=maybe")
    assert r.status_code == 400
    assert snapshot(store) == before
    # the force option: out of the trunk and deleted, in one transaction
    rev = store.revision()
    assert c.delete(f"/v2.0/ports/{s1['id']}?force=true").status_code == 204
    assert store.revision() == rev + 1
    assert c.get(f"/v2.0/ports/{s1['id']}").status_code == 404
    trunk = c.get(f"/v2.0/trunks/{t['id']}").json()["trunk"]
    assert [s["port_id"] for s in trunk["sub_ports"]] == [s2["id"]]
    details = c.get(f"/v2.0/ports/{parent['id']}").json()["port"]["trunk_details"]
    assert [s["port_id"] for s in details["sub_ports"]] == [s2["id"]]
    assert [k for k in snapshot(store) if s1["id"] in k] == []
    # its VLAN is free again
    net = create(c, "networks")
    s3 = create(c, "ports", network_id=net["id"])
    add = {"sub_ports": [{"port_id": s3["id"], "segmentation_type": "vlan", "segmentation_id": 5}]}
    assert c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add).status_code == 200
    # the force option is no way around other rules: a router's port stays the router's
    router = c.post("/v2.0/routers", json={"router": {"name": "r"}}).json()["router"]
    sn = c.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4}},
    ).json()["subnet"]
    iface = c.put(
        f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sn["id"]}
    )
    r = c.delete(f"/v2.0/ports/{iface.json()['port_id']}?force=true")
    assert r.status_code == 409 and error_type(r) == "ServicePortInUse"


def test_network_cascade_takes_subports_out(c: TestClient) -> None:
    parent, (s1, other) = setup(c, 2)
    s2 = create(c, "ports", network_id=s1["network_id"])  # (two of the trunk's on one net)
    t = create_trunk(c, parent["id"], (s1["id"], 5), (s2["id"], 6), (other["id"], 7))
    assert c.delete(f"/v2.0/networks/{s1['network_id']}?cascade=true").status_code == 204
    left = c.get(f"/v2.0/trunks/{t['id']}").json()["trunk"]["sub_ports"]
    assert [s["port_id"] for s in left] == [other["id"]]
    details = c.get(f"/v2.0/ports/{parent['id']}").json()["port"]["trunk_details"]
    assert [s["port_id"] for s in details["sub_ports"]] == [other["id"]]
    # the VLANs are free again
    net = create(c, "networks")
    s3 = create(c, "ports", network_id=net["id"])
    add = {"sub_ports": [{"port_id": s3["id"], "segmentation_type": "vlan", "segmentation_id": 6}]}
    assert c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add).status_code == 200


def test_status_follows_the_agents(c: TestClient, store: MemoryStore) -> None:
    parent, (s1, s2) = setup(c)
    t = create_trunk(c, parent["id"], (s1["id"], 5), (s2["id"], 6))

    def status() -> str:
        return str(c.get(f"/v2.0/trunks/{t['id']}").json()["trunk"]["status"])

    assert status() == "DOWN"
    report(store, parent, "ACTIVE")
    assert status() == "BUILD"
    report(store, s1, "ACTIVE")
    assert status() == "BUILD"
    report(store, s2, "ACTIVE")
    assert status() == "ACTIVE"
    assert [x["id"] for x in c.get("/v2.0/trunks?status=ACTIVE").json()["trunks"]] == [t["id"]]
    report(store, s2, "ACTIVE", host="h2")
    assert status() == "DEGRADED"
    report(store, parent, "DOWN")
    assert status() == "DOWN"
    # subports show the parent's host once their agent bound them
    assert c.get(f"/v2.0/ports/{s1['id']}").json()["port"]["binding:host_id"] == "h1"


def test_project_isolation_and_policy(c: TestClient) -> None:
    a = as_project("pa")
    b = as_project("pb")
    net = create(c, "networks", headers=a)
    parent = create(c, "ports", headers=a, network_id=net["id"])
    sub = create(c, "ports", headers=a, network_id=net["id"])
    t = c.post("/v2.0/trunks", json=trunk_body(parent["id"]), headers=a).json()["trunk"]
    assert t["project_id"] == "pa"
    for path in (f"/v2.0/trunks/{t['id']}", f"/v2.0/trunks/{t['id']}/get_subports"):
        r = c.get(path, headers=b)
        assert r.status_code == 404 and error_type(r) == "TrunkNotFound"
    assert c.get("/v2.0/trunks", headers=b).json()["trunks"] == []
    add = {"sub_ports": [{"port_id": sub["id"], "segmentation_type": "vlan", "segmentation_id": 1}]}
    assert c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add, headers=b).status_code == 404
    assert (
        c.put(f"/v2.0/trunks/{t['id']}", json={"trunk": {"name": "x"}}, headers=b).status_code
        == 404
    )
    assert c.delete(f"/v2.0/trunks/{t['id']}", headers=b).status_code == 404
    # another project's port cannot be a parent or a subport: it does not exist for them
    bnet = create(c, "networks", headers=b)
    bport = create(c, "ports", headers=b, network_id=bnet["id"])
    r = c.post("/v2.0/trunks", json=trunk_body(parent["id"]), headers=b)
    assert r.status_code == 404 and error_type(r) == "PortNotFound"
    r = c.post("/v2.0/trunks", json=trunk_body(bport["id"], (sub["id"], 3)), headers=b)
    assert r.status_code == 404 and error_type(r) == "PortNotFound"
    # a reader sees but may not change
    reader = as_project("pa", "reader")
    assert c.get(f"/v2.0/trunks/{t['id']}", headers=reader).status_code == 200
    r = c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add, headers=reader)
    assert r.status_code == 403
    assert c.put(f"/v2.0/trunks/{t['id']}/add_subports", json=add, headers=a).status_code == 200


def test_extensions_advertised(c: TestClient) -> None:
    aliases = {e["alias"] for e in c.get("/v2.0/extensions").json()["extensions"]}
    assert {"trunk", "trunk-details"} <= aliases
