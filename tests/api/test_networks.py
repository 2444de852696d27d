"""Networks through the HTTP API, on the memory store and on real SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import BACKENDS, open_store
from wyvern.api.app import create_app
from wyvern.config import Settings


def member(project: str) -> dict[str, str]:
    return {"X-Project-Id": project, "X-Roles": "member"}


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    store = open_store(request.param, request, tmp_path)
    with TestClient(create_app(Settings(store="memory"), store)) as client:
        yield client


def create_net(api: TestClient, **attrs: Any) -> dict[str, Any]:
    headers = attrs.pop("headers", None)
    r = api.post("/v2.0/networks", json={"network": attrs}, headers=headers)
    assert r.status_code == 201, r.text
    net: dict[str, Any] = r.json()["network"]
    return net


def error_type(r: Any) -> str:
    body = r.json()
    assert set(body) == {"NeutronError"}, body
    return str(body["NeutronError"]["type"])


def test_defaults_and_provider_allocation(api: TestClient) -> None:
    net = create_net(api, name="n1")
    assert net["status"] == "ACTIVE"
    assert net["admin_state_up"] is True
    assert net["shared"] is False and net["router:external"] is False
    assert net["provider:network_type"] == "geneve"
    assert 1 <= net["provider:segmentation_id"] < 2**24
    assert net["mtu"] == 1438  # 1500 - 62: Geneve with Wyvern's 8-byte option
    assert net["revision_number"] == 0
    assert net["project_id"] == net["tenant_id"] == "default"
    assert net["created_at"].endswith("Z")
    vx = create_net(api, **{"provider:network_type": "vxlan"})
    assert vx["mtu"] == 1450
    assert vx["provider:segmentation_id"] != net["provider:segmentation_id"]
    vlan = create_net(api, **{"provider:network_type": "vlan"})
    assert vlan["provider:physical_network"] == "physnet1"
    assert 1 <= vlan["provider:segmentation_id"] <= 4094
    assert vlan["mtu"] == 1500


def test_segmentation_ids_are_unique(api: TestClient) -> None:
    body = {"provider:network_type": "vxlan", "provider:segmentation_id": 777}
    create_net(api, **body)
    r = api.post("/v2.0/networks", json={"network": body})
    assert r.status_code == 409 and error_type(r) == "TunnelIdInUse"
    vlan = {"provider:network_type": "vlan", "provider:segmentation_id": 42}
    create_net(api, **vlan)
    r = api.post("/v2.0/networks", json={"network": vlan})
    assert r.status_code == 409 and error_type(r) == "VlanIdInUse"
    create_net(api, **{"provider:network_type": "flat"})
    r = api.post("/v2.0/networks", json={"network": {"provider:network_type": "flat"}})
    assert r.status_code == 409 and error_type(r) == "FlatNetworkInUse"
    # Deleting frees the claim.
    nets = api.get("/v2.0/networks?provider:segmentation_id=777").json()["networks"]
    assert len(nets) == 1
    assert api.delete(f"/v2.0/networks/{nets[0]['id']}").status_code == 204
    create_net(api, **body)


@pytest.mark.parametrize(
    ("body", "status", "etype"),
    [
        ({"network": {"bogus": 1}}, 400, "HTTPBadRequest"),
        ({"network": {"id": "x"}}, 400, "HTTPBadRequest"),
        ({"network": {"status": "DOWN"}}, 400, "HTTPBadRequest"),
        ({"network": {"mtu": "abc"}}, 400, "InvalidInput"),
        ({"network": {"mtu": 9000}}, 400, "InvalidInput"),
        ({"network": {"mtu": -1}}, 400, "InvalidInput"),
        ({"network": {"admin_state_up": "maybe"}}, 400, "InvalidInput"),
        ({"network": {"name": "x" * 256}}, 400, "InvalidInput"),
        ({"network": {"name": 5}}, 400, "InvalidInput"),
        ({"network": {"provider:network_type": "token-ring"}}, 400, "InvalidInput"),
        (
            {"network": {"provider:network_type": "vlan", "provider:segmentation_id": 5000}},
            400,
            "InvalidInput",
        ),
        (
            {
                "network": {
                    "provider:network_type": "geneve",
                    "provider:physical_network": "physnet1",
                }
            },
            400,
            "InvalidInput",
        ),
        (
            {"network": {"provider:network_type": "vlan", "provider:physical_network": "nope"}},
            400,
            "InvalidInput",
        ),
        (  # an external network on a physnet no chassis may map (not in physical_networks)
            {
                "network": {
                    "router:external": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": "nope",
                }
            },
            400,
            "InvalidInput",
        ),
        ({"network": {"project_id": "a", "tenant_id": "b"}}, 400, "HTTPBadRequest"),
        ({"network": []}, 400, "HTTPBadRequest"),
        ({"networks": {}}, 400, "HTTPBadRequest"),
        ({"networks": []}, 400, "HTTPBadRequest"),
        ({"net": {}}, 400, "HTTPBadRequest"),
        ([], 400, "HTTPBadRequest"),
        ("string", 400, "HTTPBadRequest"),
    ],
)
def test_bad_input_is_a_neutron_error(api: TestClient, body: Any, status: int, etype: str) -> None:
    r = api.post("/v2.0/networks", json=body)
    assert r.status_code == status, r.text
    assert error_type(r) == etype
    assert api.get("/v2.0/networks").json()["networks"] == []


def test_malformed_json_and_unknown_routes(api: TestClient) -> None:
    for raw in (b"{bad", b"", b"\xff\xfe", b"[1,"):
        r = api.post("/v2.0/networks", content=raw)
        assert r.status_code == 400 and error_type(r) == "HTTPBadRequest"
    r = api.get("/v2.0/networks/does-not-exist")
    assert r.status_code == 404 and error_type(r) == "NetworkNotFound"
    r = api.get("/v2.0/frobnicators")
    assert r.status_code == 404 and error_type(r) == "HTTPNotFound"
    r = api.patch("/v2.0/networks")
    assert r.status_code == 405 and error_type(r) == "HTTPMethodNotAllowed"


def test_update_rules(api: TestClient) -> None:
    net = create_net(api, name="a")
    url = f"/v2.0/networks/{net['id']}"
    r = api.put(url, json={"network": {"name": "b", "mtu": 1400}})
    assert r.status_code == 200
    body = r.json()["network"]
    assert body["name"] == "b" and body["mtu"] == 1400 and body["revision_number"] == 1
    r = api.put(url, json={"network": {"provider:network_type": "vlan"}})
    assert r.status_code == 400
    assert "Cannot update read-only attribute" in r.json()["NeutronError"]["message"]
    r = api.put(url, json={"network": {"id": "other"}})
    assert r.status_code == 400
    assert api.get(url).json()["network"]["name"] == "b"


def test_mtu_below_what_ip_needs(api: TestClient) -> None:
    """Neutron takes any MTU up to the type's largest (0: that largest), but a network
    below IPv4's minimum (68) gets no subnet and one below IPv6's (1280) no IPv6 subnet:
    neither on create nor by lowering the MTU of a network that has them."""

    def post_subnet(net_id: str, cidr: str) -> Any:
        version = 6 if ":" in cidr else 4
        body = {"network_id": net_id, "cidr": cidr, "ip_version": version}
        return api.post("/v2.0/subnets", json={"subnet": body})

    def refused(r: Any, net_id: str, minimum: int) -> None:
        assert r.status_code == 409 and error_type(r) == "NetworkMTUSubnetConflict", r.text
        assert r.json()["NeutronError"]["message"] == (
            f"MTU of {net_id} is not valid, subnet requires a minimum of {minimum}"
        )

    tiny = create_net(api, mtu=67)
    assert tiny["mtu"] == 67
    refused(post_subnet(tiny["id"], "10.0.0.0/24"), tiny["id"], 68)
    refused(post_subnet(tiny["id"], "2001:db8::/64"), tiny["id"], 68)
    small = create_net(api, mtu=1279)
    assert post_subnet(small["id"], "10.0.1.0/24").status_code == 201
    refused(post_subnet(small["id"], "2001:db8:1::/64"), small["id"], 1280)
    r = api.post(
        "/v2.0/subnets",
        json={
            "subnets": [
                {"network_id": small["id"], "cidr": "10.0.2.0/24", "ip_version": 4},
                {"network_id": small["id"], "cidr": "2001:db8:2::/64", "ip_version": 6},
            ]
        },
    )
    refused(r, small["id"], 1280)
    assert len(api.get(f"/v2.0/subnets?network_id={small['id']}").json()["subnets"]) == 1
    assert api.get("/v2.0/subnets?ip_version=6").json()["subnets"] == []
    # Lowering the MTU under a subnet's minimum is refused, and changes nothing.
    v4 = create_net(api, mtu=1280)
    assert post_subnet(v4["id"], "10.0.3.0/24").status_code == 201
    r = api.put(f"/v2.0/networks/{v4['id']}", json={"network": {"mtu": 67}})
    refused(r, v4["id"], 68)
    r = api.put(f"/v2.0/networks/{v4['id']}", json={"network": {"mtu": 1000}})
    assert r.status_code == 200 and r.json()["network"]["mtu"] == 1000
    v6 = create_net(api, mtu=1280)
    assert post_subnet(v6["id"], "2001:db8:3::/64").status_code == 201
    r = api.put(f"/v2.0/networks/{v6['id']}", json={"network": {"mtu": 1279}})
    refused(r, v6["id"], 1280)
    assert api.get(f"/v2.0/networks/{v6['id']}").json()["network"]["mtu"] == 1280
    # Without subnets any MTU goes; 0 is the largest; too big is Neutron's 400.
    r = api.put(f"/v2.0/networks/{tiny['id']}", json={"network": {"mtu": 0}})
    assert r.status_code == 200 and r.json()["network"]["mtu"] == 1438
    r = api.put(f"/v2.0/networks/{tiny['id']}", json={"network": {"mtu": 1439}})
    assert r.status_code == 400 and error_type(r) == "InvalidInput"
    assert "Requested MTU is too big, maximum is 1438" in r.json()["NeutronError"]["message"]


def test_if_match_revision(api: TestClient) -> None:
    net = create_net(api)
    url = f"/v2.0/networks/{net['id']}"
    ok = api.put(url, json={"network": {"name": "x"}}, headers={"If-Match": "revision_number=0"})
    assert ok.status_code == 200
    stale = api.put(url, json={"network": {"name": "y"}}, headers={"If-Match": "revision_number=0"})
    assert stale.status_code == 412
    assert api.get(url).json()["network"]["name"] == "x"
    assert api.delete(url, headers={"If-Match": "revision_number=0"}).status_code == 412
    assert api.delete(url, headers={"If-Match": "garbage"}).status_code == 400
    assert api.delete(url, headers={"If-Match": "revision_number=1"}).status_code == 204


def test_bulk_create_is_atomic(api: TestClient) -> None:
    r = api.post(
        "/v2.0/networks",
        json={"networks": [{"name": "ok"}, {"name": "bad", "mtu": -1}]},
    )
    assert r.status_code == 400
    assert api.get("/v2.0/networks").json()["networks"] == []
    vx = {"provider:network_type": "vxlan", "provider:segmentation_id": 99}
    r = api.post("/v2.0/networks", json={"networks": [vx, vx]})
    assert r.status_code == 409
    assert api.get("/v2.0/networks").json()["networks"] == []
    r = api.post("/v2.0/networks", json={"networks": [{"name": "a"}, {"network": {"name": "b"}}]})
    assert r.status_code == 201  # Neutron takes items bare or wrapped in the singular key
    assert sorted(n["name"] for n in r.json()["networks"]) == ["a", "b"]


def test_filters_fields_sorting_pagination(api: TestClient) -> None:
    names = ["delta", "alpha", "charlie", "bravo", "echo"]
    for i, n in enumerate(names):
        create_net(api, name=n, admin_state_up=i % 2 == 0)
    r = api.get("/v2.0/networks?name=alpha&name=echo&fields=name")
    assert sorted(n["name"] for n in r.json()["networks"]) == ["alpha", "echo"]
    assert all(set(n) == {"name"} for n in r.json()["networks"])
    r = api.get("/v2.0/networks?admin_state_up=false&name=bravo")
    assert [n["name"] for n in r.json()["networks"]] == ["bravo"]
    assert api.get("/v2.0/networks?admin_state_up=perhaps").status_code == 400
    assert api.get("/v2.0/networks?colour=red").status_code == 400
    assert api.get("/v2.0/networks?sort_key=colour").status_code == 400
    assert api.get("/v2.0/networks?sort_key=name&sort_dir=up").status_code == 400
    assert api.get("/v2.0/networks?limit=-1").status_code == 400
    r = api.get("/v2.0/networks?sort_key=name&sort_dir=desc")
    assert [n["name"] for n in r.json()["networks"]] == sorted(names, reverse=True)

    # Walk the pages forward by the next links, then back by the previous links.
    seen: list[str] = []
    url: str | None = "/v2.0/networks?sort_key=name&sort_dir=asc&limit=2"
    pages = 0
    last: dict[str, Any] = {}
    while url:
        last = api.get(url).json()
        seen += [n["name"] for n in last["networks"]]
        nxt = [link for link in last.get("networks_links", []) if link["rel"] == "next"]
        url = nxt[0]["href"].replace("http://testserver", "") if nxt else None
        pages += 1
    assert seen == sorted(names) and pages == 3
    prev = [link for link in last["networks_links"] if link["rel"] == "previous"]
    back = api.get(prev[0]["href"].replace("http://testserver", "")).json()
    assert [n["name"] for n in back["networks"]] == ["charlie", "delta"]
    assert api.get("/v2.0/networks?limit=2&marker=nope").status_code == 400
    # As Neutron: a full page links onwards even when it is the last; the empty page
    # after it has no next link, and its previous link leads back to the end.
    full = api.get("/v2.0/networks?sort_key=name&limit=5").json()
    assert [n["name"] for n in full["networks"]] == sorted(names)
    rels = {link["rel"]: link["href"] for link in full["networks_links"]}
    empty = api.get(rels["next"].replace("http://testserver", "")).json()
    assert empty["networks"] == []
    rels = {link["rel"]: link["href"] for link in empty["networks_links"]}
    assert "next" not in rels
    back = api.get(rels["previous"].replace("http://testserver", "")).json()
    assert [n["name"] for n in back["networks"]] == sorted(names)


def test_tags(api: TestClient) -> None:
    a = create_net(api, name="a", tags=["red", "blue"])
    b = create_net(api, name="b", tags=["red"])
    create_net(api, name="c")
    assert a["tags"] == ["blue", "red"]

    def names(q: str) -> list[str]:
        return sorted(n["name"] for n in api.get(f"/v2.0/networks?{q}").json()["networks"])

    assert names("tags=red,blue") == ["a"]
    assert names("tags-any=blue,red") == ["a", "b"]
    assert names("not-tags=red,blue") == ["b", "c"]
    assert names("not-tags-any=blue") == ["b", "c"]
    url = f"/v2.0/networks/{b['id']}/tags"
    assert api.put(f"{url}/green").status_code == 201
    assert api.get(f"{url}/green").status_code == 204
    assert api.get(f"{url}/nope").status_code == 404
    assert api.put(url, json={"tags": ["x", "y"]}).json() == {"tags": ["x", "y"]}
    assert api.get(url).json() == {"tags": ["x", "y"]}
    assert api.delete(f"{url}/x").status_code == 204
    assert api.delete(f"{url}/x").status_code == 404
    assert api.put(url, json={"tags": ["t" * 256]}).status_code == 400
    assert api.put(url, json={"tags": [f"t{i}" for i in range(51)]}).status_code == 400
    assert api.delete(url).status_code == 204
    assert api.get(f"/v2.0/networks/{b['id']}").json()["network"]["tags"] == []


def test_project_isolation_and_roles(api: TestClient) -> None:
    mine = create_net(api, name="mine", headers=member("p1"))
    assert mine["project_id"] == "p1"
    shared = create_net(api, name="shared", shared=True)
    external = create_net(api, name="ext", **{"router:external": True})
    create_net(api, name="other", headers=member("p2"))
    visible = {
        n["name"] for n in api.get("/v2.0/networks", headers=member("p1")).json()["networks"]
    }
    assert visible == {"mine", "shared", "ext"}
    # Another project's network does not exist for p1 (its owner, p2, gets and changes it).
    other = api.get("/v2.0/networks?name=other").json()["networks"][0]
    other_url = f"/v2.0/networks/{other['id']}"
    assert api.get(other_url, headers=member("p2")).status_code == 200
    for method in ("get", "delete"):
        r = getattr(api, method)(other_url, headers=member("p1"))
        assert r.status_code == 404 and error_type(r) == "NetworkNotFound"
    r = api.put(other_url, json={"network": {"name": "x"}}, headers=member("p1"))
    assert r.status_code == 404
    r = api.put(other_url, json={"network": {"name": "x"}}, headers=member("p2"))
    assert r.status_code == 200
    assert api.delete(other_url, headers=member("p2")).status_code == 204
    # Visible but not owned: forbidden to change (its owner, the admin, may).
    r = api.put(
        f"/v2.0/networks/{shared['id']}", json={"network": {"name": "x"}}, headers=member("p1")
    )
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    r = api.put(f"/v2.0/networks/{shared['id']}", json={"network": {"name": "x"}})
    assert r.status_code == 200
    assert api.delete(f"/v2.0/networks/{external['id']}", headers=member("p1")).status_code == 403
    assert api.delete(f"/v2.0/networks/{external['id']}").status_code == 204
    # Admin-only attributes: members cannot set them, and provider:* are hidden from them.
    # (naming another project is neutron-lib's 400, a policy rule's refusal a 403)
    for body, status in (({"shared": True}, 403), ({"project_id": "p2"}, 400)):
        r = api.post("/v2.0/networks", json={"network": body}, headers=member("p1"))
        assert r.status_code == status
        assert api.post("/v2.0/networks", json={"network": body}).status_code == 201
    shown = api.get(f"/v2.0/networks/{mine['id']}", headers=member("p1")).json()["network"]
    assert "provider:network_type" not in shown
    assert "provider:network_type" in api.get(f"/v2.0/networks/{mine['id']}").json()["network"]
    # Neutron's filters answer to no policy: a member may filter on them among what it
    # sees, and is still not shown them.
    hidden = create_net(api, name="theirs", headers=member("p2"))
    by_type = "/v2.0/networks?provider:network_type=geneve"
    r = api.get(by_type, headers=member("p1"))
    assert r.status_code == 200, r.text
    found = r.json()["networks"]
    assert mine["id"] in {n["id"] for n in found}
    assert all("provider:network_type" not in n for n in found)
    assert hidden["id"] not in {n["id"] for n in found}
    assert all(n["project_id"] == "p1" or n["shared"] or n["router:external"] for n in found)
    vlan = "/v2.0/networks?provider:network_type=vlan"
    assert api.get(vlan, headers=member("p1")).json()["networks"] == []
    assert api.get(by_type).status_code == 200
    # Readers read but do not write (a member of the same project does).
    reader = {"X-Project-Id": "p1", "X-Roles": "reader"}
    assert api.get(f"/v2.0/networks/{mine['id']}", headers=reader).status_code == 200
    assert api.post("/v2.0/networks", json={"network": {}}, headers=reader).status_code == 403
    r = api.put(f"/v2.0/networks/{mine['id']}", json={"network": {"name": "z"}}, headers=reader)
    assert r.status_code == 403
    assert api.put(f"/v2.0/networks/{mine['id']}/tags/t", headers=reader).status_code == 403
    r = api.put(
        f"/v2.0/networks/{mine['id']}", json={"network": {"name": "z"}}, headers=member("p1")
    )
    assert r.status_code == 200
    assert api.put(f"/v2.0/networks/{mine['id']}/tags/t", headers=member("p1")).status_code == 201


def test_quota_enforced(api: TestClient) -> None:
    r = api.put("/v2.0/quotas/p1", json={"quota": {"network": 2}})
    assert r.status_code == 200 and r.json()["quota"]["network"] == 2
    create_net(api, headers=member("p1"))
    create_net(api, headers=member("p1"))
    r = api.post("/v2.0/networks", json={"network": {}}, headers=member("p1"))
    assert r.status_code == 409 and error_type(r) == "OverQuota"
    r = api.post("/v2.0/networks", json={"networks": [{}, {}]}, headers=member("p3"))
    assert r.status_code == 201  # other projects keep the default
    details = api.get("/v2.0/quotas/p1/details").json()["quota"]
    assert details["network"] == {"limit": 2, "used": 2, "reserved": 0}
    assert api.get("/v2.0/quotas/p1", headers=member("p2")).status_code == 404
    assert api.get("/v2.0/quotas/p1", headers=member("p1")).status_code == 200
    assert (
        api.put("/v2.0/quotas/p1", json={"quota": {"network": 5}}, headers=member("p1")).status_code
        == 403
    )
    assert api.put("/v2.0/quotas/p1", json={"quota": {"network": "many"}}).status_code == 400
    # neutron-lib's range for a limit: -1 up to the largest 32-bit integer.
    for bad in (-2, 2**31):
        r = api.put("/v2.0/quotas/p1", json={"quota": {"network": bad}})
        assert r.status_code == 400 and error_type(r) == "InvalidInput", r.text
    r = api.put("/v2.0/quotas/p1", json={"quota": {"network": 2**31 - 1}})
    assert r.status_code == 200 and r.json()["quota"]["network"] == 2**31 - 1
    assert api.put("/v2.0/quotas/p1", json={"quota": {"widgets": 1}}).status_code == 400
    assert api.get("/v2.0/quotas/p1/default").json()["quota"]["network"] == 100
    assert api.delete("/v2.0/quotas/p1").status_code == 204
    assert api.get("/v2.0/quotas/p1").json()["quota"]["network"] == 100


def test_quota_below_usage_needs_force(api: TestClient) -> None:
    """quota-check-limit-default: a limit under the usage is a 400 unless forced."""
    create_net(api, headers=member("p1"))
    create_net(api, headers=member("p1"))
    r = api.put("/v2.0/quotas/p1", json={"quota": {"network": 1}})
    assert r.status_code == 400 and "already used 2" in r.json()["NeutronError"]["message"]
    assert api.get("/v2.0/quotas/p1").json()["quota"]["network"] == 100
    for ok in ({"network": 2}, {"network": -1}, {"network": 1, "force": True}):
        r = api.put("/v2.0/quotas/p1", json={"quota": ok})
        assert r.status_code == 200, r.text
        assert r.json()["quota"]["network"] == ok["network"]
        assert "force" not in r.json()["quota"]
    # `force` must be exactly true; `check_limit` is accepted and changes nothing.
    r = api.put("/v2.0/quotas/p1", json={"quota": {"network": 0, "force": "yes"}})
    assert r.status_code == 400
    r = api.put("/v2.0/quotas/p1", json={"quota": {"network": 0, "check_limit": True}})
    assert r.status_code == 400
    aliases = {e["alias"] for e in api.get("/v2.0/extensions").json()["extensions"]}
    assert {"quota-check-limit", "quota-check-limit-default"} <= aliases


def test_discovery(api: TestClient) -> None:
    versions = api.get("/").json()["versions"]
    assert versions[0]["id"] == "v2.0" and versions[0]["status"] == "CURRENT"
    assert versions[0]["links"][0]["href"].endswith("/v2.0/")
    resources = {r["collection"] for r in api.get("/v2.0/").json()["resources"]}
    assert "networks" in resources
    aliases = {e["alias"] for e in api.get("/v2.0/extensions").json()["extensions"]}
    assert {"provider", "external-net", "standard-attr-tag", "quotas"} <= aliases
    assert api.get("/v2.0/extensions/provider").json()["extension"]["alias"] == "provider"
    assert api.get("/v2.0/extensions/lbaas").status_code == 404
    assert api.get("/v2.0/networks.json").status_code == 200
    doc = api.get("/openapi.json").json()
    assert "/v2.0/ports/{id}" in doc["paths"]
    # Every reference in the document resolves (attribute schemas are inlined).
    assert "#/$defs/" not in json.dumps(doc)


def test_delete_then_gone(api: TestClient) -> None:
    net = create_net(api)
    url = f"/v2.0/networks/{net['id']}"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.delete(url).status_code == 404
