"""QoS through the HTTP API: policies, rules, rule types, attachment, defaults, sharing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type

ADMIN_A = as_project("pa", "admin,member,reader")
MEMBER_A = as_project("pa", "member,reader")
MEMBER_B = as_project("pb", "member,reader")
POL = "/v2.0/qos/policies"


def new_policy(api: TestClient, headers: dict[str, str] = ADMIN_A, **attrs: Any) -> Any:
    r = api.post(POL, json={"policy": attrs}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["policy"]


def add_rule(api: TestClient, pid: str, rtype: str, headers: Any = ADMIN_A, **attrs: Any) -> Any:
    return api.post(f"{POL}/{pid}/{rtype}_rules", json={f"{rtype}_rule": attrs}, headers=headers)


def test_policy_shape_defaults_tags_and_rules(client: TestClient) -> None:
    p = new_policy(client, name="gold", description="d", tags=["t1"])
    assert {k: p[k] for k in ("name", "description", "shared", "is_default", "rules", "tags")} == {
        "name": "gold",
        "description": "d",
        "shared": False,
        "is_default": False,
        "rules": [],
        "tags": ["t1"],
    }
    assert p["project_id"] == p["tenant_id"] == "pa" and p["revision_number"] == 0
    bw = add_rule(client, p["id"], "bandwidth_limit", max_kbps=3000)
    assert bw.status_code == 201, bw.text
    assert bw.json()["bandwidth_limit_rule"] == {
        "id": bw.json()["bandwidth_limit_rule"]["id"],
        "qos_policy_id": p["id"],
        "max_kbps": 3000,
        "max_burst_kbps": 0,
        "direction": "egress",
    }
    add_rule(client, p["id"], "bandwidth_limit", max_kbps=9000, direction="ingress")
    dscp = add_rule(client, p["id"], "dscp_marking", dscp_mark=26).json()["dscp_marking_rule"]
    pps = add_rule(client, p["id"], "packet_rate_limit", max_kpps=5).json()
    assert pps["packet_rate_limit_rule"]["max_burst_kpps"] == 0
    shown = client.get(f"{POL}/{p['id']}", headers=ADMIN_A).json()["policy"]
    assert [r["type"] for r in shown["rules"]] == [
        "bandwidth_limit",
        "bandwidth_limit",
        "dscp_marking",
        "packet_rate_limit",
    ]
    assert shown["revision_number"] == 4  # (each rule change bumps the policy, as Neutron)
    # Rule sub-resources: list, filter, show, update, delete.
    lst = client.get(f"{POL}/{p['id']}/bandwidth_limit_rules?direction=ingress", headers=ADMIN_A)
    assert [r["max_kbps"] for r in lst.json()["bandwidth_limit_rules"]] == [9000]
    r = client.put(
        f"{POL}/{p['id']}/dscp_marking_rules/{dscp['id']}",
        json={"dscp_marking_rule": {"dscp_mark": 46}},
        headers=ADMIN_A,
    )
    assert r.status_code == 200 and r.json()["dscp_marking_rule"]["dscp_mark"] == 46
    got = client.get(f"{POL}/{p['id']}/dscp_marking_rules/{dscp['id']}", headers=ADMIN_A)
    assert got.json()["dscp_marking_rule"]["dscp_mark"] == 46
    assert client.delete(f"{POL}/{p['id']}/dscp_marking_rules/{dscp['id']}").status_code == 204
    r = client.get(f"{POL}/{p['id']}/dscp_marking_rules/{dscp['id']}", headers=ADMIN_A)
    assert r.status_code == 404 and error_type(r) == "QosRuleNotFound"
    # fields and filters on policies; tags filter
    r = client.get(f"{POL}?name=gold&fields=id&fields=name", headers=ADMIN_A)
    assert r.json()["policies"] == [{"id": p["id"], "name": "gold"}]
    assert client.get(f"{POL}?tags=t1", headers=ADMIN_A).json()["policies"][0]["id"] == p["id"]
    assert client.get(f"{POL}?tags=zz", headers=ADMIN_A).json()["policies"] == []


@pytest.mark.parametrize(
    ("rtype", "body"),
    [
        ("bandwidth_limit", {}),
        ("bandwidth_limit", {"max_kbps": -1}),
        ("bandwidth_limit", {"max_kbps": 2**31}),
        ("bandwidth_limit", {"max_kbps": "fast"}),
        ("bandwidth_limit", {"max_kbps": 10, "direction": "sideways"}),
        ("bandwidth_limit", {"max_kbps": 10, "max_burst_kbps": -5}),
        ("bandwidth_limit", {"max_kbps": 10, "bogus": 1}),
        ("dscp_marking", {"dscp_mark": 7}),
        ("dscp_marking", {"dscp_mark": 64}),
        ("packet_rate_limit", {"max_kpps": -2}),
        ("packet_rate_limit", {"max_kpps": 1, "direction": "any"}),
    ],
)
def test_bad_rules_are_400_and_change_nothing(client: TestClient, rtype: str, body: Any) -> None:
    p = new_policy(client)
    r = add_rule(client, p["id"], rtype, **body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"NeutronError"}
    after = client.get(f"{POL}/{p['id']}", headers=ADMIN_A).json()["policy"]
    assert after["rules"] == [] and after["revision_number"] == 0


def test_one_rule_per_type_and_direction(client: TestClient) -> None:
    p = new_policy(client)
    assert add_rule(client, p["id"], "bandwidth_limit", max_kbps=1).status_code == 201
    r = add_rule(client, p["id"], "bandwidth_limit", max_kbps=2)
    assert r.status_code == 409 and error_type(r) == "QoSRulesConflict"
    assert add_rule(client, p["id"], "dscp_marking", dscp_mark=8).status_code == 201
    r = add_rule(client, p["id"], "dscp_marking", dscp_mark=10)
    assert r.status_code == 409 and error_type(r) == "QoSRulesConflict"
    ingress = add_rule(client, p["id"], "bandwidth_limit", max_kbps=2, direction="ingress")
    rid = ingress.json()["bandwidth_limit_rule"]["id"]
    # Turning the ingress rule into a second egress one is the same conflict.
    r = client.put(
        f"{POL}/{p['id']}/bandwidth_limit_rules/{rid}",
        json={"bandwidth_limit_rule": {"direction": "egress"}},
    )
    assert r.status_code == 409 and error_type(r) == "QoSRulesConflict"


def test_rule_types_are_what_the_dataplane_enforces(client: TestClient) -> None:
    types = client.get("/v2.0/qos/rule-types").json()["rule_types"]
    assert sorted(t["type"] for t in types) == [
        "bandwidth_limit",
        "dscp_marking",
        "packet_rate_limit",
    ]
    detail = client.get("/v2.0/qos/rule-types/bandwidth_limit").json()["rule_type"]
    assert detail["type"] == "bandwidth_limit" and detail["drivers"][0]["name"] == "wyvern"
    names = {p["parameter_name"] for p in detail["drivers"][0]["supported_parameters"]}
    assert names == {"max_kbps", "max_burst_kbps", "direction"}
    r = client.get("/v2.0/qos/rule-types/minimum_bandwidth")
    assert r.status_code == 404 and error_type(r) == "QosRuleTypeNotFound"
    # A minimum rule is refused, never accepted and ignored.
    p = new_policy(client)
    for rtype, attrs in (("minimum_bandwidth", {"min_kbps": 1000}), ("minimum_packet_rate", {})):
        r = add_rule(client, p["id"], rtype, **attrs)
        assert r.status_code == 409 and error_type(r) == "QosRuleNotSupported", r.text
        assert client.get(f"{POL}/{p['id']}/{rtype}_rules").json() == {f"{rtype}_rules": []}
    assert client.get(f"{POL}/{p['id']}").json()["policy"]["rules"] == []
    # A reader may list rule types (Neutron's get_rule_type: role:reader).
    assert client.get("/v2.0/qos/rule-types", headers=MEMBER_B).status_code == 200
    exts = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert {"qos", "qos-bw-limit-direction", "qos-default", "qos-rule-type-details"} <= exts
    assert {"qos-pps", "dscp-marking"} <= exts and "qos-fip" not in exts


def test_policies_are_admin_made_and_project_isolated(client: TestClient) -> None:
    r = client.post(POL, json={"policy": {"name": "x"}}, headers=MEMBER_A)
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    p = new_policy(client, name="mine")
    # Readable by its project's members, not by another project's (404, even to write).
    assert client.get(f"{POL}/{p['id']}", headers=MEMBER_A).status_code == 200
    r = client.get(f"{POL}/{p['id']}", headers=MEMBER_B)
    assert r.status_code == 404 and error_type(r) == "QosPolicyNotFound"
    assert client.get(POL, headers=MEMBER_B).json()["policies"] == []
    r = client.get(f"{POL}/{p['id']}/bandwidth_limit_rules", headers=MEMBER_B)
    assert r.status_code == 404
    r = add_rule(client, p["id"], "bandwidth_limit", headers=MEMBER_B, max_kbps=1)
    assert r.status_code == 404 and error_type(r) == "QosPolicyNotFound"
    assert client.delete(f"{POL}/{p['id']}", headers=MEMBER_B).status_code == 404
    # A member cannot add rules (admin only, as Neutron).
    r = add_rule(client, p["id"], "bandwidth_limit", headers=MEMBER_A, max_kbps=1)
    assert r.status_code == 403
    # Nor attach another project's policy to its network.
    r = client.post(
        "/v2.0/networks", json={"network": {"qos_policy_id": p["id"]}}, headers=MEMBER_B
    )
    assert r.status_code == 404 and error_type(r) == "QosPolicyNotFound"


def test_attach_show_and_in_use(client: TestClient) -> None:
    p = new_policy(client)
    net = create(client, "networks", headers=MEMBER_A, qos_policy_id=p["id"])
    assert net["qos_policy_id"] == p["id"]
    create(
        client, "subnets", headers=MEMBER_A, network_id=net["id"], cidr="10.0.0.0/24", ip_version=4
    )
    port = create(client, "ports", headers=MEMBER_A, network_id=net["id"])
    assert port["qos_policy_id"] is None and port["qos_network_policy_id"] == p["id"]
    other = new_policy(client)
    r = client.put(
        f"/v2.0/ports/{port['id']}", json={"port": {"qos_policy_id": other["id"]}}, headers=MEMBER_A
    )
    assert r.status_code == 200 and r.json()["port"]["qos_policy_id"] == other["id"]
    listed = client.get("/v2.0/ports", headers=MEMBER_A).json()["ports"]
    assert listed[0]["qos_network_policy_id"] == p["id"]
    filtered = client.get(f"/v2.0/ports?qos_policy_id={other['id']}", headers=MEMBER_A)
    assert [x["id"] for x in filtered.json()["ports"]] == [port["id"]]
    for pid, kind, oid in ((p["id"], "network", net["id"]), (other["id"], "port", port["id"])):
        r = client.delete(f"{POL}/{pid}")
        assert r.status_code == 409 and error_type(r) == "QosPolicyInUse"
        assert f"is used by {kind} {oid}" in r.json()["NeutronError"]["message"]
    r = client.put(
        f"/v2.0/ports/{port['id']}", json={"port": {"qos_policy_id": None}}, headers=MEMBER_A
    )
    assert r.json()["port"]["qos_policy_id"] is None
    assert client.delete(f"{POL}/{other['id']}").status_code == 204
    r = client.put(
        f"/v2.0/networks/{net['id']}",
        json={"network": {"qos_policy_id": "6f1c0f1e-0000-4000-8000-000000000000"}},
        headers=MEMBER_A,
    )
    assert r.status_code == 404 and error_type(r) == "QosPolicyNotFound"
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["qos_policy_id"] == p["id"]


def test_project_default_policy(client: TestClient) -> None:
    p = new_policy(client, is_default=True)
    r = client.post(POL, json={"policy": {"is_default": True}}, headers=ADMIN_A)
    assert r.status_code == 409 and error_type(r) == "QoSPolicyDefaultAlreadyExists"
    # New networks of the project get it; another project's do not; an explicit one wins.
    assert create(client, "networks", headers=MEMBER_A)["qos_policy_id"] == p["id"]
    assert create(client, "networks", headers=MEMBER_B)["qos_policy_id"] is None
    explicit = new_policy(client)
    net = create(client, "networks", headers=MEMBER_A, qos_policy_id=explicit["id"])
    assert net["qos_policy_id"] == explicit["id"]
    # Moving the default: unset, then another may take it.
    r = client.put(f"{POL}/{p['id']}", json={"policy": {"is_default": False}}, headers=ADMIN_A)
    assert r.status_code == 200 and r.json()["policy"]["is_default"] is False
    r = client.put(
        f"{POL}/{explicit['id']}", json={"policy": {"is_default": True}}, headers=ADMIN_A
    )
    assert r.status_code == 200
    assert create(client, "networks", headers=MEMBER_A)["qos_policy_id"] == explicit["id"]


def test_shared_and_rbac_access_as_shared(client: TestClient) -> None:
    shared = new_policy(client, shared=True)
    seen = client.get(f"{POL}/{shared['id']}", headers=MEMBER_B).json()["policy"]
    assert seen["shared"] is True
    net = create(client, "networks", headers=MEMBER_B, qos_policy_id=shared["id"])
    # Unsharing while project pb uses it: refused.
    r = client.put(f"{POL}/{shared['id']}", json={"policy": {"shared": False}}, headers=ADMIN_A)
    assert r.status_code == 409 and error_type(r) == "QosPolicyInUse"
    client.put(f"/v2.0/networks/{net['id']}", json={"network": {"qos_policy_id": None}})
    r = client.put(f"{POL}/{shared['id']}", json={"policy": {"shared": False}}, headers=ADMIN_A)
    assert r.status_code == 200 and r.json()["policy"]["shared"] is False
    assert client.get(f"{POL}/{shared['id']}", headers=MEMBER_B).status_code == 404
    # An RBAC policy shares it with pb alone.
    r = client.post(
        "/v2.0/rbac-policies",
        json={
            "rbac_policy": {
                "object_type": "qos_policy",
                "object_id": shared["id"],
                "action": "access_as_shared",
                "target_tenant": "pb",
            }
        },
        headers=ADMIN_A,
    )
    assert r.status_code == 201, r.text
    rbac_id = r.json()["rbac_policy"]["id"]
    assert client.get(f"{POL}/{shared['id']}", headers=MEMBER_B).json()["policy"]["shared"]
    assert client.get(f"{POL}/{shared['id']}", headers=as_project("pc")).status_code == 404
    net = create(client, "networks", headers=MEMBER_B, qos_policy_id=shared["id"])
    r = client.delete(f"/v2.0/rbac-policies/{rbac_id}", headers=ADMIN_A)
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    client.delete(f"/v2.0/networks/{net['id']}", headers=MEMBER_B)
    assert client.delete(f"/v2.0/rbac-policies/{rbac_id}", headers=ADMIN_A).status_code == 204
    # Deleting the policy takes its RBAC policies with it.
    client.post(
        "/v2.0/rbac-policies",
        json={
            "rbac_policy": {
                "object_type": "qos_policy",
                "object_id": shared["id"],
                "action": "access_as_shared",
                "target_tenant": "pb",
            }
        },
        headers=ADMIN_A,
    )
    assert client.delete(f"{POL}/{shared['id']}", headers=ADMIN_A).status_code == 204
    assert client.get("/v2.0/rbac-policies", headers=ADMIN_A).json()["rbac_policies"] == []


def test_pagination_and_sorting_of_policies(client: TestClient) -> None:
    made = sorted(new_policy(client, name=f"p{i}")["id"] for i in range(3))
    r = client.get(f"{POL}?limit=2&sort_key=id&sort_dir=asc", headers=ADMIN_A)
    page = r.json()
    assert [p["id"] for p in page["policies"]] == made[:2]
    nxt = client.get(f"{POL}?limit=2&sort_key=id&sort_dir=asc&marker={made[1]}", headers=ADMIN_A)
    assert [p["id"] for p in nxt.json()["policies"]] == made[2:]
    assert "policies_links" in page
    r = client.get(f"{POL}?bogus=1", headers=ADMIN_A)
    assert r.status_code == 400
