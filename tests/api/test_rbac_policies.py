"""RBAC policies (`/v2.0/rbac-policies`) through the HTTP API: Neutron's contract, what a
policy lets its target see and use, the in-use checks, and races against revocation."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type

A = as_project("proj-a")
B = as_project("proj-b")
C = as_project("proj-c")


def policy(client: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    return client.post("/v2.0/rbac-policies", json={"rbac_policy": attrs}, headers=headers)


def share(
    client: TestClient,
    net: str,
    target: str,
    action: str = "access_as_shared",
    headers: dict[str, str] | None = A,
) -> dict[str, Any]:
    r = policy(
        client, headers, object_type="network", object_id=net, action=action, target_tenant=target
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()["rbac_policy"]
    return out


def net_of_a(client: TestClient, **attrs: Any) -> dict[str, Any]:
    net = create(client, "networks", A, name="a-net", **attrs)
    create(client, "subnets", A, network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    return net


def port(client: TestClient, net: str, headers: dict[str, str]) -> Any:
    return client.post("/v2.0/ports", json={"port": {"network_id": net}}, headers=headers)


def test_shared_with_one_project(client: TestClient) -> None:
    net = net_of_a(client)
    # Before: B neither sees the network nor can build on it (404, as Neutron).
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 404
    r = port(client, net["id"], B)
    assert r.status_code == 404 and error_type(r) == "NetworkNotFound"
    pol = share(client, net["id"], "proj-b")
    assert pol["object_type"] == "network" and pol["object_id"] == net["id"]
    assert pol["action"] == "access_as_shared"
    assert pol["target_tenant"] == "proj-b"
    assert pol["project_id"] == pol["tenant_id"] == "proj-a"
    # B sees it as shared (with B), C sees nothing, A (owner) sees it as not shared.
    seen = client.get(f"/v2.0/networks/{net['id']}", headers=B).json()["network"]
    assert seen["shared"] is True
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 404
    assert client.get(f"/v2.0/networks/{net['id']}", headers=A).json()["network"]["shared"] is False
    listed = client.get("/v2.0/networks?shared=true", headers=B).json()["networks"]
    assert [n["id"] for n in listed] == [net["id"]]
    assert client.get("/v2.0/networks", headers=C).json()["networks"] == []
    # B's subnets list shows the network's subnet; B may create ports, not subnets.
    assert len(client.get("/v2.0/subnets", headers=B).json()["subnets"]) == 1
    r = port(client, net["id"], B)
    assert r.status_code == 201, r.text
    r = client.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4}},
        headers=B,
    )
    assert r.status_code == 403, r.text
    assert port(client, net["id"], C).status_code == 404
    # Only the policy's owner (and admin) sees the policy.
    assert client.get(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 200
    r = client.get(f"/v2.0/rbac-policies/{pol['id']}", headers=B)
    assert r.status_code == 404 and error_type(r) == "RbacPolicyNotFound"
    assert client.get("/v2.0/rbac-policies", headers=B).json()["rbac_policies"] == []
    assert [p["id"] for p in client.get("/v2.0/rbac-policies").json()["rbac_policies"]] == [
        pol["id"]
    ]


def test_in_use_refusals_then_delete(client: TestClient) -> None:
    net = net_of_a(client)
    pol = share(client, net["id"], "proj-b")
    b_port = port(client, net["id"], B).json()["port"]
    # Deleting or narrowing while B has a port: 409 RbacPolicyInUse, nothing changed.
    r = client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A)
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse", r.text
    r = client.put(
        f"/v2.0/rbac-policies/{pol['id']}",
        json={"rbac_policy": {"target_tenant": "proj-c"}},
        headers=A,
    )
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    assert client.get(f"/v2.0/rbac-policies/{pol['id']}").json()["rbac_policy"][
        "target_tenant"
    ] == ("proj-b")
    assert port(client, net["id"], B).status_code == 201  # the failed revocation left no mark
    # Even widening to "*" is checked as the old target's delete, as Neutron does.
    r = client.put(f"/v2.0/rbac-policies/{pol['id']}", json={"rbac_policy": {"target_tenant": "*"}})
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    # Another policy covering B (the wildcard) makes the first removable.
    wild = share(client, net["id"], "*", headers=None)
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).json()["network"]["shared"] is True
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 204
    r = client.delete(f"/v2.0/rbac-policies/{wild['id']}")
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    # Without B's ports, the share goes, and B no longer sees the network.
    for p in client.get("/v2.0/ports", headers=B).json()["ports"]:
        assert client.delete(f"/v2.0/ports/{p['id']}", headers=B).status_code == 204
    assert b_port["project_id"] == "proj-b"
    assert client.delete(f"/v2.0/rbac-policies/{wild['id']}").status_code == 204
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 404
    assert client.get("/v2.0/rbac-policies").json()["rbac_policies"] == []


def test_update_target(client: TestClient) -> None:
    net = net_of_a(client)
    pol = share(client, net["id"], "proj-b")
    r = client.put(
        f"/v2.0/rbac-policies/{pol['id']}",
        json={"rbac_policy": {"target_tenant": "proj-c"}},
        headers=A,
    )
    assert r.status_code == 200, r.text
    # Neutron's body: only the target changed, and nothing beyond its attribute map
    # (no target_project, timestamps or revision) is shown.
    assert r.json()["rbac_policy"] == {**pol, "target_tenant": "proj-c"}
    assert set(pol) == {
        "id",
        "project_id",
        "tenant_id",
        "object_type",
        "object_id",
        "action",
        "target_tenant",
    }
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 404
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 200
    # Only the target may change: anything else is Neutron's read-only error.
    r = client.put(
        f"/v2.0/rbac-policies/{pol['id']}",
        json={"rbac_policy": {"action": "access_as_external"}},
        headers=A,
    )
    assert r.status_code == 400
    # A member may not widen to every project (restrict_wildcard).
    r = client.put(
        f"/v2.0/rbac-policies/{pol['id']}", json={"rbac_policy": {"target_tenant": "*"}}, headers=A
    )
    assert r.status_code == 403


def test_errors(client: TestClient) -> None:
    net = net_of_a(client)
    sg = create(client, "security-groups", A, name="g")
    base = {"object_id": net["id"], "action": "access_as_shared", "target_tenant": "proj-b"}
    # Unknown types (bgpvpn has no resource here) and invalid actions.
    r = policy(client, A, **{**base, "object_type": "bgpvpn"})
    assert r.status_code == 400 and error_type(r) == "InvalidInput"
    assert "not a valid RBAC object type" in r.json()["NeutronError"]["message"]
    r = policy(client, A, **{**base, "object_type": "network", "action": "access_as_owner"})
    assert r.status_code == 400 and error_type(r) == "InvalidActionForType"
    del sg
    # A member may not share with every project.
    r = policy(client, A, **{**base, "object_type": "network", "target_tenant": "*"})
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    # Missing target, unknown object, someone else's object.
    r = policy(client, A, object_type="network", object_id=net["id"], action="access_as_shared")
    assert r.status_code == 400
    r = policy(client, A, **{**base, "object_type": "network", "object_id": "0" * 8})
    assert r.status_code == 400 and error_type(r) == "InvalidInput"
    r = policy(client, C, **{**base, "object_type": "network"})
    assert r.status_code == 400 and error_type(r) == "InvalidInput"  # C cannot see it
    share(client, net["id"], "proj-b")
    r = policy(client, B, **{**base, "object_type": "network", "target_tenant": "proj-c"})
    assert r.status_code == 400 and "do not own" in r.json()["NeutronError"]["message"]
    # Duplicate.
    r = policy(client, A, **{**base, "object_type": "network"})
    assert r.status_code == 409 and error_type(r) == "DuplicateRbacPolicy"
    # Readers may not write; others may not delete what they cannot see.
    r = policy(
        client,
        as_project("proj-a", "reader"),
        **{**base, "object_type": "network", "target_tenant": "proj-c"},
    )
    assert r.status_code == 403
    pol = client.get("/v2.0/rbac-policies", headers=A).json()["rbac_policies"][0]
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=B).status_code == 404
    assert len(client.get("/v2.0/rbac-policies").json()["rbac_policies"]) == 1


def test_network_shared_attribute_is_the_wildcard_policy(client: TestClient) -> None:
    net = create(client, "networks", None, name="pub", shared=True, project_id="proj-a")
    pols = client.get(f"/v2.0/rbac-policies?object_id={net['id']}").json()["rbac_policies"]
    assert [(p["action"], p["target_tenant"], p["project_id"]) for p in pols] == [
        ("access_as_shared", "*", "proj-a")
    ]
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).json()["network"]["shared"] is True
    create(client, "subnets", A, network_id=net["id"], cidr="10.1.0.0/24", ip_version=4)
    c_port = port(client, net["id"], C).json()["port"]
    # Unsharing while C has a port: Neutron's InvalidSharedSetting; nothing changes.
    r = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"shared": False, "name": "x"}})
    assert r.status_code == 409 and error_type(r) == "InvalidSharedSetting"
    got = client.get(f"/v2.0/networks/{net['id']}").json()["network"]
    assert got["shared"] is True and got["name"] == "pub"
    # With a policy for C, unsharing is fine; the wildcard policy is gone.
    share(client, net["id"], "proj-c")
    r = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"shared": False, "name": "x"}})
    assert r.status_code == 200, r.text
    assert r.json()["network"]["name"] == "x" and r.json()["network"]["shared"] is False
    pols = client.get(f"/v2.0/rbac-policies?object_id={net['id']}").json()["rbac_policies"]
    assert [p["target_tenant"] for p in pols] == ["proj-c"]
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).json()["network"]["shared"] is True
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 404
    # Setting shared again creates the wildcard; deleting the network takes every policy.
    r = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"shared": True}})
    assert r.status_code == 200 and r.json()["network"]["shared"] is True
    assert len(client.get("/v2.0/rbac-policies").json()["rbac_policies"]) == 2
    assert client.delete(f"/v2.0/ports/{c_port['id']}").status_code == 204
    assert client.delete(f"/v2.0/networks/{net['id']}").status_code == 204
    assert client.get("/v2.0/rbac-policies").json()["rbac_policies"] == []
    # Nothing left behind: the same network and policies can be made again.
    net = create(client, "networks", None, name="pub", shared=True, project_id="proj-a")
    share(client, net["id"], "proj-c")


def external_net(client: TestClient, **attrs: Any) -> dict[str, Any]:
    net = create(
        client,
        "networks",
        None,
        name="ext",
        project_id="proj-a",
        **{"provider:network_type": "flat"},
        **attrs,
    )
    create(
        client,
        "subnets",
        None,
        network_id=net["id"],
        cidr="172.24.4.0/24",
        ip_version=4,
        project_id="proj-a",
    )
    return net


def test_access_as_external(client: TestClient) -> None:
    net = external_net(client)
    assert net["router:external"] is False
    router = create(client, "routers", B, name="rb")
    gw = {"router": {"external_gateway_info": {"network_id": net["id"]}}}
    r = client.put(f"/v2.0/routers/{router['id']}", json=gw, headers=B)
    assert r.status_code == 404, r.text  # B does not see it yet
    pol = share(client, net["id"], "proj-b", action="access_as_external", headers=None)
    # The network became external, visible to B (not shared: no ports for B), not to C.
    seen = client.get(f"/v2.0/networks/{net['id']}", headers=B).json()["network"]
    assert seen["router:external"] is True and seen["shared"] is False
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 404
    r = port(client, net["id"], B)
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    r = client.put(f"/v2.0/routers/{router['id']}", json=gw, headers=B)
    assert r.status_code == 200, r.text
    fip = client.post(
        "/v2.0/floatingips", json={"floatingip": {"floating_network_id": net["id"]}}, headers=B
    )
    assert fip.status_code == 201, fip.text
    r = client.post(
        "/v2.0/floatingips", json={"floatingip": {"floating_network_id": net["id"]}}, headers=C
    )
    assert r.status_code == 404
    # B's router depends on the policy.
    r = client.delete(f"/v2.0/rbac-policies/{pol['id']}")
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    r = client.put(
        f"/v2.0/routers/{router['id']}", json={"router": {"external_gateway_info": {}}}, headers=B
    )
    assert r.status_code == 200, r.text
    assert (
        client.delete(f"/v2.0/floatingips/{fip.json()['floatingip']['id']}", headers=B).status_code
        == 204
    )
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}").status_code == 204
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 404


def test_router_external_is_the_wildcard_external_policy(client: TestClient) -> None:
    net = external_net(client, **{"router:external": True})
    pols = client.get(f"/v2.0/rbac-policies?object_id={net['id']}").json()["rbac_policies"]
    assert [(p["action"], p["target_tenant"]) for p in pols] == [("access_as_external", "*")]
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 200
    r = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"router:external": False}})
    assert r.status_code == 200, r.text
    assert client.get("/v2.0/rbac-policies").json()["rbac_policies"] == []
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 404


def test_last_external_policy_delete_makes_the_network_internal(client: TestClient) -> None:
    """Neutron's AFTER_DELETE: the network stays external while any access_as_external
    policy is left, becomes internal with the last one, unless a gateway is on it."""
    net = external_net(client)
    b = share(client, net["id"], "proj-b", action="access_as_external", headers=None)
    wild = share(client, net["id"], "*", action="access_as_external", headers=None)
    assert client.delete(f"/v2.0/rbac-policies/{b['id']}").status_code == 204
    shown = client.get(f"/v2.0/networks/{net['id']}").json()["network"]
    assert shown["router:external"] is True
    router = create(client, "routers", None, name="r", project_id="proj-a")
    gw = {"router": {"external_gateway_info": {"network_id": net["id"]}}}
    r = client.put(f"/v2.0/routers/{router['id']}", json=gw)
    assert r.status_code == 200, r.text
    r = client.delete(f"/v2.0/rbac-policies/{wild['id']}")
    assert r.status_code == 409 and error_type(r) == "ExternalNetworkInUse", r.text
    shown = client.get(f"/v2.0/networks/{net['id']}").json()["network"]
    assert shown["router:external"] is True
    assert client.get(f"/v2.0/rbac-policies/{wild['id']}").status_code == 200
    no_gw = {"router": {"external_gateway_info": {}}}
    assert client.put(f"/v2.0/routers/{router['id']}", json=no_gw).status_code == 200
    assert client.delete(f"/v2.0/rbac-policies/{wild['id']}").status_code == 204
    shown = client.get(f"/v2.0/networks/{net['id']}").json()["network"]
    assert shown["router:external"] is False


def test_bulk_and_atomicity(client: TestClient) -> None:
    net = net_of_a(client)
    body = {
        "rbac_policies": [
            {
                "object_type": "network",
                "object_id": net["id"],
                "action": "access_as_shared",
                "target_tenant": t,
            }
            for t in ("proj-b", "proj-c")
        ]
    }
    r = client.post("/v2.0/rbac-policies", json=body, headers=A)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 200
    assert client.get(f"/v2.0/networks/{net['id']}", headers=C).status_code == 200
    # A bulk with one duplicate creates nothing.
    body["rbac_policies"][0]["target_tenant"] = "proj-d"
    r = client.post("/v2.0/rbac-policies", json=body, headers=A)
    assert r.status_code == 409 and error_type(r) == "DuplicateRbacPolicy"
    assert (
        client.get(f"/v2.0/networks/{net['id']}", headers=as_project("proj-d")).status_code == 404
    )
    assert len(client.get("/v2.0/rbac-policies").json()["rbac_policies"]) == 2


def test_revocation_races_port_creates(sqlite_client: TestClient) -> None:
    """Port creates by B racing the deletion of B's share, on SQLite: either the delete
    wins and B's later creates fail, or a port exists and the delete was refused. Never a
    port of B on a network no longer shared with B."""
    client = sqlite_client
    net = net_of_a(client)
    for _ in range(3):
        pol = share(client, net["id"], "proj-b")
        results: dict[str, int] = {}

        def make_ports(results: dict[str, int] = results) -> None:
            for i in range(6):
                results[f"port{i}"] = port(client, net["id"], B).status_code

        def revoke(results: dict[str, int] = results, pol: dict[str, Any] = pol) -> None:
            url = f"/v2.0/rbac-policies/{pol['id']}"
            results["delete"] = client.delete(url, headers=A).status_code

        threads = [threading.Thread(target=make_ports), threading.Thread(target=revoke)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ports = client.get(f"/v2.0/ports?network_id={net['id']}&project_id=proj-b").json()["ports"]
        shared = client.get(f"/v2.0/networks/{net['id']}", headers=B).status_code == 200
        assert results["delete"] in (204, 409), results
        if results["delete"] == 204:
            assert not ports and not shared, results
        else:
            assert ports and shared, results
        for p in ports:
            assert client.delete(f"/v2.0/ports/{p['id']}").status_code == 204
        if shared:
            assert client.delete(f"/v2.0/rbac-policies/{pol['id']}").status_code == 204


def share_obj(
    client: TestClient, otype: str, oid: str, target: str, headers: dict[str, str] | None = A
) -> dict[str, Any]:
    r = policy(
        client, headers, object_type=otype, object_id=oid, action="access_as_shared",
        target_tenant=target,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()["rbac_policy"]
    return out


def test_security_group_shared_with_a_project(client: TestClient) -> None:
    sg = create(client, "security-groups", A, name="web")
    net = create(client, "networks", B, name="b-net")
    create(client, "subnets", B, network_id=net["id"], cidr="10.2.0.0/24", ip_version=4)
    body = {"port": {"network_id": net["id"], "security_groups": [sg["id"]]}}
    # Before: B can neither see nor use A's group.
    assert client.get(f"/v2.0/security-groups/{sg['id']}", headers=B).status_code == 404
    assert client.post("/v2.0/ports", json=body, headers=B).status_code == 404
    r = policy(
        client,
        A,
        object_type="security_group",
        object_id=sg["id"],
        action="access_as_external",
        target_tenant="proj-b",
    )
    assert r.status_code == 400 and error_type(r) == "InvalidActionForType"
    pol = share_obj(client, "security_group", sg["id"], "proj-b")
    seen = client.get(f"/v2.0/security-groups/{sg['id']}", headers=B).json()["security_group"]
    assert seen["shared"] is True
    assert (
        client.get(f"/v2.0/security-groups/{sg['id']}", headers=A).json()["security_group"][
            "shared"
        ]
        is False
    )
    assert client.get(f"/v2.0/security-groups/{sg['id']}", headers=C).status_code == 404
    r = client.post("/v2.0/ports", json=body, headers=B)
    assert r.status_code == 201, r.text
    assert r.json()["port"]["security_groups"] == [sg["id"]]
    # B may not change A's group.
    r = client.put(
        f"/v2.0/security-groups/{sg['id']}", json={"security_group": {"name": "x"}}, headers=B
    )
    assert r.status_code == 403
    r = client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A)
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse"
    assert client.delete(f"/v2.0/ports/{r_id(client, B)}", headers=B).status_code == 204
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 204
    assert client.get(f"/v2.0/security-groups/{sg['id']}", headers=B).status_code == 404
    # The group's delete takes its policies with it.
    share_obj(client, "security_group", sg["id"], "proj-c")
    assert client.delete(f"/v2.0/security-groups/{sg['id']}", headers=A).status_code == 204
    assert client.get("/v2.0/rbac-policies").json()["rbac_policies"] == []


def r_id(client: TestClient, headers: dict[str, str]) -> str:
    ports = client.get("/v2.0/ports", headers=headers).json()["ports"]
    assert len(ports) == 1
    return str(ports[0]["id"])


def test_address_group_shared_with_a_project(client: TestClient) -> None:
    ag = create(client, "address-groups", A, name="ag", addresses=["10.5.0.0/24"])
    sg = create(client, "security-groups", B, name="b-sg")
    rule = {
        "security_group_rule": {
            "security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4",
            "remote_address_group_id": ag["id"],
        }
    }  # fmt: skip
    assert client.post("/v2.0/security-group-rules", json=rule, headers=B).status_code == 404
    pol = share_obj(client, "address_group", ag["id"], "proj-b")
    assert client.get(f"/v2.0/address-groups/{ag['id']}", headers=B).status_code == 200
    assert client.get(f"/v2.0/address-groups/{ag['id']}", headers=C).status_code == 404
    r = client.post("/v2.0/security-group-rules", json=rule, headers=B)
    assert r.status_code == 201, r.text
    r2 = client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A)
    assert r2.status_code == 409 and error_type(r2) == "RbacPolicyInUse"
    rid = r.json()["security_group_rule"]["id"]
    assert client.delete(f"/v2.0/security-group-rules/{rid}", headers=B).status_code == 204
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 204
    assert client.get(f"/v2.0/address-groups/{ag['id']}", headers=B).status_code == 404


def test_subnetpool_shared_with_a_project(client: TestClient) -> None:
    pool = create(
        client, "subnetpools", A, name="pool", prefixes=["10.80.0.0/16"], default_prefixlen=24
    )
    net = create(client, "networks", B, name="b-net")
    body = {"subnet": {"network_id": net["id"], "subnetpool_id": pool["id"], "ip_version": 4}}
    r = client.post("/v2.0/subnets", json=body, headers=B)
    assert r.status_code == 404, r.text
    pol = share_obj(client, "subnetpool", pool["id"], "proj-b")
    seen = client.get(f"/v2.0/subnetpools/{pool['id']}", headers=B).json()["subnetpool"]
    assert seen["shared"] is True
    r = client.post("/v2.0/subnets", json=body, headers=B)
    assert r.status_code == 201, r.text
    assert r.json()["subnet"]["cidr"] == "10.80.0.0/24"
    r2 = client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A)
    assert r2.status_code == 409 and error_type(r2) == "RbacPolicyInUse"
    sid = r.json()["subnet"]["id"]
    assert client.delete(f"/v2.0/subnets/{sid}", headers=B).status_code == 204
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 204
    assert client.get(f"/v2.0/subnetpools/{pool['id']}", headers=B).status_code == 404
    # `shared: true` at create (admin) is the wildcard policy.
    shared = create(client, "subnetpools", None, name="pub", prefixes=["10.90.0.0/16"], shared=True)
    pols = client.get(f"/v2.0/rbac-policies?object_id={shared['id']}").json()["rbac_policies"]
    assert [(p["object_type"], p["target_tenant"]) for p in pols] == [("subnetpool", "*")]
    assert (
        client.get(f"/v2.0/subnetpools/{shared['id']}", headers=C).json()["subnetpool"]["shared"]
        is True
    )


def test_address_scope_shared_with_a_project(client: TestClient) -> None:
    scope = create(client, "address-scopes", A, name="scope", ip_version=4)
    assert client.get(f"/v2.0/address-scopes/{scope['id']}", headers=B).status_code == 404
    pol = share_obj(client, "address_scope", scope["id"], "proj-b")
    seen = client.get(f"/v2.0/address-scopes/{scope['id']}", headers=B).json()["address_scope"]
    assert seen["shared"] is True
    # A's pool in the scope; B may put its own pool there too (Neutron's is_accessible:
    # the scope is shared with B), and then the policy is in use.
    a_pool = create(
        client, "subnetpools", A, name="p", prefixes=["10.70.0.0/16"], address_scope_id=scope["id"]
    )
    body = {"name": "bp", "prefixes": ["10.71.0.0/16"], "address_scope_id": scope["id"]}
    r = client.post("/v2.0/subnetpools", json={"subnetpool": body}, headers=B)
    assert r.status_code == 201, r.text
    b_pool = r.json()["subnetpool"]
    # A's pool is shared only with a project that may use the scope (Neutron: 400).
    r = policy(
        client,
        A,
        object_type="subnetpool",
        object_id=a_pool["id"],
        action="access_as_shared",
        target_tenant="proj-c",
    )
    assert r.status_code == 400 and error_type(r) == "InvalidInput", r.text
    share_obj(client, "subnetpool", a_pool["id"], "proj-b")
    r = client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A)
    assert r.status_code == 409 and error_type(r) == "RbacPolicyInUse", r.text
    assert client.delete(f"/v2.0/subnetpools/{b_pool['id']}", headers=B).status_code == 204
    assert client.delete(f"/v2.0/rbac-policies/{pol['id']}", headers=A).status_code == 204
    assert client.get(f"/v2.0/address-scopes/{scope['id']}", headers=B).status_code == 404
    # `shared: true` (admin) is the wildcard policy; it cannot be unshared by update.
    r = client.put(f"/v2.0/address-scopes/{scope['id']}", json={"address_scope": {"shared": True}})
    assert r.status_code == 200, r.text
    pols = client.get(f"/v2.0/rbac-policies?object_id={scope['id']}").json()["rbac_policies"]
    assert [p["target_tenant"] for p in pols] == ["*"]
    assert client.get(f"/v2.0/address-scopes/{scope['id']}", headers=C).status_code == 200


def test_rbac_policy_quota(client: TestClient) -> None:
    """Neutron's `rbac_policy` quota (default 10) counts the policies a project owns."""
    assert client.get("/v2.0/quotas/proj-a", headers=A).json()["quota"]["rbac_policy"] == 10
    r = client.put("/v2.0/quotas/proj-a", json={"quota": {"rbac_policy": 2}})
    assert r.status_code == 200, r.text
    net = net_of_a(client)
    share(client, net["id"], "proj-b")
    share(client, net["id"], "proj-c")
    r = policy(
        client,
        A,
        object_type="network",
        object_id=net["id"],
        action="access_as_shared",
        target_tenant="proj-d",
    )
    assert r.status_code == 409 and error_type(r) == "OverQuota", r.text
    details = client.get("/v2.0/quotas/proj-a/details").json()["quota"]["rbac_policy"]
    assert details == {"limit": 2, "used": 2, "reserved": 0}
    d = as_project("proj-d")
    assert client.get(f"/v2.0/networks/{net['id']}", headers=d).status_code == 404
