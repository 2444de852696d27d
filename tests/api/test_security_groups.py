"""Security groups and rules through the HTTP API (memory store; SQLite for races)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, error_type, make_client
from wyvern.api.repo import Repo
from wyvern.model.keys import uniq_prefix
from wyvern.nb.sqlite import SqliteStore

P1 = as_project("p1")
P2 = as_project("p2")
READER = as_project("p1", "reader")
SG = "/v2.0/security-groups"
RULES = "/v2.0/security-group-rules"


def create_sg(api: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    r = api.post(SG, json={"security_group": attrs}, headers=P1 if headers is None else headers)
    assert r.status_code == 201, r.text
    return r.json()["security_group"]


def create_rule(
    api: TestClient, sg_id: str, headers: dict[str, str] | None = None, **attrs: Any
) -> Any:
    attrs.setdefault("direction", "ingress")
    r = api.post(
        RULES,
        json={"security_group_rule": {"security_group_id": sg_id, **attrs}},
        headers=P1 if headers is None else headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["security_group_rule"]


def post_rule(api: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return api.post(
        RULES, json={"security_group_rule": body}, headers=P1 if headers is None else headers
    )


def groups(api: TestClient, headers: dict[str, str] | None = None, query: str = "") -> list[Any]:
    r = api.get(f"{SG}{query}", headers=P1 if headers is None else headers)
    assert r.status_code == 200, r.text
    result: list[Any] = r.json()["security_groups"]
    return result


def default_group(api: TestClient, headers: dict[str, str] | None = None) -> Any:
    found = [g for g in groups(api, headers) if g["name"] == "default"]
    assert len(found) == 1, found
    return found[0]


def rule_shape(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (rule["direction"], rule["ethertype"], rule["remote_group_id"])


def repo_of(api: TestClient) -> Repo:
    repo: Repo = api.app.state.api.state.repo  # type: ignore[attr-defined]
    return repo


def add_port_using(api: TestClient, sg_id: str) -> None:
    """A port object as the ports resource stores it (only the field that matters here)."""
    txn = repo_of(api).txn()
    txn.create("ports", {"id": "port-1", "project_id": "p1", "security_groups": [sg_id]}, "net-1")
    txn.commit()


def tcp_rule(sg_id: str, port: int) -> dict[str, Any]:
    return {
        "security_group_id": sg_id,
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": port,
        "port_range_max": port,
    }


def run_together(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run every call on its own thread, released at the same moment; results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


# ---- defaults -----------------------------------------------------------------------------
def test_new_group_defaults_and_its_two_egress_rules(client: TestClient) -> None:
    sg = create_sg(client, name="web", description="d")
    assert sg["name"] == "web" and sg["description"] == "d"
    assert sg["stateful"] is True and sg["shared"] is False
    assert sg["project_id"] == sg["tenant_id"] == "p1"
    assert sg["revision_number"] == 0 and sg["tags"] == []
    rules = sg["security_group_rules"]
    assert sorted(rule_shape(r) for r in rules) == [
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
    ]
    for r in rules:
        assert r["security_group_id"] == sg["id"] and r["project_id"] == "p1"
        assert r["protocol"] is None and r["port_range_min"] is None
        assert r["remote_ip_prefix"] is None and r["normalized_cidr"] is None
        assert r["remote_address_group_id"] is None
        assert r["belongs_to_default_sg"] is False
    shown = client.get(f"{SG}/{sg['id']}", headers=P1).json()["security_group"]
    assert {r["id"] for r in shown["security_group_rules"]} == {r["id"] for r in rules}


def test_default_group_has_four_rules_and_is_created_once(client: TestClient) -> None:
    create_sg(client, name="first")  # creating any group creates the default one first
    for _ in range(3):
        default = default_group(client)
    assert default["description"] == "Default security group"
    assert sorted(rule_shape(r) for r in default["security_group_rules"]) == [
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", default["id"]),
        ("ingress", "IPv6", default["id"]),
    ]
    assert all(r["belongs_to_default_sg"] for r in default["security_group_rules"])
    # Listing as another project creates that project's own default group.
    other = default_group(client, P2)
    assert other["id"] != default["id"] and other["project_id"] == "p2"
    # An admin filtering on one project gets (and creates) that project's default group.
    admin_view = groups(client, {}, "?project_id=p3&name=default")
    assert [g["project_id"] for g in admin_view] == ["p3"]


def test_default_group_created_once_under_concurrency(tmp_path: Path) -> None:
    """Two API replicas over one SQLite file, many first requests at once: one default."""
    db = str(tmp_path / "shared.db")
    with make_client(SqliteStore(db)) as a, make_client(SqliteStore(db)) as b:
        calls: list[Callable[[], Any]] = []
        for api in (a, b):
            res = api.app.state.api.state.resources["security_group"]  # type: ignore[attr-defined]
            calls += [partial(res.ensure_default, "p1")] * 2
            calls += [partial(api.get, SG, headers=P1)] * 2
        results = run_together(calls)
        listed = groups(a)
        assert [g["name"] for g in listed] == ["default"]
        ids = {r for r in results if isinstance(r, str)}
        assert ids == {listed[0]["id"]}
        assert all(r.status_code == 200 for r in results if not isinstance(r, str))
        assert len(listed[0]["security_group_rules"]) == 4
        assert len(repo_of(a).objects("security_group_rules")) == 4


# ---- names, updates -----------------------------------------------------------------------
def test_default_name_is_reserved(client: TestClient) -> None:
    for name in ("default", "Default"):
        r = client.post(SG, json={"security_group": {"name": name}}, headers=P1)
        assert r.status_code == 409 and error_type(r) == "SecurityGroupDefaultAlreadyExists"
    sg = create_sg(client, name="x")
    r = client.put(f"{SG}/{sg['id']}", json={"security_group": {"name": "default"}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "SecurityGroupDefaultAlreadyExists"
    default = default_group(client)
    r = client.put(f"{SG}/{default['id']}", json={"security_group": {"name": "d2"}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "SecurityGroupCannotUpdateDefault"
    r = client.put(
        f"{SG}/{default['id']}", json={"security_group": {"description": "mine"}}, headers=P1
    )
    assert r.status_code == 200 and r.json()["security_group"]["description"] == "mine"
    assert r.json()["security_group"]["revision_number"] == 1
    assert len(r.json()["security_group"]["security_group_rules"]) == 4


def test_update_rules_and_shared_are_read_only(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    bodies: list[dict[str, Any]] = [{"security_group_rules": []}, {"shared": True}, {"id": "x"}]
    for body in bodies:
        r = client.put(f"{SG}/{sg['id']}", json={"security_group": body}, headers=P1)
        assert r.status_code == 400, body
    r = client.post(SG, json={"security_group": {"shared": True}}, headers=P1)
    assert r.status_code == 400


def test_stateful_can_change_only_while_unused(client: TestClient) -> None:
    sg = create_sg(client, name="x", stateful=False)
    assert sg["stateful"] is False
    r = client.put(f"{SG}/{sg['id']}", json={"security_group": {"stateful": True}}, headers=P1)
    assert r.status_code == 200 and r.json()["security_group"]["stateful"] is True
    add_port_using(client, sg["id"])
    r = client.put(f"{SG}/{sg['id']}", json={"security_group": {"stateful": False}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "SecurityGroupInUse"
    # Not changing it is not a change.
    r = client.put(
        f"{SG}/{sg['id']}", json={"security_group": {"stateful": True, "name": "y"}}, headers=P1
    )
    assert r.status_code == 200


# ---- rule validation ----------------------------------------------------------------------
BAD_RULES: list[tuple[dict[str, Any], int, str]] = [
    ({"protocol": "foo"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": 256}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "-1"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": ["tcp"]}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": True}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "9" * 5000}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"port_range_min": 22, "port_range_max": 22}, 400, "SecurityGroupProtocolRequiredWithPorts"),
    (
        {"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
        400,
        "SecurityGroupInvalidPortRange",
    ),
    ({"protocol": "udp", "port_range_min": 90}, 400, "SecurityGroupInvalidPortRange"),
    (
        {"protocol": "tcp", "port_range_min": 0, "port_range_max": 10},
        400,
        "SecurityGroupInvalidPortValue",
    ),
    (
        {"protocol": "tcp", "port_range_min": 1, "port_range_max": 65536},
        400,
        "SecurityGroupInvalidPortValue",
    ),
    (
        {"protocol": "tcp", "port_range_min": "abc", "port_range_max": 1},
        400,
        "SecurityGroupInvalidPortValue",
    ),
    ({"protocol": "tcp", "port_range_min": -1}, 400, "SecurityGroupInvalidPortValue"),
    ({"protocol": "tcp", "port_range_min": {"a": 1}}, 400, "SecurityGroupInvalidPortValue"),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    (
        {"protocol": "icmp", "port_range_min": 8, "port_range_max": 300},
        400,
        "SecurityGroupInvalidIcmpValue",
    ),
    (
        {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},
        400,
        "SecurityGroupInvalidProtocolForPort",
    ),
    # OpenFlow cannot match DCCP or UDP-Lite ports: a range could not be enforced
    (
        {"protocol": "dccp", "port_range_min": 1, "port_range_max": 2},
        400,
        "SecurityGroupInvalidProtocolForPort",
    ),
    (
        {"protocol": "136", "port_range_min": 53, "port_range_max": 53},
        400,
        "SecurityGroupInvalidProtocolForPort",
    ),
    # IPv6 extension headers OVS skips to find the upper-layer protocol
    ({"protocol": "ipv6-route", "ethertype": "IPv6"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "hopopt", "ethertype": "IPv6"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "51", "ethertype": "IPv6"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"remote_ip_prefix": "::/0"}, 400, "SecurityGroupRuleParameterConflict"),
    (
        {"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"},
        400,
        "SecurityGroupRuleParameterConflict",
    ),
    ({"remote_ip_prefix": "10.0.0.0/33"}, 400, "InvalidCIDR"),
    ({"remote_ip_prefix": "bogus"}, 400, "InvalidCIDR"),
    ({"remote_ip_prefix": 167772160}, 400, "InvalidCIDR"),
    ({"remote_ip_prefix": "fe80::1%eth0"}, 400, "InvalidCIDR"),
    ({"protocol": "icmpv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "58"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"ethertype": "IPv5"}, 400, "InvalidInput"),
    ({"ethertype": 4}, 400, "InvalidInput"),
    ({"direction": "up"}, 400, "InvalidInput"),
    ({"direction": None}, 400, "InvalidInput"),
    ({"description": "x" * 256}, 400, "InvalidInput"),
    ({"normalized_cidr": "10.0.0.0/8"}, 400, "HTTPBadRequest"),
    ({"belongs_to_default_sg": True}, 400, "HTTPBadRequest"),
    ({"color": "blue"}, 400, "HTTPBadRequest"),
    ({"remote_group_id": "00000000-0000-0000-0000-000000000000"}, 404, "SecurityGroupNotFound"),
    ({"remote_address_group_id": "nope"}, 404, "AddressGroupNotFound"),
    ({"security_group_id": "nope"}, 404, "SecurityGroupNotFound"),
    ({"security_group_id": None}, 400, "InvalidInput"),
    ({"security_group_id": 7}, 400, "InvalidInput"),
]


@pytest.mark.parametrize(("extra", "status", "type_"), BAD_RULES)
def test_rule_validation_errors(
    client: TestClient, extra: dict[str, Any], status: int, type_: str
) -> None:
    sg = create_sg(client, name="x")
    r = post_rule(client, {"security_group_id": sg["id"], "direction": "ingress", **extra})
    assert r.status_code == status, r.text
    assert error_type(r) == type_
    assert len(r.text) < 2000  # huge inputs are not echoed back whole


def test_rule_remote_conflicts(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    ag = client.post("/v2.0/address-groups", json={"address_group": {"addresses": []}}, headers=P1)
    ag_id = ag.json()["address_group"]["id"]
    base = {"security_group_id": sg["id"], "direction": "ingress"}
    r = post_rule(client, {**base, "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": sg["id"]})
    assert r.status_code == 400 and error_type(r) == "SecurityGroupRemoteGroupAndRemoteIpPrefix"
    r = post_rule(client, {**base, "remote_group_id": sg["id"], "remote_address_group_id": ag_id})
    assert r.status_code == 400 and error_type(r) == "SecurityGroupMultipleRemoteEntites"
    r = post_rule(
        client, {**base, "remote_ip_prefix": "10.0.0.0/8", "remote_address_group_id": ag_id}
    )
    assert r.status_code == 400 and error_type(r) == "SecurityGroupMultipleRemoteEntites"
    rule = create_rule(client, sg["id"], remote_address_group_id=ag_id)
    assert rule["remote_address_group_id"] == ag_id


def test_missing_required_rule_attributes(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    r = post_rule(client, {"security_group_id": sg["id"]})
    assert r.status_code == 400 and "direction" in r.json()["NeutronError"]["message"]
    r = post_rule(client, {"direction": "ingress"})
    assert r.status_code == 400 and "security_group_id" in r.json()["NeutronError"]["message"]
    bad_bodies: list[Any] = [[], "x", None]
    for bad in bad_bodies:
        r = client.post(RULES, json={"security_group_rule": bad}, headers=P1)
        assert r.status_code == 400


def test_rule_normalisation(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"protocol": "TCP", "port_range_min": "80", "port_range_max": 80.0},
            {"protocol": "tcp", "port_range_min": 80, "port_range_max": 80},
        ),
        ({"protocol": 17}, {"protocol": "17"}),
        ({"protocol": "any", "ethertype": "ipv6"}, {"protocol": None, "ethertype": "IPv6"}),
        (
            {"protocol": 0, "direction": "egress", "remote_ip_prefix": "10.9.0.0/16"},
            {"protocol": None},
        ),
        ({"protocol": "icmp", "ethertype": "IPv6"}, {"protocol": "ipv6-icmp"}),
        (
            {"protocol": "icmpv6", "ethertype": "IPv6", "port_range_min": 128},
            {"protocol": "ipv6-icmp", "port_range_min": 128},
        ),
        ({"protocol": "1", "ethertype": "IPv6", "direction": "egress"}, {"protocol": "58"}),
        (
            {"protocol": "icmp", "port_range_min": 8, "port_range_max": 0},
            {"port_range_min": 8, "port_range_max": 0},
        ),
        (
            {"remote_ip_prefix": "10.0.0.5/24"},
            {"remote_ip_prefix": "10.0.0.5/24", "normalized_cidr": "10.0.0.0/24"},
        ),
        (
            {"remote_ip_prefix": "10.1.2.3"},
            {"remote_ip_prefix": "10.1.2.3/32", "normalized_cidr": "10.1.2.3/32"},
        ),
        (
            {"remote_ip_prefix": "2001:DB8::1/64", "ethertype": "IPv6"},
            {"remote_ip_prefix": "2001:db8::1/64", "normalized_cidr": "2001:db8::/64"},
        ),
        (
            {"remote_ip_prefix": "", "protocol": "sctp", "port_range_min": 5, "port_range_max": 6},
            {"remote_ip_prefix": None},
        ),
    ]
    for body, expected in cases:
        rule = create_rule(client, sg["id"], **body)
        for key, value in expected.items():
            assert rule[key] == value, (body, key, rule[key])
        assert rule["project_id"] == "p1" and rule["belongs_to_default_sg"] is False
        assert rule["revision_number"] == 0 and "name" not in rule


# ---- duplicates ---------------------------------------------------------------------------
def test_duplicate_rules_are_409(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    first = create_rule(client, sg["id"], protocol="tcp", port_range_min=22, port_range_max=22)
    same_things = [
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
        {"protocol": "6", "port_range_min": "22", "port_range_max": 22},
        {"protocol": "TCP", "port_range_min": 22, "port_range_max": 22, "description": "other"},
    ]
    for body in same_things:
        r = post_rule(client, {"security_group_id": sg["id"], "direction": "ingress", **body})
        assert r.status_code == 409 and error_type(r) == "SecurityGroupRuleExists", body
        assert first["id"] in r.json()["NeutronError"]["message"]
    # CIDRs compare by network, and "everything" is the same as no prefix.
    create_rule(client, sg["id"], remote_ip_prefix="10.0.0.0/24")
    r = post_rule(
        client,
        {"security_group_id": sg["id"], "direction": "ingress", "remote_ip_prefix": "10.0.0.9/24"},
    )
    assert r.status_code == 409 and error_type(r) == "SecurityGroupRuleExists"
    r = post_rule(
        client,
        {"security_group_id": sg["id"], "direction": "egress", "remote_ip_prefix": "0.0.0.0/0"},
    )
    assert r.status_code == 409 and error_type(r) == "SecurityGroupRuleExists"
    # Different ports, direction or group are different rules.
    create_rule(client, sg["id"], protocol="tcp", port_range_min=22, port_range_max=23)
    create_rule(
        client, sg["id"], direction="egress", protocol="tcp", port_range_min=22, port_range_max=22
    )
    other = create_sg(client, name="y")
    create_rule(client, other["id"], protocol="tcp", port_range_min=22, port_range_max=22)
    # Deleting the rule frees its identity.
    assert client.delete(f"{RULES}/{first['id']}", headers=P1).status_code == 204
    create_rule(client, sg["id"], protocol="tcp", port_range_min=22, port_range_max=22)


def test_duplicate_inside_one_bulk_creates_nothing(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    rule = {
        "security_group_id": sg["id"],
        "direction": "ingress",
        "protocol": "udp",
        "port_range_min": 53,
        "port_range_max": 53,
    }
    r = client.post(
        RULES, json={"security_group_rules": [rule, {**rule, "protocol": "17"}]}, headers=P1
    )
    assert r.status_code == 409 and error_type(r) == "DuplicateSecurityGroupRuleInPost"
    assert (
        len(
            client.get(f"{RULES}?security_group_id={sg['id']}", headers=P1).json()[
                "security_group_rules"
            ]
        )
        == 2
    )


def test_concurrent_duplicate_rules_create_one(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    with make_client(SqliteStore(db)) as a, make_client(SqliteStore(db)) as b:
        sg = create_sg(a, name="x")
        body = tcp_rule(sg["id"], 443)
        calls = [partial(post_rule, a if i % 2 else b, body) for i in range(8)]
        results = sorted(
            (r.status_code, r.json().get("NeutronError", {}).get("type", ""))
            for r in run_together(calls)
        )
        assert results == [(201, ""), *[(409, "SecurityGroupRuleExists")] * 7]
        rules = repo_of(a).objects("security_group_rules", sg["id"])
        assert len([r for r in rules if r["protocol"] == "tcp"]) == 1


# ---- bulk and inline ----------------------------------------------------------------------
def test_bulk_rules_are_atomic(any_client: TestClient) -> None:
    api = any_client
    sg = create_sg(api, name="x")
    good = {
        "security_group_id": sg["id"],
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 80,
    }
    bad_validation = {**good, "port_range_min": 81, "port_range_max": 80}
    bad_reference = {
        **good,
        "port_range_min": 82,
        "port_range_max": 82,
        "remote_group_id": "missing",
    }
    for bad, status in ((bad_validation, 400), (bad_reference, 404)):
        r = api.post(
            RULES,
            json={"security_group_rules": [good, {**good, "protocol": "udp"}, bad]},
            headers=P1,
        )
        assert r.status_code == status, r.text
        listed = api.get(f"{RULES}?security_group_id={sg['id']}", headers=P1).json()[
            "security_group_rules"
        ]
        assert len(listed) == 2  # just the automatic egress rules
    r = api.post(
        RULES, json={"security_group_rules": [good, {**good, "protocol": "udp"}]}, headers=P1
    )
    assert r.status_code == 201 and len(r.json()["security_group_rules"]) == 2
    shown = api.get(f"{SG}/{sg['id']}", headers=P1).json()["security_group"]
    assert len(shown["security_group_rules"]) == 4
    assert shown["revision_number"] == 1  # one revision per request, as Neutron's plugin


def test_inline_rules_on_group_create(any_client: TestClient) -> None:
    api = any_client
    peer = create_sg(api, name="peer")
    sg = create_sg(
        api,
        name="web",
        security_group_rules=[
            {
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 443,
                "port_range_max": 443,
            },
            {"direction": "ingress", "remote_group_id": peer["id"]},
            {"direction": "egress", "ethertype": "IPv6"},  # the same as an automatic rule
            {"direction": "egress", "remote_ip_prefix": "0.0.0.0/0"},  # so is this
        ],
    )
    shapes = sorted(
        (r["direction"], r["ethertype"], str(r["protocol"]), str(r["remote_group_id"]))
        for r in sg["security_group_rules"]
    )
    assert shapes == [
        ("egress", "IPv4", "None", "None"),
        ("egress", "IPv6", "None", "None"),
        ("ingress", "IPv4", "None", peer["id"]),
        ("ingress", "IPv4", "tcp", "None"),
    ]
    assert all(r["security_group_id"] == sg["id"] for r in sg["security_group_rules"])
    before = len(repo_of(api).objects("security_groups"))
    failures: list[tuple[Any, int, str]] = [
        ([{"direction": "ingress", "security_group_id": peer["id"]}], 400, "HTTPBadRequest"),
        ([{"direction": "ingress", "protocol": "nope"}], 400, "SecurityGroupRuleInvalidProtocol"),
        (
            [{"direction": "ingress"}, {"direction": "ingress"}],
            409,
            "DuplicateSecurityGroupRuleInPost",
        ),
        ([{"direction": "ingress", "remote_group_id": "missing"}], 404, "SecurityGroupNotFound"),
        (["tcp"], 400, "InvalidInput"),
        ("tcp", 400, "InvalidInput"),
    ]
    for rules, status, type_ in failures:
        r = api.post(
            SG, json={"security_group": {"name": "bad", "security_group_rules": rules}}, headers=P1
        )
        assert r.status_code == status and error_type(r) == type_, (rules, r.text)
    assert len(repo_of(api).objects("security_groups")) == before
    assert not [g for g in groups(api) if g["name"] == "bad"]


# ---- deleting -----------------------------------------------------------------------------
def test_delete_group_removes_its_rules_and_their_claims(any_client: TestClient) -> None:
    api = any_client
    sg = create_sg(api, name="x")
    create_rule(api, sg["id"], protocol="tcp", port_range_min=1, port_range_max=2)
    other = create_sg(api, name="y")
    pointing = create_rule(api, other["id"], remote_group_id=sg["id"])
    assert api.delete(f"{SG}/{sg['id']}", headers=P1).status_code == 204
    r = api.get(f"{SG}/{sg['id']}", headers=P1)
    assert r.status_code == 404 and error_type(r) == "SecurityGroupNotFound"
    repo = repo_of(api)
    assert repo.objects("security_group_rules", sg["id"]) == []
    assert repo.claims(uniq_prefix("sgrule", sg["id"])) == {}
    # Neutron cascades rules of other groups that name the deleted one as their remote.
    r = api.get(f"{RULES}/{pointing['id']}", headers=P1)
    assert r.status_code == 404 and error_type(r) == "SecurityGroupRuleNotFound"
    assert (
        len(
            api.get(f"{SG}/{other['id']}", headers=P1).json()["security_group"][
                "security_group_rules"
            ]
        )
        == 2
    )
    r = api.delete(f"{SG}/{sg['id']}", headers=P1)
    assert r.status_code == 404


def test_rule_changes_revise_their_group(any_client: TestClient) -> None:
    """Neutron revises a group (revision_number and updated_at) on each change to its
    rules, including a rule removed because the group it named was deleted."""
    api = any_client

    def shown(sg_id: str) -> Any:
        return api.get(f"{SG}/{sg_id}", headers=P1).json()["security_group"]

    sg = create_sg(api, name="web")
    rule = create_rule(api, sg["id"], protocol="tcp", port_range_min=60, port_range_max=70)
    added = shown(sg["id"])
    assert added["revision_number"] > sg["revision_number"]
    assert added["updated_at"] >= sg["updated_at"]
    assert api.delete(f"{RULES}/{rule['id']}", headers=P1).status_code == 204
    removed = shown(sg["id"])
    assert removed["revision_number"] > added["revision_number"]
    # A bulk create revises the group too, and If-Match then sees the new revision.
    r = api.post(
        RULES,
        json={
            "security_group_rules": [
                {"security_group_id": sg["id"], "direction": "ingress", "protocol": "udp"},
                {"security_group_id": sg["id"], "direction": "ingress", "protocol": "icmp"},
            ]
        },
        headers=P1,
    )
    assert r.status_code == 201, r.text
    bulk = shown(sg["id"])
    assert bulk["revision_number"] > removed["revision_number"]
    # Deleting a group that another group's rule names revises that other group.
    doomed = create_sg(api, name="doomed")
    create_rule(api, sg["id"], remote_group_id=doomed["id"])
    before = shown(sg["id"])
    assert api.delete(f"{SG}/{doomed['id']}", headers=P1).status_code == 204
    after = shown(sg["id"])
    assert after["revision_number"] > before["revision_number"]
    assert len(after["security_group_rules"]) == len(bulk["security_group_rules"])


def test_delete_group_in_use_is_409(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    add_port_using(client, sg["id"])
    r = client.delete(f"{SG}/{sg['id']}", headers=P1)
    assert r.status_code == 409 and error_type(r) == "SecurityGroupInUse"
    assert r.json()["NeutronError"]["message"] == f"Security Group {sg['id']} in use."
    # The failed delete left the group usable.
    create_rule(client, sg["id"], protocol="tcp", port_range_min=5, port_range_max=5)
    assert client.get(f"{SG}/{sg['id']}", headers=P1).status_code == 200


def test_default_group_delete_rules(client: TestClient) -> None:
    default = default_group(client)
    r = client.delete(f"{SG}/{default['id']}", headers=P1)
    assert r.status_code == 409 and error_type(r) == "SecurityGroupCannotRemoveDefault"
    # An admin may; the next use creates a fresh default group.
    assert client.delete(f"{SG}/{default['id']}").status_code == 204
    again = default_group(client)
    assert again["id"] != default["id"] and len(again["security_group_rules"]) == 4


def test_delete_races_never_leave_orphan_rules(tmp_path: Path) -> None:
    """Rule creates racing the group's delete: either they fail or the delete does."""
    db = str(tmp_path / "shared.db")
    with make_client(SqliteStore(db)) as a, make_client(SqliteStore(db)) as b:
        for round_ in range(20):
            sg = create_sg(a, name=f"x{round_}")
            calls: list[Callable[[], Any]] = [
                partial(post_rule, a if i % 2 else b, tcp_rule(sg["id"], 100 + i)) for i in range(4)
            ]
            calls.append(partial(b.delete, f"{SG}/{sg['id']}", headers=P1))
            statuses = [r.status_code for r in run_together(calls)]
            assert set(statuses) <= {201, 204, 404}, statuses
            repo = repo_of(a)
            if repo.get("security_groups", sg["id"]) is None:
                assert statuses[-1] == 204
                assert repo.objects("security_group_rules", sg["id"]) == []
                assert repo.claims(uniq_prefix("sgrule", sg["id"])) == {}


# ---- rules: read-only, filters, tags ------------------------------------------------------
def test_rules_cannot_be_updated(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    rule = sg["security_group_rules"][0]
    for body in ({"description": "x"}, {"direction": "ingress"}, {}):
        r = client.put(f"{RULES}/{rule['id']}", json={"security_group_rule": body}, headers=P1)
        assert r.status_code == 400, body
    r = client.put(f"{RULES}/missing", json={"security_group_rule": {}}, headers=P1)
    assert r.status_code == 404 and error_type(r) == "SecurityGroupRuleNotFound"
    assert client.get(f"{RULES}/{rule['id']}", headers=P1).json()["security_group_rule"] == rule


def test_rule_filters_fields_and_tags(client: TestClient) -> None:
    a = create_sg(client, name="a")
    b = create_sg(client, name="b")
    create_rule(client, a["id"], protocol="tcp", port_range_min=80, port_range_max=80, tags=["web"])
    create_rule(
        client,
        b["id"],
        protocol="udp",
        port_range_min=53,
        port_range_max=53,
        remote_ip_prefix="10.0.0.1/8",
    )

    def ids(query: str) -> int:
        r = client.get(f"{RULES}?{query}", headers=P1)
        assert r.status_code == 200, r.text
        return len(r.json()["security_group_rules"])

    assert ids(f"security_group_id={a['id']}") == 3
    assert ids(f"security_group_id={a['id']}&security_group_id={b['id']}") == 6
    assert ids("protocol=tcp") == 1 and ids("protocol=TCP") == 1
    assert ids("port_range_min=80") == 1 and ids("direction=egress") == 6
    assert ids("normalized_cidr=10.0.0.0/8") == 1 and ids("tags=web") == 1
    assert ids("belongs_to_default_sg=true") == 4  # the default group's
    assert client.get(f"{RULES}?protocol=bogus", headers=P1).status_code == 400
    assert client.get(f"{RULES}?colour=red", headers=P1).status_code == 400
    r = client.get(
        f"{RULES}?fields=id&fields=protocol&direction=ingress&security_group_id={a['id']}",
        headers=P1,
    )
    assert r.json()["security_group_rules"] == [
        {"id": r.json()["security_group_rules"][0]["id"], "protocol": "tcp"}
    ]
    r = client.get(f"{SG}?fields=id&fields=security_group_rules&name=a", headers=P1)
    [only] = r.json()["security_groups"]
    assert set(only) == {"id", "security_group_rules"} and len(only["security_group_rules"]) == 3
    rule_id = only["security_group_rules"][0]["id"]
    assert client.put(f"{RULES}/{rule_id}/tags/blue", headers=P1).status_code == 201
    assert (
        "blue" in client.get(f"{RULES}/{rule_id}", headers=P1).json()["security_group_rule"]["tags"]
    )
    sg = create_sg(client, name="tagged", tags=["t1", "t1", "t2"])
    assert sg["tags"] == ["t1", "t2"]


# ---- policy -------------------------------------------------------------------------------
def test_projects_are_isolated(client: TestClient) -> None:
    sg = create_sg(client, name="mine")
    rule = create_rule(client, sg["id"], protocol="tcp", port_range_min=1, port_range_max=1)
    theirs = create_sg(client, P2, name="theirs")
    for method, url, body in (
        ("GET", f"{SG}/{sg['id']}", None),
        ("PUT", f"{SG}/{sg['id']}", {"security_group": {"name": "z"}}),
        ("DELETE", f"{SG}/{sg['id']}", None),
    ):
        r = client.request(method, url, json=body, headers=P2)
        assert r.status_code == 404 and error_type(r) == "SecurityGroupNotFound", method
    r = client.get(f"{RULES}/{rule['id']}", headers=P2)
    assert r.status_code == 404 and error_type(r) == "SecurityGroupRuleNotFound"
    assert client.delete(f"{RULES}/{rule['id']}", headers=P2).status_code == 404
    r = post_rule(client, {"security_group_id": sg["id"], "direction": "ingress"}, P2)
    assert r.status_code == 404 and error_type(r) == "SecurityGroupNotFound"
    r = post_rule(
        client,
        {"security_group_id": theirs["id"], "direction": "ingress", "remote_group_id": sg["id"]},
        P2,
    )
    assert r.status_code == 404 and error_type(r) == "SecurityGroupNotFound"
    assert {g["name"] for g in groups(client, P2)} == {"default", "theirs"}
    assert all(
        r["project_id"] == "p2"
        for r in client.get(RULES, headers=P2).json()["security_group_rules"]
    )
    r = client.post(SG, json={"security_group": {"name": "n", "project_id": "p2"}}, headers=P1)
    assert r.status_code == 400  # (neutron-lib: naming another project needs admin)
    # An admin may add rules to any group; they belong to the group's project.
    admin_rule = create_rule(
        client, sg["id"], {}, protocol="udp", port_range_min=1, port_range_max=1
    )
    assert admin_rule["project_id"] == "p1"
    assert client.get(f"{RULES}/{admin_rule['id']}", headers=P1).status_code == 200
    r = client.post(SG, json={"security_group": {"name": "n", "project_id": "p2"}})
    assert r.status_code == 201  # an admin may create it for p2
    # The requests p2 saw refused succeed for p1, the owner.
    assert client.get(f"{SG}/{sg['id']}", headers=P1).status_code == 200
    assert client.get(f"{RULES}/{rule['id']}", headers=P1).status_code == 200
    r = post_rule(client, {"security_group_id": sg["id"], "direction": "ingress"}, P1)
    assert r.status_code == 201, r.text
    mine = create_sg(client, P1, name="mine too")
    r = post_rule(
        client,
        {"security_group_id": mine["id"], "direction": "ingress", "remote_group_id": sg["id"]},
        P1,
    )
    assert r.status_code == 201, r.text
    r = client.put(f"{SG}/{sg['id']}", json={"security_group": {"name": "z"}}, headers=P1)
    assert r.status_code == 200
    assert client.delete(f"{RULES}/{rule['id']}", headers=P1).status_code == 204
    assert client.delete(f"{SG}/{mine['id']}", headers=P1).status_code == 204
    assert client.delete(f"{SG}/{sg['id']}", headers=P1).status_code == 204


def test_reader_cannot_write(client: TestClient) -> None:
    sg = create_sg(client, name="x")
    assert client.get(SG, headers=READER).status_code == 200
    assert client.get(f"{SG}/{sg['id']}", headers=READER).status_code == 200
    for method, url, body in (
        ("POST", SG, {"security_group": {"name": "r"}}),
        ("PUT", f"{SG}/{sg['id']}", {"security_group": {"name": "r"}}),
        ("DELETE", f"{SG}/{sg['id']}", None),
        (
            "POST",
            RULES,
            {"security_group_rule": {"security_group_id": sg["id"], "direction": "ingress"}},
        ),
        ("DELETE", f"{RULES}/{sg['security_group_rules'][0]['id']}", None),
    ):
        r = client.request(method, url, json=body, headers=READER)
        assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized", (method, url)
    # A member of the same project makes each of these writes.
    for method, url, body, status in (
        ("POST", SG, {"security_group": {"name": "r"}}, 201),
        ("PUT", f"{SG}/{sg['id']}", {"security_group": {"name": "r"}}, 200),
        (
            "POST",
            RULES,
            {"security_group_rule": {"security_group_id": sg["id"], "direction": "ingress"}},
            201,
        ),
        ("DELETE", f"{RULES}/{sg['security_group_rules'][0]['id']}", None, 204),
        ("DELETE", f"{SG}/{sg['id']}", None, 204),
    ):
        r = client.request(method, url, json=body, headers=P1)
        assert r.status_code == status, (method, url, r.text)


# ---- quotas -------------------------------------------------------------------------------
def test_rule_and_group_quotas(client: TestClient) -> None:
    r = client.put(
        "/v2.0/quotas/p1", json={"quota": {"security_group_rule": 7, "security_group": 3}}
    )
    assert r.status_code == 200
    sg = create_sg(client, name="x")  # default group (4 rules) + this one (2 rules) = 6
    create_rule(client, sg["id"], protocol="tcp", port_range_min=1, port_range_max=1)
    r = post_rule(
        client, {"security_group_id": sg["id"], "direction": "ingress", "protocol": "udp"}
    )
    assert r.status_code == 409 and error_type(r) == "OverQuota"
    assert "security_group_rule" in r.json()["NeutronError"]["message"]
    # A group needs room for its automatic rules too.
    r = client.post(SG, json={"security_group": {"name": "y"}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "OverQuota"
    client.put("/v2.0/quotas/p1", json={"quota": {"security_group_rule": -1}})
    create_sg(client, name="y")
    r = client.post(SG, json={"security_group": {"name": "z"}}, headers=P1)
    assert r.status_code == 409 and error_type(r) == "OverQuota"
    assert "security_group" in r.json()["NeutronError"]["message"]
    assert len(groups(client)) == 3


# ---- malformed input ----------------------------------------------------------------------
MALFORMED: list[Any] = [
    {"security_group": []},
    {"security_group": {"name": 5}},
    {"security_group": {"name": "x" * 300}},
    {"security_group": {"stateful": "maybe"}},
    {"security_group": {"security_group_rules": {"direction": "ingress"}}},
    {"security_group": {"security_group_rules": [None]}},
    {
        "security_group": {
            "security_group_rules": [
                {"direction": "ingress", "port_range_min": 1.5, "protocol": "tcp"}
            ]
        }
    },
    {"security_group": {"tags": "x"}},
    {"security_groups": []},
    {"security_groups": [{"name": "a"}, 3]},
    {"security_group": {"name": "a"}, "extra": 1},
    {"security_group_rule": {"direction": "ingress"}},
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_group_bodies_are_400(client: TestClient, body: Any) -> None:
    r = client.post(SG, json=body, headers=P1)
    assert r.status_code == 400, r.text
    error_type(r)
