"""The served /openapi.json describes the API as the server really behaves (issue 11, 8).

Each check pairs what the document says with what the server answers: the declared path
parameters, filters, bodies, statuses and error bodies. tests/api/test_schemathesis.py
checks the same at random against a live server.
"""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.api.conftest import create, error_type
from wyvern.nb.memory import MemoryStore

DOC_ONLY = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v2.0"}
# Prometheus's exposition format, not the Neutron API (wyvern.api.metering_metrics)
DOC_ONLY |= {"/metrics"}


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_every_served_route_is_documented_once(client: TestClient, doc: dict[str, Any]) -> None:
    served = {
        (r.path, m.lower())
        for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, APIRoute) and r.path not in DOC_ONLY
        for m in r.methods
    }
    documented = {(p, m) for p, m, _ in operations(doc)}
    assert served == documented
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)) > 100


def test_every_path_parameter_is_declared(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)


def test_ids_are_uuids_and_a_non_uuid_id_is_404_not_400(
    client: TestClient, doc: dict[str, Any]
) -> None:
    """The document says format uuid; a client sending something else learns only that
    there is no such object (404), as with an unknown uuid."""
    param = doc["paths"]["/v2.0/networks/{id}"]["get"]["parameters"][0]
    assert param["schema"] == {"type": "string", "format": "uuid"}
    net = create(client, "networks")
    assert client.get(f"/v2.0/networks/{net['id']}").status_code == 200
    for bad in (str(uuid.uuid4()), "not-a-uuid", "x" * 300):
        resp = client.get(f"/v2.0/networks/{bad}")
        assert resp.status_code == 404, bad
        assert error_type(resp) == "NetworkNotFound"


def test_list_declares_filters_sorting_and_paging(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/v2.0/networks"]["get"]["parameters"]}
    for name in ("name", "mtu", "shared", "tags", "not-tags-any", "fields", "sort_key"):
        assert name in params, name
    for name in ("limit", "marker", "page_reverse", "sort_dir"):
        assert name in params, name
    assert params["mtu"]["schema"] == {"type": "array", "items": {"type": "integer", "minimum": 0}}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 0}
    assert "bogus" not in params
    ports = {p["name"] for p in doc["paths"]["/v2.0/ports"]["get"]["parameters"]}
    assert {"fixed_ips", "ip_address", "network_id", "device_owner"} <= ports


def test_typed_filters_are_400_on_text_as_declared(client: TestClient, doc: dict[str, Any]) -> None:
    """A filter the document types (integer, boolean) is one the server 400s on text (a
    string one may take it, matching nothing, or refuse it: 400 is declared on lists)."""
    checked = 0
    for path, item in doc["paths"].items():
        if not path.startswith("/v2.0/") or "{" in path or "get" not in item:
            continue
        for p in item["get"]["parameters"]:
            schema = p["schema"].get("items", p["schema"])
            if p["name"] in ("sort_key", "sort_dir", "limit", "page_reverse", "fields", "marker"):
                continue
            resp = client.get(path, params={p["name"]: "abc"})
            if schema.get("type") in ("integer", "boolean"):
                assert resp.status_code == 400, (path, p["name"])
                checked += 1
            else:
                assert resp.status_code in (200, 400), (path, p["name"], resp.text)
    assert checked > 10
    assert client.get("/v2.0/networks", params={"mtu": "1500"}).status_code == 200


def test_bodies_are_neutron_envelopes_with_bulk(doc: dict[str, Any]) -> None:
    post = doc["paths"]["/v2.0/networks"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    single, bulk = schema["oneOf"]
    assert single["required"] == ["network"]
    assert "name" in single["properties"]["network"]["properties"]
    assert single["properties"]["network"]["additionalProperties"] is False
    assert bulk["properties"]["networks"]["type"] == "array"
    assert single in bulk["properties"]["networks"]["items"]["anyOf"]  # wrapped items
    assert "201" in post["responses"] and "200" not in post["responses"]
    put = doc["paths"]["/v2.0/networks/{id}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert "id" not in body["properties"]["network"]["properties"]  # read-only
    assert "204" in doc["paths"]["/v2.0/networks/{id}"]["delete"]["responses"]


def test_action_routes_have_body_schemas(doc: dict[str, Any]) -> None:
    for path in (
        "/v2.0/routers/{id}/add_router_interface",
        "/v2.0/routers/{id}/remove_router_interface",
        "/v2.0/routers/{id}/add_extraroutes",
        "/v2.0/routers/{id}/remove_extraroutes",
        "/v2.0/address-groups/{id}/add_addresses",
        "/v2.0/address-groups/{id}/remove_addresses",
        "/v2.0/networks/{id}/tags",
        "/v2.0/quotas/{project}",
    ):
        body = doc["paths"][path]["put"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["type"] == "object", path


def test_errors_are_neutron_errors(client: TestClient, doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["NeutronError"]
    assert schema["properties"]["NeutronError"]["required"] == ["type", "message", "detail"]
    for path, method, op in operations(doc):
        for code, resp in op["responses"].items():
            if int(code) >= 400:
                assert resp == {"$ref": f"#/components/responses/{code}"}, (method, path)
    assert "409" in doc["paths"]["/v2.0/networks/{id}"]["delete"]["responses"]
    assert "412" in doc["paths"]["/v2.0/networks/{id}"]["put"]["responses"]
    assert doc["components"]["responses"]["503"]["headers"]["Retry-After"]["required"]


def test_links_lead_from_create_to_the_new_object(doc: dict[str, Any]) -> None:
    links = doc["paths"]["/v2.0/networks"]["post"]["responses"]["201"]["links"]
    for op_id in ("show_network", "update_network", "delete_network", "add_network_tag"):
        assert links[op_id]["parameters"] == {"path.id": "$response.body#/network/id"}
    assert links["create_subnet"]["requestBody"] == {
        "subnet": {"network_id": "$response.body#/network/id"}
    }
    router_links = doc["paths"]["/v2.0/routers"]["post"]["responses"]["201"]["links"]
    assert "put_routers_id_add_router_interface" in router_links


def test_noauth_declares_no_security_and_token_auth_does(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    assert "security" not in doc
    assert "401" not in doc["paths"]["/v2.0/networks"]["get"]["responses"]
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[tokens.t1]\nproject_id = "p1"\nroles = ["member"]\n')
    from tests.api.conftest import make_client

    with make_client(MemoryStore(), auth_strategy="token", tokens_file=tokens) as c:
        secured = c.get("/openapi.json").json()
        assert secured["security"] == [{"token": []}, {"bearer": []}]
        schemes = secured["components"]["securitySchemes"]
        assert schemes["token"] == {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
        assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
        params = secured["paths"]["/v2.0/networks"]["get"]["parameters"]
        assert "X-Project-Id" not in {p["name"] for p in params}
        assert "401" in secured["paths"]["/v2.0/networks"]["get"]["responses"]
        resp = c.get("/v2.0/networks")
        assert resp.status_code == 401 and error_type(resp) == "NotAuthorized"
        assert c.get("/v2.0/networks", headers={"X-Auth-Token": "t1"}).status_code == 200
        bearer = {"Authorization": "Bearer t1"}
        assert c.get("/v2.0/networks", headers=bearer).status_code == 200


def test_noauth_declares_its_identity_headers(client: TestClient, doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/v2.0/networks"]["post"]["parameters"]}
    assert params["X-Project-Id"]["in"] == params["X-Roles"]["in"] == "header"
    as_p1 = {"X-Project-Id": "p1", "X-Roles": "member"}
    net = create(client, "networks", headers=as_p1)
    assert net["project_id"] == "p1"
    assert (
        client.get(
            f"/v2.0/networks/{net['id']}", headers={"X-Project-Id": "p2", "X-Roles": "member"}
        ).status_code
        == 404
    )


def test_delete_passes_on_only_documented_query_parameters(client: TestClient) -> None:
    """A port a router owns is the router's to delete (409 ServicePortInUse). The cascades
    delete such ports with an internal force=True, which a client's `?force=True` must
    not reach: DELETE passes on only the query parameters the document declares."""
    net = create(client, "networks")
    sub = create(client, "subnets", network_id=net["id"], cidr="10.7.0.0/24", ip_version=4)
    router = create(client, "routers")
    resp = client.put(
        f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
    )
    assert resp.status_code == 200, resp.text
    port_url = f"/v2.0/ports/{resp.json()['port_id']}"
    for query in ("", "?force=True"):
        resp = client.delete(port_url + query)
        assert resp.status_code == 409, (query, resp.text)
        assert error_type(resp) == "ServicePortInUse"
    assert client.get(port_url).status_code == 200
    # The one a network's DELETE does declare still works.
    port = create(client, "ports", network_id=net["id"])
    other = create(client, "networks")
    create(client, "ports", network_id=other["id"])
    assert client.delete(f"/v2.0/networks/{other['id']}").status_code == 409
    assert client.delete(f"/v2.0/networks/{other['id']}?cascade=true").status_code == 204
    assert client.get(f"/v2.0/ports/{port['id']}").status_code == 200


def test_noauth_project_id_is_bounded_as_documented(
    client: TestClient, doc: dict[str, Any]
) -> None:
    """The document bounds project_id at 255 characters, in bodies and in what is shown;
    a noauth X-Project-Id longer than that made objects it then showed out of bounds."""
    params = {p["name"]: p for p in doc["paths"]["/v2.0/networks"]["post"]["parameters"]}
    assert params["X-Project-Id"]["schema"]["maxLength"] == 255
    net = create(client, "networks", headers={"X-Project-Id": "p" * 255, "X-Roles": "member"})
    assert net["project_id"] == "p" * 255
    long = {"X-Project-Id": "p" * 256, "X-Roles": "member"}
    resp = client.post("/v2.0/networks", json={"network": {}}, headers=long)
    assert resp.status_code == 400, resp.text
    assert error_type(resp) == "HTTPBadRequest"
    assert client.get("/v2.0/networks", headers=long).status_code == 400
    assert client.get("/v2.0/networks?fields=project_id").json()["networks"] == [
        {"project_id": "p" * 255}
    ]


def test_a_project_id_with_a_slash_is_refused(client: TestClient) -> None:
    """A project id is a segment of store keys: "a/networks" would have counted as project
    a's networks (its quota). Refused in the header and in a body; the same ids without
    the slash are taken (the probe)."""
    as_member = {"X-Roles": "member"}
    ok = create(client, "networks", headers={"X-Project-Id": "a-networks", **as_member})
    assert ok["project_id"] == "a-networks"
    bad = {"X-Project-Id": "a/networks", **as_member}
    resp = client.post("/v2.0/networks", json={"network": {}}, headers=bad)
    assert resp.status_code == 400 and error_type(resp) == "HTTPBadRequest", resp.text
    assert "contains '/'" in resp.json()["NeutronError"]["message"]
    assert client.get("/v2.0/networks", headers=bad).status_code == 400
    taken = client.post("/v2.0/networks", json={"network": {"tenant_id": "b-x"}})
    assert taken.status_code == 201, taken.text  # (as admin, for another project)
    for field in ("tenant_id", "project_id"):
        resp = client.post("/v2.0/networks", json={"network": {field: "b/networks"}})
        assert resp.status_code == 400, resp.text
    names = {n["project_id"] for n in client.get("/v2.0/networks").json()["networks"]}
    assert names == {"a-networks", "b-x"}


def test_what_a_real_topology_shows_conforms_to_the_document(
    client: TestClient, doc: dict[str, Any]
) -> None:
    """Random requests rarely get a subnet, a routed port or a floating IP created, so the
    shapes of those are checked here: every list and show of a full topology (dual-stack
    subnets, a router with gateway, interface and routes, a floating IP on a port,
    security groups and rules, an address group), as admin and as the member who owns it,
    validates against the document's success schema."""
    import jsonschema_rs  # (schemathesis's validator)

    from tests.api.test_floatingips import fip, topology
    from tests.api.test_routers import P1, act

    topo = topology(client)
    fip(client, topo["ext_net"], port_id=topo["port"])
    forwarded = fip(client, topo["ext_net"])["id"]  # (and a port forwarding on another)
    pf_vm = create(client, "ports", headers=P1, network_id=topo["net"])
    pf_body = {"protocol": "udp", "internal_port_id": pf_vm["id"], "internal_port": 53}
    pf_body["external_port_range"] = "5300:5309"
    resp = client.post(
        f"/v2.0/floatingips/{forwarded}/port_forwardings",
        json={"port_forwarding": pf_body},
        headers=P1,
    )
    assert resp.status_code == 201, resp.text
    v6 = {"network_id": topo["net"], "ip_version": 6, "cidr": "fd00:5::/64"}
    create(client, "subnets", headers=P1, ipv6_ra_mode="slaac", ipv6_address_mode="slaac", **v6)
    routes = {"router": {"routes": [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.5"}]}}
    act(client, topo["router"], "add_extraroutes", routes)
    sg = create(client, "security-groups", headers=P1, name="web")
    rule = {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}
    create(client, "security-group-rules", headers=P1, security_group_id=sg["id"], **rule)
    create(client, "address-groups", headers=P1, addresses=["10.1.0.0/24", "fd00::1/128"])
    create(client, "ports", headers=P1, network_id=topo["net"], security_groups=[sg["id"]])

    qos_id = client.post(
        "/v2.0/qos/policies", json={"policy": {"name": "q", "project_id": "p1"}}
    ).json()["policy"]["id"]
    for rtype, attrs in (
        ("bandwidth_limit", {"max_kbps": 100}),
        ("dscp_marking", {"dscp_mark": 8}),
        ("packet_rate_limit", {"max_kpps": 1}),
    ):
        body = {f"{rtype}_rule": attrs}
        assert (
            client.post(f"/v2.0/qos/policies/{qos_id}/{rtype}_rules", json=body).status_code == 201
        )

    def schema(op: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = op["responses"]["200"]["content"]["application/json"]["schema"]
        return found

    checked = 0
    resources = client.app.state.api.state.resources.values()  # type: ignore[attr-defined]
    for path in (f"/v2.0/{r.defn.path}" for r in resources if r.defn.path):
        listing = schema(doc["paths"][path]["get"])
        show = schema(doc["paths"][f"{path}/{{id}}"]["get"])
        url = path.format(floatingip_id=forwarded, policy_id=qos_id)  # (a sub-resource's parent)
        for headers in ({}, P1):
            listed = client.get(url, headers=headers)
            assert listed.status_code == 200, listed.text
            jsonschema_rs.validate(listing, listed.json())
            key = next(iter(listed.json()))
            for obj in listed.json()[key]:
                one = client.get(f"{url}/{obj['id']}", headers=headers)
                assert one.status_code == 200, (path, one.text)
                jsonschema_rs.validate(show, one.json())
                checked += 1
    assert checked > 30
    # The same check fails on a schema that misses one attribute the server shows.
    show = copy.deepcopy(schema(doc["paths"]["/v2.0/ports/{id}"]["get"]))
    del show["properties"]["port"]["properties"]["binding:vif_details"]
    port = client.get(f"/v2.0/ports/{topo['port']}").json()
    with pytest.raises(jsonschema_rs.ValidationError, match="binding:vif_details"):
        jsonschema_rs.validate(show, port)
