"""Subnet pools and allocation from them: Neutron's subnet_allocation and
default-subnetpools contract (attributes, defaults, validation, errors, quotas), and
allocation that never overlaps, even from concurrent API calls."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type

P1 = as_project("p1")
P2 = as_project("p2")


def pool(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    attrs.setdefault("name", "pool")
    return create(client, "subnetpools", headers, **attrs)


def net(client: TestClient, headers: dict[str, str] | None = None) -> str:
    return str(create(client, "networks", headers, name="n")["id"])


def post_subnet(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    attrs.setdefault("ip_version", 4)
    return client.post("/v2.0/subnets", json={"subnet": attrs}, headers=headers)


def test_create_defaults_and_show(client: TestClient) -> None:
    p = pool(client, prefixes=["10.0.0.0/16", "10.1.0.0/16", "10.0.5.0/24"])
    assert p["prefixes"] == ["10.0.0.0/15"]  # merged, as Neutron's IPSet compaction
    assert p["ip_version"] == 4
    # Shown as strings, as Neutron shows them (integers in).
    assert (p["min_prefixlen"], p["max_prefixlen"], p["default_prefixlen"]) == ("8", "32", "8")
    assert p["default_quota"] is None and p["address_scope_id"] is None
    assert p["shared"] is False and p["is_default"] is False
    assert {"description", "tags", "revision_number", "created_at"} <= set(p)
    assert not any(k.startswith("_") for k in p)
    six = pool(client, name="six", prefixes=["2001:db8::/32"])
    assert six["ip_version"] == 6 and (six["min_prefixlen"], six["max_prefixlen"]) == ("64", "128")
    got = client.get(f"/v2.0/subnetpools/{p['id']}").json()["subnetpool"]
    assert got == p


def test_create_refusals(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"prefixes": ["10.0.0.0/8"]}, 400, "HTTPBadRequest"),  # name is required
        ({"name": "x"}, 400, "HTTPBadRequest"),  # prefixes required
        ({"name": "x", "prefixes": []}, 400, "EmptySubnetPoolPrefixList"),
        ({"name": "x", "prefixes": ["10.0.0.0/8", "2001:db8::/32"]}, 400, "PrefixVersionMismatch"),
        ({"name": "x", "prefixes": ["10.0.0.0"]}, 400, "InvalidInput"),
        ({"name": "x", "prefixes": ["bogus/8"]}, 400, "InvalidInput"),
        (
            {"name": "x", "prefixes": ["10.0.0.0/8"], "min_prefixlen": 30, "max_prefixlen": 20},
            400,
            "IllegalSubnetPoolPrefixBounds",
        ),
        (
            {"name": "x", "prefixes": ["10.0.0.0/8"], "max_prefixlen": 33},
            400,
            "IllegalSubnetPoolPrefixBounds",
        ),
        (
            {"name": "x", "prefixes": ["10.0.0.0/8"], "min_prefixlen": 16, "default_prefixlen": 12},
            400,
            "IllegalSubnetPoolPrefixBounds",
        ),
        ({"name": "x", "prefixes": ["10.0.0.0/8"], "default_quota": -1}, 400, "InvalidInput"),
        ({"name": "x", "prefixes": ["10.0.0.0/8"], "ip_version": 4}, 400, "HTTPBadRequest"),
    ]
    for body, status, kind in cases:
        resp = client.post("/v2.0/subnetpools", json={"subnetpool": body})
        assert resp.status_code == status, (body, resp.text)
        assert error_type(resp) == kind, (body, resp.text)
    assert client.get("/v2.0/subnetpools").json()["subnetpools"] == []
    bounds = client.post(
        "/v2.0/subnetpools",
        json={"subnetpool": {"name": "x", "prefixes": ["10.0.0.0/8"], "max_prefixlen": 33}},
    ).json()["NeutronError"]["message"]
    assert bounds == "Illegal prefix bounds: max_prefixlen=33, ip_version_max=32."


def test_shared_and_is_default_are_admin_only(client: TestClient) -> None:
    for attr in ("shared", "is_default"):
        resp = client.post(
            "/v2.0/subnetpools",
            json={"subnetpool": {"name": "x", "prefixes": ["10.0.0.0/8"], attr: True}},
            headers=P1,
        )
        assert resp.status_code == 403, resp.text
    p = pool(client, P1, prefixes=["10.0.0.0/8"], shared=False, is_default=False)
    resp = client.put(
        f"/v2.0/subnetpools/{p['id']}", json={"subnetpool": {"is_default": True}}, headers=P1
    )
    assert resp.status_code == 403
    resp = client.put(f"/v2.0/subnetpools/{p['id']}", json={"subnetpool": {"shared": True}})
    assert resp.status_code == 400  # shared is set at create only


def test_project_isolation(client: TestClient) -> None:
    mine = pool(client, P1, prefixes=["10.0.0.0/8"])
    shared = pool(client, name="s", prefixes=["172.16.0.0/12"], shared=True)
    seen = {p["id"] for p in client.get("/v2.0/subnetpools", headers=P2).json()["subnetpools"]}
    assert seen == {shared["id"]}
    assert client.get(f"/v2.0/subnetpools/{mine['id']}", headers=P2).status_code == 404
    resp = client.delete(f"/v2.0/subnetpools/{mine['id']}", headers=P2)
    assert resp.status_code == 404
    # another project's pool cannot be allocated from; the shared one can
    n2 = net(client, P2)
    resp = post_subnet(client, P2, network_id=n2, subnetpool_id=mine["id"])
    assert resp.status_code == 404 and error_type(resp) == "SubnetPoolNotFound"
    assert resp.json()["NeutronError"]["message"] == f"Subnet pool {mine['id']} could not be found."
    ok = post_subnet(client, P2, network_id=n2, subnetpool_id=shared["id"], prefixlen=24)
    assert ok.status_code == 201, ok.text
    # a member may not update or delete a shared pool it does not own
    resp = client.put(
        f"/v2.0/subnetpools/{shared['id']}", json={"subnetpool": {"name": "y"}}, headers=P2
    )
    assert resp.status_code == 403


def test_allocate_with_prefixlen_default_and_cidr(client: TestClient) -> None:
    p = pool(client, prefixes=["10.10.0.0/16"], default_prefixlen=24, min_prefixlen=20)
    n = net(client)
    a = post_subnet(client, network_id=n, subnetpool_id=p["id"], prefixlen=26).json()["subnet"]
    assert a["cidr"] == "10.10.0.0/26" and a["subnetpool_id"] == p["id"]
    assert a["gateway_ip"] == "10.10.0.1"
    assert a["allocation_pools"] == [{"start": "10.10.0.2", "end": "10.10.0.62"}]
    assert "prefixlen" not in a and "use_default_subnetpool" not in a
    n2 = net(client)
    b = post_subnet(client, network_id=n2, subnetpool_id=p["id"]).json()["subnet"]
    # smallest free block first (Neutron): 10.10.0.64/26 cannot hold a /24
    assert b["cidr"] == "10.10.1.0/24"
    n3 = net(client)
    c = post_subnet(client, network_id=n3, subnetpool_id=p["id"], prefixlen=26).json()["subnet"]
    assert c["cidr"] == "10.10.0.64/26"
    n4 = net(client)
    d = post_subnet(client, network_id=n4, subnetpool_id=p["id"], cidr="10.10.200.0/24")
    assert d.status_code == 201 and d.json()["subnet"]["cidr"] == "10.10.200.0/24"
    # an explicit CIDR outside the pool, or already taken: Neutron's SubnetAllocationError
    for cidr in ("192.168.0.0/24", "10.10.0.0/25"):
        resp = post_subnet(client, network_id=net(client), subnetpool_id=p["id"], cidr=cidr)
        assert resp.status_code == 500, resp.text
        assert error_type(resp) == "SubnetAllocationError"
        assert resp.json()["NeutronError"]["message"] == (
            "Failed to allocate subnet: Cannot allocate requested subnet from the available "
            "set of prefixes."
        )
    for length, kind in (
        (19, "MinPrefixSubnetAllocationError"),
        (33, "MaxPrefixSubnetAllocationError"),
    ):
        resp = post_subnet(client, network_id=net(client), subnetpool_id=p["id"], prefixlen=length)
        assert resp.status_code == 400 and error_type(resp) == kind, resp.text
    p2 = pool(client, name="q", prefixes=["10.20.0.0/16"], max_prefixlen=24)
    resp = post_subnet(client, network_id=net(client), subnetpool_id=p2["id"], prefixlen=25)
    assert error_type(resp) == "MaxPrefixSubnetAllocationError"
    assert resp.json()["NeutronError"]["message"] == (
        "Unable to allocate subnet with prefix length 25, maximum allowed prefix is 24."
    )


def test_request_refusals_change_nothing(client: TestClient) -> None:
    p = pool(client, prefixes=["10.10.0.0/16"], default_prefixlen=24)
    six = pool(client, name="six", prefixes=["2001:db8::/48"])
    n = net(client)
    cases = [
        (
            {"subnetpool_id": p["id"], "cidr": "10.10.0.0/24", "prefixlen": 24},
            "Bad subnets request: cidr and prefixlen must not be supplied together.",
        ),
        (
            {"subnetpool_id": p["id"], "use_default_subnetpool": True},
            "Bad subnets request: subnetpool_id and use_default_subnetpool cannot both be "
            "specified.",
        ),
        (
            {
                "subnetpool_id": p["id"],
                "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}],
            },
            "Bad subnets request: allocation_pools allowed only for specific subnet requests.",
        ),
        (
            {"use_default_subnetpool": True},
            "Bad subnets request: No default subnetpool found for IPv4.",
        ),
        (
            {"subnetpool_id": six["id"]},
            "Bad subnets request: Cannot allocate IPv4 subnet from IPv6 subnet pool.",
        ),
        ({}, "Bad subnets request: a subnetpool must be specified in the absence of a cidr."),
    ]
    for body, message in cases:
        resp = post_subnet(client, network_id=n, **body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["NeutronError"]["message"] == message
    assert client.get("/v2.0/subnets").json()["subnets"] == []
    network = client.get(f"/v2.0/networks/{n}").json()["network"]
    assert network["subnets"] == [] and network["revision_number"] == 0


def test_exhaustion(client: TestClient) -> None:
    p = pool(client, prefixes=["10.30.0.0/23"], default_prefixlen=24)
    for _ in range(2):
        assert post_subnet(client, network_id=net(client), subnetpool_id=p["id"]).status_code == 201
    n = net(client)
    resp = post_subnet(client, network_id=n, subnetpool_id=p["id"])
    assert resp.status_code == 500  # Neutron's status for SubnetAllocationError
    assert resp.json()["NeutronError"] == {
        "type": "SubnetAllocationError",
        "message": "Failed to allocate subnet: Insufficient prefix space to allocate subnet "
        "size /24.",
        "detail": "",
    }
    assert client.get(f"/v2.0/networks/{n}").json()["network"]["subnets"] == []
    # growing the pool makes room
    resp = client.put(
        f"/v2.0/subnetpools/{p['id']}", json={"subnetpool": {"prefixes": ["10.30.0.0/22"]}}
    )
    assert resp.status_code == 200 and resp.json()["subnetpool"]["prefixes"] == ["10.30.0.0/22"]
    ok = post_subnet(client, network_id=n, subnetpool_id=p["id"])
    assert ok.json()["subnet"]["cidr"] == "10.30.2.0/24"


def test_update_rules(client: TestClient) -> None:
    p = pool(client, prefixes=["10.40.0.0/16", "10.42.0.0/16"])
    url = f"/v2.0/subnetpools/{p['id']}"
    resp = client.put(url, json={"subnetpool": {"prefixes": ["10.40.0.0/16"]}})
    assert resp.status_code == 400 and error_type(resp) == "IllegalSubnetPoolPrefixUpdate"
    assert resp.json()["NeutronError"]["message"] == (
        "Illegal update to prefixes: Existing prefixes must be a subset of the new prefixes."
    )
    resp = client.put(url, json={"subnetpool": {"prefixes": [*p["prefixes"], "2001:db8::/32"]}})
    assert resp.status_code == 400 and error_type(resp) == "PrefixVersionMismatch"
    resp = client.put(url, json={"subnetpool": {"min_prefixlen": 30, "max_prefixlen": 24}})
    assert resp.status_code == 400 and error_type(resp) == "IllegalSubnetPoolPrefixBounds"
    resp = client.put(url, json={"subnetpool": {"ip_version": 6}})
    assert resp.status_code == 400
    assert client.get(url).json()["subnetpool"]["revision_number"] == 0
    resp = client.put(
        url,
        json={"subnetpool": {"prefixes": ["10.40.0.0/15", "10.42.0.0/16"], "default_quota": 512}},
    )
    body = resp.json()["subnetpool"]
    assert body["prefixes"] == ["10.40.0.0/15", "10.42.0.0/16"] and body["default_quota"] == 512
    assert body["revision_number"] == 1


def test_delete_in_use_and_after(client: TestClient) -> None:
    p = pool(client, prefixes=["10.50.0.0/16"], default_prefixlen=24)
    n = net(client)
    sub = post_subnet(client, network_id=n, subnetpool_id=p["id"]).json()["subnet"]
    resp = client.delete(f"/v2.0/subnetpools/{p['id']}")
    assert resp.status_code == 400, resp.text  # Neutron: SubnetPoolDeleteError (BadRequest)
    assert resp.json()["NeutronError"] == {
        "type": "SubnetPoolDeleteError",
        "message": "Unable to delete subnet pool: Subnet pool has existing allocations.",
        "detail": "",
    }
    assert client.delete(f"/v2.0/subnets/{sub['id']}").status_code == 204
    assert client.delete(f"/v2.0/subnetpools/{p['id']}").status_code == 204
    assert client.get(f"/v2.0/subnetpools/{p['id']}").status_code == 404


def test_default_pools(client: TestClient) -> None:
    four = pool(
        client, prefixes=["10.60.0.0/16"], default_prefixlen=26, is_default=True, shared=True
    )
    resp = client.post(
        "/v2.0/subnetpools",
        json={"subnetpool": {"name": "x", "prefixes": ["10.61.0.0/16"], "is_default": True}},
    )
    assert resp.status_code == 400 and error_type(resp) == "InvalidInput"
    assert "Only one default may exist per IP family" in resp.json()["NeutronError"]["message"]
    six = pool(client, name="six", prefixes=["2001:db8:1::/48"], is_default=True, shared=True)
    n = net(client, P1)
    a = post_subnet(client, P1, network_id=n, use_default_subnetpool=True).json()["subnet"]
    assert a["cidr"] == "10.60.0.0/26" and a["subnetpool_id"] == four["id"]
    b = post_subnet(
        client,
        P1,
        network_id=n,
        ip_version=6,
        use_default_subnetpool=True,
        ipv6_address_mode="slaac",
        ipv6_ra_mode="slaac",
    )
    assert b.status_code == 201, b.text
    assert b.json()["subnet"]["cidr"] == "2001:db8:1::/64"
    assert b.json()["subnet"]["subnetpool_id"] == six["id"]
    # the default can move once released
    other = pool(client, name="o", prefixes=["10.62.0.0/16"])
    url = f"/v2.0/subnetpools/{other['id']}"
    assert client.put(url, json={"subnetpool": {"is_default": True}}).status_code == 400
    off = client.put(f"/v2.0/subnetpools/{four['id']}", json={"subnetpool": {"is_default": False}})
    assert off.status_code == 200
    assert client.put(url, json={"subnetpool": {"is_default": True}}).status_code == 200


def test_pool_quota(client: TestClient) -> None:
    """default_quota counts addresses (IPv4) per project; 2 /26 = 128 addresses."""
    p = pool(client, prefixes=["10.70.0.0/16"], default_quota=128, shared=True)
    for _ in range(2):
        ok = post_subnet(
            client, P1, network_id=net(client, P1), subnetpool_id=p["id"], prefixlen=26
        )
        assert ok.status_code == 201, ok.text
    resp = post_subnet(client, P1, network_id=net(client, P1), subnetpool_id=p["id"], prefixlen=30)
    assert resp.status_code == 409 and error_type(resp) == "SubnetPoolQuotaExceeded"
    assert resp.json()["NeutronError"]["message"] == "Per-tenant subnet pool prefix quota exceeded."
    # another project has its own allowance
    ok = post_subnet(client, P2, network_id=net(client, P2), subnetpool_id=p["id"], prefixlen=25)
    assert ok.status_code == 201
    # IPv6: /64 units
    six = pool(
        client,
        name="six",
        prefixes=["2001:db8::/48"],
        default_quota=2,
        shared=True,
        min_prefixlen=56,
    )
    n = net(client, P1)
    ok = post_subnet(client, P1, network_id=n, ip_version=6, subnetpool_id=six["id"], prefixlen=63)
    assert ok.status_code == 201, ok.text
    over = post_subnet(
        client, P1, network_id=net(client, P1), ip_version=6, subnetpool_id=six["id"], prefixlen=64
    )
    assert over.status_code == 409


def test_subnetpool_resource_quota(client: TestClient) -> None:
    resp = client.put("/v2.0/quotas/p1", json={"quota": {"subnetpool": 1}})
    assert resp.status_code == 200 and resp.json()["quota"]["subnetpool"] == 1
    pool(client, P1, prefixes=["10.80.0.0/16"])
    resp = client.post(
        "/v2.0/subnetpools",
        json={"subnetpool": {"name": "y", "prefixes": ["10.81.0.0/16"]}},
        headers=P1,
    )
    assert resp.status_code == 409 and error_type(resp) == "OverQuota"
    details = client.get("/v2.0/quotas/p1/details").json()["quota"]["subnetpool"]
    assert details == {"limit": 1, "used": 1, "reserved": 0}


def test_network_affinity(client: TestClient) -> None:
    a = pool(client, prefixes=["10.90.0.0/16"], default_prefixlen=24)
    b = pool(client, name="b", prefixes=["10.91.0.0/16"], default_prefixlen=24)
    n = net(client)
    assert post_subnet(client, network_id=n, subnetpool_id=a["id"]).status_code == 201
    for body in ({"subnetpool_id": b["id"]}, {"cidr": "192.168.9.0/24"}):
        resp = post_subnet(client, network_id=n, **body)
        assert resp.status_code == 400 and error_type(resp) == "NetworkSubnetPoolAffinityError"
    again = post_subnet(client, network_id=n, subnetpool_id=a["id"])
    assert again.status_code == 201


def test_concurrent_allocations_never_overlap(sqlite_client: TestClient) -> None:
    """Many threads allocate /28s from one small pool at once (SQLite, real guards):
    every subnet is distinct and non-overlapping, and exactly the pool's room is used."""
    client = sqlite_client
    p = pool(client, prefixes=["10.99.0.0/25"], default_prefixlen=28)  # room for 8
    nets = [net(client) for _ in range(12)]
    results: list[Any] = []
    lock = threading.Lock()

    def run(n: str) -> None:
        resp = post_subnet(client, network_id=n, subnetpool_id=p["id"])
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=run, args=(n,)) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r.json()["subnet"]["cidr"] for r in results if r.status_code == 201]
    failed = [r for r in results if r.status_code != 201]
    assert len(ok) == 8 and len(failed) == 4
    assert all(error_type(r) == "SubnetAllocationError" for r in failed)
    blocks = sorted(ipaddress.ip_network(c) for c in ok)
    assert all(not x.overlaps(y) for i, x in enumerate(blocks) for y in blocks[i + 1 :])
    stored = [s["cidr"] for s in client.get("/v2.0/subnets").json()["subnets"]]
    assert sorted(stored) == sorted(ok)


def test_bulk_allocation_shares_the_pool(client: TestClient) -> None:
    p = pool(client, prefixes=["10.98.0.0/24"], default_prefixlen=26)
    nets = [net(client) for _ in range(3)]
    resp = client.post(
        "/v2.0/subnets",
        json={
            "subnets": [{"network_id": n, "ip_version": 4, "subnetpool_id": p["id"]} for n in nets]
        },
    )
    assert resp.status_code == 201, resp.text
    cidrs = [s["cidr"] for s in resp.json()["subnets"]]
    assert cidrs == ["10.98.0.0/26", "10.98.0.64/26", "10.98.0.128/26"]


def test_extensions_advertised(client: TestClient) -> None:
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert {"subnet_allocation", "default-subnetpools", "address-scope"} <= aliases


def test_add_and_remove_prefixes(client: TestClient) -> None:
    p = pool(client, prefixes=["10.110.0.0/24"], default_prefixlen=24)
    url = f"/v2.0/subnetpools/{p['id']}"
    resp = client.put(f"{url}/add_prefixes", json={"prefixes": ["10.110.1.0/24", "10.120.0.0/24"]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"prefixes": ["10.110.0.0/23", "10.120.0.0/24"]}
    sub = post_subnet(client, network_id=net(client), subnetpool_id=p["id"]).json()["subnet"]
    assert sub["cidr"] == "10.120.0.0/24"  # (the smallest free block first)
    resp = client.put(f"{url}/remove_prefixes", json={"prefixes": ["10.120.0.0/24"]})
    assert resp.status_code == 400 and error_type(resp) == "IllegalSubnetPoolPrefixUpdate"
    assert resp.json()["NeutronError"]["message"] == (
        "Illegal update to prefixes: One or more the prefixes to be removed is in use by a subnet."
    )
    resp = client.put(f"{url}/remove_prefixes", json={"prefixes": ["10.110.1.0/24"]})
    assert resp.json() == {"prefixes": ["10.110.0.0/24", "10.120.0.0/24"]}
    shown = client.get(url).json()["subnetpool"]
    assert shown["prefixes"] == ["10.110.0.0/24", "10.120.0.0/24"]
    # nothing to remove, or nothing given: unchanged
    for body in ({"prefixes": ["192.168.0.0/24"]}, {"prefixes": []}):
        resp = client.put(f"{url}/remove_prefixes", json=body)
        assert resp.json() == {"prefixes": ["10.110.0.0/24", "10.120.0.0/24"]}
    for body in ({"prefixes": ["bogus"]}, {"other": []}, []):
        assert client.put(f"{url}/add_prefixes", json=body).status_code == 400
    resp = client.put(f"{url}/add_prefixes", json={"prefixes": ["10.9.0.0/24"]}, headers=P2)
    assert resp.status_code == 404
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert "subnetpool-prefix-ops" in aliases
