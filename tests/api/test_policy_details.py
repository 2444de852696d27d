"""Policy details that follow Neutron: defaults of admin-only attributes, no existence
oracle through fixed_ips, and the headers 401 and 405 owe the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type
from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.nb.memory import MemoryStore

MEMBER = as_project("p1")


def test_member_may_send_an_admin_only_attribute_at_its_default(client: TestClient) -> None:
    """`openstack network create --no-share` sends shared=false: Neutron's policy skips an
    attribute set to its declared default (on create)."""
    for attr in ("shared", "router:external"):
        r = client.post("/v2.0/networks", json={"network": {attr: True}}, headers=MEMBER)
        assert r.status_code == 403, (attr, r.text)
        r = client.post("/v2.0/networks", json={"network": {attr: False}}, headers=MEMBER)
        assert r.status_code == 201, (attr, r.text)
        assert r.json()["network"][attr] is False
        # An update names it explicitly, default or not: admin only, as in Neutron.
        url = f"/v2.0/networks/{r.json()['network']['id']}"
        r = client.put(url, json={"network": {attr: False}}, headers=MEMBER)
        assert r.status_code == 403, (attr, r.text)
    # Attributes whose Neutron default is "not specified" stay admin-only at any value.
    net = create(client, "networks", headers=MEMBER)
    r = client.post(
        "/v2.0/ports",
        json={"port": {"network_id": net["id"], "binding:host_id": ""}},
        headers=MEMBER,
    )
    assert r.status_code == 403, r.text


def test_another_projects_subnet_in_fixed_ips_looks_unknown(client: TestClient) -> None:
    mine = create(client, "networks", headers=MEMBER)
    my_sub = create(
        client, "subnets", headers=MEMBER, network_id=mine["id"], cidr="10.0.0.0/24", ip_version=4
    )
    other_net = create(client, "networks", headers=as_project("p2"))
    other_sub = create(
        client,
        "subnets",
        headers=as_project("p2"),
        network_id=other_net["id"],
        cidr="10.1.0.0/24",
        ip_version=4,
    )
    unknown = "9d3b4e4c-0a55-4d2c-9ad5-4c0b8b0b0b0b"

    def port_on(subnet_id: str) -> tuple[int, str]:
        r = client.post(
            "/v2.0/ports",
            json={"port": {"network_id": mine["id"], "fixed_ips": [{"subnet_id": subnet_id}]}},
            headers=MEMBER,
        )
        return r.status_code, error_type(r) if r.status_code >= 400 else ""

    assert port_on(my_sub["id"]) == (201, "")
    assert port_on(unknown) == (404, "SubnetNotFound")
    assert port_on(other_sub["id"]) == port_on(unknown)
    # A subnet the caller can see on another network stays Neutron's 400 (the admin sees
    # p2's subnet).
    r = client.post(
        "/v2.0/ports",
        json={"port": {"network_id": mine["id"], "fixed_ips": [{"subnet_id": other_sub["id"]}]}},
    )
    assert r.status_code == 400 and error_type(r) == "InvalidInput", r.text
    # The same on update.
    port = create(client, "ports", headers=MEMBER, network_id=mine["id"])
    url = f"/v2.0/ports/{port['id']}"
    for sid in (other_sub["id"], unknown):
        r = client.put(url, json={"port": {"fixed_ips": [{"subnet_id": sid}]}}, headers=MEMBER)
        assert (r.status_code, error_type(r)) == (404, "SubnetNotFound"), r.text


def test_401_carries_www_authenticate(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[tokens.t1]\nproject_id = "p1"\nroles = ["member"]\n')
    settings = Settings(store="memory", auth_strategy="token", tokens_file=tokens)
    api = TestClient(create_app(settings, MemoryStore()))
    assert api.get("/v2.0/networks", headers={"X-Auth-Token": "t1"}).status_code == 200
    for hdrs in ({}, {"X-Auth-Token": "wrong"}):
        r = api.get("/v2.0/networks", headers=hdrs)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer "), r.headers


def test_405_carries_allow(client: TestClient) -> None:
    net = create(client, "networks")
    r = client.patch(f"/v2.0/networks/{net['id']}", json={})
    assert r.status_code == 405 and error_type(r) == "HTTPMethodNotAllowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "PUT", "DELETE"}
    r = client.delete("/v2.0/networks")
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    r = client.post("/v2.0/extensions")
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_no_reference_in_a_body_tells_another_projects_id_from_an_unknown_one(
    client: TestClient,
) -> None:
    """Every id a body may name answers alike for another project's object and for an id
    that does not exist (status and error type)."""
    other = as_project("p2")
    onet = create(client, "networks", headers=other)
    theirs = {
        "net": onet["id"],
        "sub": create(
            client,
            "subnets",
            headers=other,
            network_id=onet["id"],
            cidr="10.2.0.0/24",
            ip_version=4,
        )["id"],
        "sg": create(client, "security-groups", headers=other, name="x")["id"],
        "port": create(client, "ports", headers=other, network_id=onet["id"])["id"],
        "ag": create(client, "address-groups", headers=other, addresses=[])["id"],
    }
    net = create(client, "networks", headers=MEMBER)
    sg = create(client, "security-groups", headers=MEMBER, name="y")
    router = create(client, "routers", headers=MEMBER)
    unknown = "9d3b4e4c-0a55-4d2c-9ad5-4c0b8b0b0b0b"
    rule = {"security_group_id": sg["id"], "direction": "ingress"}
    add_if = f"/v2.0/routers/{router['id']}/add_router_interface"
    probes: dict[str, tuple[str, str, str, Any]] = {
        "port network_id": ("post", "/v2.0/ports", "net", lambda i: {"port": {"network_id": i}}),
        "port security_groups": (
            "post",
            "/v2.0/ports",
            "sg",
            lambda i: {"port": {"network_id": net["id"], "security_groups": [i]}},
        ),
        "port fixed_ips subnet": (
            "post",
            "/v2.0/ports",
            "sub",
            lambda i: {"port": {"network_id": net["id"], "fixed_ips": [{"subnet_id": i}]}},
        ),
        "subnet network_id": (
            "post",
            "/v2.0/subnets",
            "net",
            lambda i: {"subnet": {"network_id": i, "cidr": "10.5.0.0/24", "ip_version": 4}},
        ),
        "rule security_group_id": (
            "post",
            "/v2.0/security-group-rules",
            "sg",
            lambda i: {"security_group_rule": {**rule, "security_group_id": i}},
        ),
        "rule remote_group_id": (
            "post",
            "/v2.0/security-group-rules",
            "sg",
            lambda i: {"security_group_rule": {**rule, "remote_group_id": i}},
        ),
        "rule remote_address_group_id": (
            "post",
            "/v2.0/security-group-rules",
            "ag",
            lambda i: {"security_group_rule": {**rule, "remote_address_group_id": i}},
        ),
        "router interface subnet": ("put", add_if, "sub", lambda i: {"subnet_id": i}),
        "router interface port": ("put", add_if, "port", lambda i: {"port_id": i}),
        "router gateway": (
            "put",
            f"/v2.0/routers/{router['id']}",
            "net",
            lambda i: {"router": {"external_gateway_info": {"network_id": i}}},
        ),
    }
    for name, (method, url, kind, body) in probes.items():
        answers = []
        for id_ in (theirs[kind], unknown):
            r = client.request(method.upper(), url, json=body(id_), headers=MEMBER)
            answers.append((r.status_code, error_type(r)))
        assert answers[0] == answers[1], (name, answers)
        assert answers[0][0] == 404, (name, answers)
