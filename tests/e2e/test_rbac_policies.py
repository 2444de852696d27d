"""A network shared by an RBAC policy carries the target project's traffic, on real OVS.

Project A owns a network and a VM on it. Project B cannot put a port there (404, as
Neutron) until A shares the network with B (`access_as_shared`, target B); then B's VM,
plugged on A's network, pings A's VM. The agents see nothing new: the policy is an API
matter, and the port is an ordinary port of the network.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.e2e.conftest import Chassis
from tests.southbound.conftest import in_netns

pytestmark = pytest.mark.system

A = {"X-Project-Id": "e2e-proj-a", "X-Roles": "member"}
B = {"X-Project-Id": "e2e-proj-b", "X-Roles": "member"}


def post(c: Chassis, path: str, key: str, headers: dict[str, str], **attrs: Any) -> Any:
    return requests.post(f"{c.base}/{path}", json={key: attrs}, headers=headers, timeout=10)


def created(resp: Any, key: str) -> dict[str, Any]:
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()[key]
    return out


def test_port_of_b_on_a_network_shared_with_b_passes_traffic(chassis: Chassis) -> None:
    c = chassis
    net = created(post(c, "networks", "network", A, name="a-net"), "network")
    created(
        post(c, "subnets", "subnet", A, network_id=net["id"], cidr="10.61.0.0/24", ip_version=4),
        "subnet",
    )
    # A's VM; A's default group admits ICMP from anywhere (B's VM is in B's default group).
    a_port = created(post(c, "ports", "port", A, network_id=net["id"], name="vm-a"), "port")
    groups = requests.get(f"{c.base}/security-groups?name=default", headers=A, timeout=10).json()[
        "security_groups"
    ]
    assert [g["id"] for g in groups] == a_port["security_groups"]
    created(
        post(
            c, "security-group-rules", "security_group_rule", A,
            security_group_id=groups[0]["id"], direction="ingress", ethertype="IPv4",
            protocol="icmp", remote_ip_prefix="0.0.0.0/0",
        ),
        "security_group_rule",
    )  # fmt: skip
    ns_a = c.plug(a_port)
    c.wait_active(a_port)
    ip_a = a_port["fixed_ips"][0]["ip_address"]

    # Before any policy, B sees no network and cannot create a port on it.
    assert requests.get(f"{c.base}/networks/{net['id']}", headers=B, timeout=10).status_code == 404
    refused = post(c, "ports", "port", B, network_id=net["id"], name="vm-b")
    assert refused.status_code == 404, refused.text
    assert refused.json()["NeutronError"]["type"] == "NetworkNotFound"

    policy = created(
        post(
            c, "rbac-policies", "rbac_policy", A, object_type="network",
            object_id=net["id"], action="access_as_shared", target_tenant=B["X-Project-Id"],
        ),
        "rbac_policy",
    )  # fmt: skip
    b_port = created(post(c, "ports", "port", B, network_id=net["id"], name="vm-b"), "port")
    assert b_port["project_id"] == B["X-Project-Id"]
    ns_b = c.plug(b_port)
    c.wait_active(b_port)

    ping = in_netns(ns_b, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip_a)
    assert ping.returncode == 0, ping.stdout + ping.stderr + c.agent_log()

    # B's port depends on the share: A cannot take it away while the port exists.
    resp = requests.delete(f"{c.base}/rbac-policies/{policy['id']}", headers=A, timeout=10)
    assert resp.status_code == 409 and resp.json()["NeutronError"]["type"] == "RbacPolicyInUse"
    del ns_a
