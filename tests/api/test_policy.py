"""Neutron's default policy, persona by persona (as neutron/tests/unit/conf/policies do):
for each resource and action, which of admin, project member, project reader, a member of
another project (and, where Neutron names it, the service role) may do it, over HTTP with
noauth_trust_headers. Then an operator's policy_file overriding a default."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import SINGULAR, as_project, create, error_type, make_client
from wyvern.nb.memory import MemoryStore

ADMIN = as_project("admin-project", "admin")
MEMBER = as_project("p1", "member")
READER = as_project("p1", "reader")
OTHER = as_project("p2", "member")
SERVICE = as_project("p1", "service")
PERSONAS = {"admin": ADMIN, "member": MEMBER, "reader": READER, "other": OTHER}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(MemoryStore(), noauth_trust_headers=True) as c:
        yield c


# ---- fixtures: what project p1's member owns ----------------------------------------------
def external(client: TestClient) -> dict[str, Any]:
    attrs = {
        "router:external": True,
        "provider:network_type": "vlan",
        "provider:physical_network": "physnet1",
    }
    net = create(client, "networks", headers=ADMIN, **attrs)
    sub = create(
        client, "subnets", headers=ADMIN, network_id=net["id"], cidr="172.24.4.0/24", ip_version=4
    )
    return {"ext_net": net["id"], "ext_sub": sub["id"]}


def owned(client: TestClient, path: str) -> dict[str, Any]:
    """Project p1's object of this collection (and what it needs), by p1's member."""
    net = create(client, "networks", headers=MEMBER)
    sub = create(
        client, "subnets", headers=MEMBER, network_id=net["id"], cidr="10.0.0.0/24", ip_version=4
    )
    out: dict[str, Any] = {"net": net["id"], "sub": sub["id"]}
    if path == "networks":
        out["id"] = net["id"]
    elif path == "subnets":
        out["id"] = sub["id"]
    elif path == "ports":
        out["id"] = create(client, "ports", headers=MEMBER, network_id=net["id"])["id"]
    elif path == "routers":
        out["id"] = create(client, "routers", headers=MEMBER)["id"]
    elif path == "floatingips":
        out.update(external(client))
        fip = create(client, "floatingips", headers=MEMBER, floating_network_id=out["ext_net"])
        out["id"] = fip["id"]
    elif path == "security-groups":
        out["id"] = create(client, "security-groups", headers=MEMBER, name="web")["id"]
    elif path == "security-group-rules":
        sg = create(client, "security-groups", headers=MEMBER, name="web")
        out["sg"] = sg["id"]
        rule = create(
            client,
            "security-group-rules",
            headers=MEMBER,
            security_group_id=sg["id"],
            direction="ingress",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
        )
        out["id"] = rule["id"]
    elif path == "address-scopes":
        out["id"] = create(client, "address-scopes", headers=MEMBER, name="s", ip_version=4)["id"]
    elif path == "subnetpools":
        pool = create(client, "subnetpools", headers=MEMBER, name="p", prefixes=["10.10.0.0/16"])
        out["id"] = pool["id"]
    elif path == "address-groups":
        out["id"] = create(client, "address-groups", headers=MEMBER, name="g")["id"]
    return out


# A new object's body per collection, given p1's fixtures.
NEW: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "networks": lambda f: {},
    "subnets": lambda f: {"network_id": f["net"], "cidr": "10.0.1.0/24", "ip_version": 4},
    "ports": lambda f: {"network_id": f["net"]},
    "routers": lambda f: {},
    "floatingips": lambda f: {"floating_network_id": f["ext_net"]},
    "security-groups": lambda f: {"name": "db"},
    "security-group-rules": lambda f: {
        "security_group_id": f["sg"],
        "direction": "ingress",
        "protocol": "udp",
    },
    "address-scopes": lambda f: {"name": "s2", "ip_version": 6},
    "subnetpools": lambda f: {"name": "p2", "prefixes": ["10.20.0.0/16"]},
    "address-groups": lambda f: {"name": "g2"},
}
# An update body (security group rules have none).
UPDATE: dict[str, dict[str, Any]] = {path: {"name": "renamed"} for path in NEW}
UPDATE["floatingips"] = {"description": "renamed"}
del UPDATE["security-group-rules"]

# Neutron's defaults for an object project p1 owns: admin and p1's member may do anything,
# p1's reader only read (403 on writes), another project's member sees nothing (404).
# Creating in another project's network or group is that parent's 404.
OWNED = {
    "create": {"admin": 201, "member": 201, "reader": 403},
    "get": {"admin": 200, "member": 200, "reader": 200, "other": 404},
    "update": {"admin": 200, "member": 200, "reader": 403, "other": 404},
    "delete": {"admin": 204, "member": 204, "reader": 403, "other": 404},
}
CREATE_OTHER = {
    "subnets": 404,
    "ports": 404,
    "security-group-rules": 404,
}


def crud_cases() -> Iterator[Any]:
    for path in NEW:
        for action, table in OWNED.items():
            if action == "update" and path not in UPDATE:
                continue
            for persona, status in table.items():
                yield pytest.param(path, action, persona, status, id=f"{path}-{action}-{persona}")
        yield pytest.param(
            path,
            "create",
            "other",
            CREATE_OTHER.get(path, 201),
            id=f"{path}-create-other",
        )


@pytest.mark.parametrize(("path", "action", "persona", "status"), crud_cases())
def test_crud_matrix(client: TestClient, path: str, action: str, persona: str, status: int) -> None:
    fix = owned(client, path)
    headers = PERSONAS[persona]
    key = SINGULAR[path]
    url = f"/v2.0/{path}/{fix['id']}"
    if action == "create":
        r = client.post(f"/v2.0/{path}", json={key: NEW[path](fix)}, headers=headers)
    elif action == "get":
        r = client.get(url, headers=headers)
    elif action == "update":
        r = client.put(url, json={key: UPDATE[path]}, headers=headers)
    else:
        r = client.delete(url, headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert error_type(r) == "PolicyNotAuthorized"
        # ... and nothing changed: the object is as it was, or no new one.
        if action in ("update", "delete"):
            after = client.get(url, headers=ADMIN).json()[key]
            assert all(after.get(k) != v for k, v in UPDATE.get(path, {}).items())
    if action == "get" and status == 200:
        assert r.json()[key]["id"] == fix["id"]
    # A list shows what a show shows.
    listed = client.get(f"/v2.0/{path}", headers=headers)
    assert listed.status_code == 200
    ids = {o["id"] for o in listed.json()[path.replace("-", "_")]}
    if action == "get":
        assert (fix["id"] in ids) == (status == 200)


# ---- attributes --------------------------------------------------------------------------
ATTR_CREATE = [
    # (collection, body beyond NEW's, {persona: status}), Neutron's attribute rules
    ("networks", {"shared": True}, {"admin": 201, "member": 403, "reader": 403}),
    ("networks", {"router:external": True}, {"admin": 201, "member": 403}),
    ("networks", {"provider:network_type": "geneve"}, {"admin": 201, "member": 403}),
    ("networks", {"port_security_enabled": False}, {"admin": 201, "member": 201}),
    ("ports", {"binding:host_id": "h1"}, {"admin": 201, "member": 403}),
    ("ports", {"mac_address": "fa:16:3e:00:11:22"}, {"admin": 201, "member": 201}),
    ("ports", {"fixed_ips": [{"ip_address": "10.0.0.50"}]}, {"admin": 201, "member": 201}),
    ("ports", {"device_owner": "network:dhcp"}, {"admin": 201, "member": 201}),
    ("routers", {"distributed": True}, {"admin": 201, "member": 403}),
    ("subnetpools", {"shared": True}, {"admin": 201, "member": 403}),
    ("address-scopes", {"shared": True}, {"admin": 201, "member": 403}),
]


@pytest.mark.parametrize(
    ("path", "extra", "persona", "status"),
    [
        pytest.param(p, e, who, s, id=f"{p}-{next(iter(e))}-{who}")
        for p, e, table in ATTR_CREATE
        for who, s in table.items()
    ],
)
def test_create_attribute_matrix(
    client: TestClient, path: str, extra: dict[str, Any], persona: str, status: int
) -> None:
    fix = owned(client, path)
    body = {**NEW[path](fix), **extra}
    if path == "networks" and persona == "admin":
        body["project_id"] = "p1"
    r = client.post(f"/v2.0/{path}", json={SINGULAR[path]: body}, headers=PERSONAS[persona])
    assert r.status_code == status, r.text
    if status == 403 and persona == "member":  # (a reader fails on create_<resource>)
        rule = f"create_{SINGULAR[path]}:{next(iter(extra))}"
        assert r.json()["NeutronError"]["message"] == f"rule:{rule} is disallowed by policy"


def test_binding_profile_is_the_service_roles(client: TestClient) -> None:
    """Neutron lets only the service role (Nova) set binding:profile, not even an admin."""
    fix = owned(client, "ports")
    body = {"network_id": fix["net"], "binding:profile": {"pci_slot": "0000:00:01.0"}}
    for who, status in ((ADMIN, 403), (MEMBER, 403), (SERVICE, 201)):
        r = client.post("/v2.0/ports", json={"port": body}, headers=who)
        assert r.status_code == status, r.text
    port = r.json()["port"]
    assert port["binding:profile"] == {"pci_slot": "0000:00:01.0"}


def test_shared_network_others_may_not_choose_addresses(client: TestClient) -> None:
    """On a network shared with them, another project's member gets a port but may not pick
    its address, MAC or a network: device_owner (rules on the network's owner)."""
    net = create(client, "networks", headers=ADMIN, project_id="p1", shared=True)
    create(
        client, "subnets", headers=MEMBER, network_id=net["id"], cidr="10.9.0.0/24", ip_version=4
    )
    ok = client.post("/v2.0/ports", json={"port": {"network_id": net["id"]}}, headers=OTHER)
    assert ok.status_code == 201, ok.text
    for extra, rule in (
        ({"fixed_ips": [{"ip_address": "10.9.0.77"}]}, "create_port:fixed_ips:ip_address"),
        ({"mac_address": "fa:16:3e:00:11:23"}, "create_port:mac_address"),
        ({"device_owner": "network:dhcp"}, "create_port:device_owner"),
    ):
        body = {"port": {"network_id": net["id"], **extra}}
        r = client.post("/v2.0/ports", json=body, headers=OTHER)
        assert r.status_code == 403, r.text
        assert r.json()["NeutronError"]["message"] == f"rule:{rule} is disallowed by policy"
        # The network's owner may.
        assert client.post("/v2.0/ports", json=body, headers=MEMBER).status_code == 201


def test_router_gateway_sub_attributes(client: TestClient) -> None:
    ext = external(client)
    gw = {"network_id": ext["ext_net"]}
    r = client.post("/v2.0/routers", json={"router": {"external_gateway_info": gw}}, headers=MEMBER)
    assert r.status_code == 201, r.text
    for key, value in (
        ("enable_snat", False),
        ("external_fixed_ips", [{"subnet_id": ext["ext_sub"]}]),
    ):
        body = {"router": {"external_gateway_info": {**gw, key: value}}}
        r = client.post("/v2.0/routers", json=body, headers=MEMBER)
        assert r.status_code == 403, r.text
        msg = f"rule:create_router:external_gateway_info:{key} is disallowed by policy"
        assert r.json()["NeutronError"]["message"] == msg
        assert client.post("/v2.0/routers", json=body, headers=ADMIN).status_code == 201


@pytest.mark.parametrize(
    ("persona", "status"), [("admin", 200), ("member", 200), ("reader", 403), ("other", 404)]
)
def test_add_router_interface(client: TestClient, persona: str, status: int) -> None:
    fix = owned(client, "routers")
    r = client.put(
        f"/v2.0/routers/{fix['id']}/add_router_interface",
        json={"subnet_id": fix["sub"]},
        headers=PERSONAS[persona],
    )
    assert r.status_code == status, r.text


NAMED_ACTIONS = [
    # (collection, action, body): Neutron's add_addresses, add_prefixes, add_extraroutes
    ("address-groups", "add_addresses", {"addresses": ["10.1.1.1/32"]}),
    ("subnetpools", "add_prefixes", {"prefixes": ["10.30.0.0/16"]}),
    ("routers", "add_extraroutes", {"router": {"routes": []}}),
]


@pytest.mark.parametrize(
    ("path", "action", "body", "persona", "status"),
    [
        pytest.param(p, a, b, who, s, id=f"{a}-{who}")
        for p, a, b in NAMED_ACTIONS
        for who, s in (("admin", 200), ("member", 200), ("reader", 403), ("other", 404))
    ],
)
def test_named_actions(
    client: TestClient, path: str, action: str, body: Any, persona: str, status: int
) -> None:
    fix = owned(client, path)
    r = client.put(f"/v2.0/{path}/{fix['id']}/{action}", json=body, headers=PERSONAS[persona])
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["NeutronError"]["message"] == f"rule:{action} is disallowed by policy"


def test_admin_only_attributes_are_stripped_from_shows(client: TestClient) -> None:
    """get_network:provider:* and get_port:binding:host_id: others get the object without
    them (Neutron's _exclude_attributes_by_policy), in shows and lists alike."""
    fix = owned(client, "ports")
    client.put(f"/v2.0/ports/{fix['id']}", json={"port": {"binding:host_id": "h1"}}, headers=ADMIN)
    for path, id_, attr in (
        ("networks", fix["net"], "provider:network_type"),
        ("ports", fix["id"], "binding:host_id"),
    ):
        key = SINGULAR[path]
        admin = client.get(f"/v2.0/{path}/{id_}", headers=ADMIN).json()[key]
        assert attr in admin
        for who in (MEMBER, READER):
            shown = client.get(f"/v2.0/{path}/{id_}", headers=who).json()[key]
            assert attr not in shown and shown["id"] == id_
            listed = client.get(f"/v2.0/{path}", headers=who).json()[path]
            assert all(attr not in o for o in listed)


def test_update_attribute_rules(client: TestClient) -> None:
    fix = owned(client, "ports")
    url = f"/v2.0/networks/{fix['net']}"
    r = client.put(url, json={"network": {"shared": True}}, headers=MEMBER)
    assert r.status_code == 403 and "update_network:shared" in r.text
    r = client.put(url, json={"network": {"shared": True}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["network"]["shared"] is True
    purl = f"/v2.0/ports/{fix['id']}"
    r = client.put(purl, json={"port": {"binding:host_id": "h2"}}, headers=MEMBER)
    assert r.status_code == 403 and "update_port:binding:host_id" in r.text
    assert (
        client.put(purl, json={"port": {"binding:host_id": "h2"}}, headers=ADMIN).status_code == 200
    )


# ---- admin-only APIs ---------------------------------------------------------------------
def test_quotas_and_agents_are_admin_only(client: TestClient) -> None:
    body = {"quota": {"network": 5}}
    r = client.put("/v2.0/quotas/p1", json=body, headers=MEMBER)
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    assert client.put("/v2.0/quotas/p1", json=body, headers=ADMIN).status_code == 200
    # One's own quotas are readable; another project's look absent.
    assert client.get("/v2.0/quotas/p1", headers=READER).json()["quota"]["network"] == 5
    assert client.get("/v2.0/quotas/p1", headers=OTHER).status_code == 404
    assert client.get("/v2.0/agents", headers=ADMIN).status_code == 200
    assert client.get("/v2.0/agents", headers=MEMBER).json() == {"agents": []}


# ---- an operator's policy.yaml -----------------------------------------------------------
def test_policy_file_overrides_defaults(tmp_path: Path) -> None:
    """A policy_file lets members pick provider:network_type and forbids readers to list
    ports (Neutron's [oslo_policy] policy_file), the other rules staying Neutron's."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        '"create_network:provider:network_type": "rule:admin_only or role:member"\n'
        '"get_port": "rule:admin_only or (role:member and project_id:%(project_id)s)"\n'
    )
    body = {"network": {"provider:network_type": "geneve"}}
    with make_client(MemoryStore(), noauth_trust_headers=True) as stock:
        assert stock.post("/v2.0/networks", json=body, headers=MEMBER).status_code == 403
    with make_client(MemoryStore(), noauth_trust_headers=True, policy_file=policy) as tuned:
        r = tuned.post("/v2.0/networks", json=body, headers=MEMBER)
        assert r.status_code == 201, r.text
        # Still admin-only where the file says nothing.
        r2 = tuned.post("/v2.0/networks", json={"network": {"shared": True}}, headers=MEMBER)
        assert r2.status_code == 403
        net = r.json()["network"]["id"]
        port = create(tuned, "ports", headers=MEMBER, network_id=net)
        ids = [p["id"] for p in tuned.get("/v2.0/ports", headers=MEMBER).json()["ports"]]
        assert ids == [port["id"]]
        assert tuned.get("/v2.0/ports", headers=READER).json()["ports"] == []
        assert tuned.get(f"/v2.0/ports/{port['id']}", headers=READER).status_code == 404


def test_missing_policy_file_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="policy_file"):
        make_client(MemoryStore(), policy_file=tmp_path / "nope.yaml")
