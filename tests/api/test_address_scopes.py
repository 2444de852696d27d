"""Address scopes: Neutron's address-scope contract, pools in a scope never overlapping,
and the networks' ipv4_address_scope / ipv6_address_scope (with the key the agents
route by)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type
from wyvern.model.keys import obj_key

P1 = as_project("p1")
P2 = as_project("p2")


def scope(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    attrs.setdefault("name", "scope")
    attrs.setdefault("ip_version", 4)
    return create(client, "address-scopes", headers, **attrs)


def pool(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    attrs.setdefault("name", "pool")
    return client.post("/v2.0/subnetpools", json={"subnetpool": attrs}, headers=headers)


def stored_network(client: TestClient, network_id: str) -> dict[str, Any]:
    store = client.app.state.api.store  # type: ignore[attr-defined]
    kv = store.get(obj_key("networks", network_id))
    assert kv is not None
    out: dict[str, Any] = orjson.loads(kv.value)
    return out


def test_crud_and_shape(client: TestClient) -> None:
    s = scope(client, P1)
    assert set(s) == {"id", "name", "project_id", "tenant_id", "shared", "ip_version"}
    assert s["shared"] is False and s["ip_version"] == 4 and s["project_id"] == "p1"
    url = f"/v2.0/address-scopes/{s['id']}"
    assert client.get(url, headers=P1).json()["address_scope"] == s
    resp = client.put(url, json={"address_scope": {"name": "renamed"}}, headers=P1)
    assert resp.status_code == 200 and resp.json()["address_scope"]["name"] == "renamed"
    resp = client.put(url, json={"address_scope": {"ip_version": 6}}, headers=P1)
    assert resp.status_code == 400
    for body in ({"name": "x"}, {"name": "x", "ip_version": 5}):
        resp = client.post("/v2.0/address-scopes", json={"address_scope": body})
        assert resp.status_code == 400, resp.text
    assert client.delete(url, headers=P1).status_code == 204
    resp = client.get(url, headers=P1)
    assert resp.status_code == 404 and error_type(resp) == "AddressScopeNotFound"
    assert resp.json()["NeutronError"]["message"] == f"Address scope {s['id']} could not be found."


def test_shared_admin_only_and_isolation(client: TestClient) -> None:
    resp = client.post(
        "/v2.0/address-scopes",
        json={"address_scope": {"name": "x", "ip_version": 4, "shared": True}},
        headers=P1,
    )
    assert resp.status_code == 403
    mine = scope(client, P1)
    shared = scope(client, name="s", shared=True)
    seen = {
        s["id"] for s in client.get("/v2.0/address-scopes", headers=P2).json()["address_scopes"]
    }
    assert seen == {shared["id"]}
    assert client.get(f"/v2.0/address-scopes/{mine['id']}", headers=P2).status_code == 404
    assert client.delete(f"/v2.0/address-scopes/{mine['id']}", headers=P2).status_code == 404
    resp = client.put(
        f"/v2.0/address-scopes/{shared['id']}", json={"address_scope": {"shared": False}}
    )
    assert resp.status_code == 400 and error_type(resp) == "AddressScopeUpdateError"
    # a pool of p2 cannot join p1's private scope (404), but may join a shared one
    # (Neutron's is_accessible: owner, admin or shared with the caller)
    resp = pool(client, P2, prefixes=["10.0.0.0/16"], address_scope_id=mine["id"])
    assert resp.status_code == 404 and error_type(resp) == "AddressScopeNotFound"
    resp = pool(client, P2, prefixes=["10.0.0.0/16"], address_scope_id=shared["id"])
    assert resp.status_code == 201, resp.text


def test_pools_in_a_scope_never_overlap(client: TestClient) -> None:
    s = scope(client)
    a = pool(client, prefixes=["10.0.0.0/16"], address_scope_id=s["id"])
    assert a.status_code == 201 and a.json()["subnetpool"]["address_scope_id"] == s["id"]
    resp = pool(client, name="b", prefixes=["10.0.128.0/17"], address_scope_id=s["id"])
    assert resp.status_code == 409 and error_type(resp) == "AddressScopePrefixConflict"
    assert resp.json()["NeutronError"]["message"] == (
        "Failed to associate address scope: subnetpools within an address scope must have "
        "unique prefixes."
    )
    # outside the scope the same prefixes are fine; joining the scope then is refused
    b = pool(client, name="b", prefixes=["10.0.128.0/17"]).json()["subnetpool"]
    resp = client.put(
        f"/v2.0/subnetpools/{b['id']}", json={"subnetpool": {"address_scope_id": s["id"]}}
    )
    assert resp.status_code == 409
    assert (
        client.get(f"/v2.0/subnetpools/{b['id']}").json()["subnetpool"]["address_scope_id"] is None
    )
    # growing a scoped pool into another's prefixes is refused too
    c = pool(client, name="c", prefixes=["10.1.0.0/16"], address_scope_id=s["id"])
    resp = client.put(
        f"/v2.0/subnetpools/{c.json()['subnetpool']['id']}",
        json={"subnetpool": {"prefixes": ["10.0.0.0/15"]}},
    )
    assert resp.status_code == 409
    six = pool(client, name="six", prefixes=["2001:db8::/32"], address_scope_id=s["id"])
    assert six.status_code == 400
    assert error_type(six) == "IllegalSubnetPoolIpVersionAssociationToAddressScope"


def test_scope_in_use(client: TestClient) -> None:
    s = scope(client)
    p = pool(client, prefixes=["10.0.0.0/16"], address_scope_id=s["id"]).json()["subnetpool"]
    resp = client.delete(f"/v2.0/address-scopes/{s['id']}")
    assert resp.status_code == 409 and error_type(resp) == "AddressScopeInUse"
    assert client.delete(f"/v2.0/subnetpools/{p['id']}").status_code == 204
    assert client.delete(f"/v2.0/address-scopes/{s['id']}").status_code == 204


def test_network_shows_the_scope_of_its_subnets(client: TestClient) -> None:
    s4 = scope(client)
    s6 = scope(client, name="six", ip_version=6)
    p4 = pool(client, prefixes=["10.0.0.0/16"], default_prefixlen=24, address_scope_id=s4["id"])
    p6 = pool(client, name="p6", prefixes=["2001:db8::/48"], address_scope_id=s6["id"])
    n = create(client, "networks", name="n")
    assert n["ipv4_address_scope"] is None and n["ipv6_address_scope"] is None
    sub4 = client.post(
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": n["id"],
                "ip_version": 4,
                "subnetpool_id": p4.json()["subnetpool"]["id"],
            }
        },
    ).json()["subnet"]
    client.post(
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": n["id"],
                "ip_version": 6,
                "subnetpool_id": p6.json()["subnetpool"]["id"],
            }
        },
    )
    shown = client.get(f"/v2.0/networks/{n['id']}").json()["network"]
    assert shown["ipv4_address_scope"] == s4["id"] and shown["ipv6_address_scope"] == s6["id"]
    raw = stored_network(client, n["id"])
    assert raw["_scope_key4"] and raw["_scope_key6"] and raw["_scope_key4"] != raw["_scope_key6"]
    # a subnet from no pool, or another scope's pool, cannot join that network's IPv4
    other = scope(client, name="o")
    po = pool(
        client,
        name="po",
        prefixes=["10.9.0.0/16"],
        default_prefixlen=24,
        address_scope_id=other["id"],
    )
    resp = client.post(
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": n["id"],
                "ip_version": 4,
                "subnetpool_id": po.json()["subnetpool"]["id"],
            }
        },
    )
    assert resp.status_code == 400 and error_type(resp) == "NetworkAddressScopeAffinityError"
    # the last IPv4 subnet gone: no IPv4 scope
    assert client.delete(f"/v2.0/subnets/{sub4['id']}").status_code == 204
    shown = client.get(f"/v2.0/networks/{n['id']}").json()["network"]
    assert shown["ipv4_address_scope"] is None and shown["ipv6_address_scope"] == s6["id"]
    assert "_scope_key4" not in stored_network(client, n["id"])


def test_rescoping_a_pool_moves_its_networks(client: TestClient) -> None:
    a = scope(client)
    b = scope(client, name="b")
    p = pool(client, prefixes=["10.0.0.0/16"], default_prefixlen=24, address_scope_id=a["id"])
    pid = p.json()["subnetpool"]["id"]
    n = create(client, "networks", name="n")
    client.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": n["id"], "ip_version": 4, "subnetpool_id": pid}},
    )
    key_a = stored_network(client, n["id"])["_scope_key4"]
    resp = client.put(
        f"/v2.0/subnetpools/{pid}", json={"subnetpool": {"address_scope_id": b["id"]}}
    )
    assert resp.status_code == 200
    assert (
        client.get(f"/v2.0/networks/{n['id']}").json()["network"]["ipv4_address_scope"] == b["id"]
    )
    assert stored_network(client, n["id"])["_scope_key4"] != key_a
    resp = client.put(f"/v2.0/subnetpools/{pid}", json={"subnetpool": {"address_scope_id": None}})
    assert resp.status_code == 200
    shown = client.get(f"/v2.0/networks/{n['id']}").json()["network"]
    assert shown["ipv4_address_scope"] is None
