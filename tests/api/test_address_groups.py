"""Address groups through the HTTP API: addresses, the add/remove actions, in-use deletes."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, error_type, make_client
from tests.api.test_security_groups import create_sg, post_rule, repo_of, run_together
from wyvern.nb.sqlite import SqliteStore

P1 = as_project("p1")
P2 = as_project("p2")
READER = as_project("p1", "reader")
AG = "/v2.0/address-groups"


def create_ag(api: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    r = api.post(AG, json={"address_group": attrs}, headers=P1 if headers is None else headers)
    assert r.status_code == 201, r.text
    return r.json()["address_group"]


def change(api: TestClient, ag_id: str, action: str, addresses: Any, headers: Any = None) -> Any:
    return api.put(
        f"{AG}/{ag_id}/{action}",
        json={"addresses": addresses},
        headers=P1 if headers is None else headers,
    )


def test_create_defaults_and_normalisation(client: TestClient) -> None:
    ag = create_ag(
        client,
        name="web",
        addresses=["10.0.0.5/32", "10.0.0.0/24", "10.0.0.7/24", "2001:DB8::1/128", "2001:db8::/32"],
    )
    assert ag["addresses"] == ["10.0.0.5/32", "10.0.0.0/24", "2001:db8::1/128", "2001:db8::/32"]
    assert ag["name"] == "web" and ag["description"] == ""
    assert ag["project_id"] == ag["tenant_id"] == "p1"
    assert ag["revision_number"] == 0 and ag["tags"] == []
    empty = create_ag(client)
    assert empty["addresses"] == [] and empty["name"] == ""
    listed = client.get(AG, headers=P1).json()["address_groups"]
    assert {a["id"] for a in listed} == {ag["id"], empty["id"]}
    assert client.get(f"{AG}?name=web", headers=P1).json()["address_groups"] == [ag]


@pytest.mark.parametrize(
    "body",
    [
        {"addresses": ["10.0.0.0/33"]},
        {"addresses": ["bogus"]},
        # neutron-lib's subnet_list: a prefix length is required, and no item twice.
        {"addresses": ["10.20.30.40"]},
        {"addresses": ["2001:db8::1"]},
        {"addresses": ["10.0.0.0/24", "10.0.0.0/24"]},
        {"addresses": ["fe80::1%eth0"]},
        {"addresses": "10.0.0.0/8"},
        {"addresses": [None]},
        {"addresses": ["1" * 100]},
        {"name": "x" * 256},
        {"shared": True},
        {"colour": "red"},
    ],
)
def test_create_rejects_bad_bodies(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post(AG, json={"address_group": body}, headers=P1)
    assert r.status_code == 400, r.text
    error_type(r)
    assert client.get(AG, headers=P1).json()["address_groups"] == []


def test_add_and_remove_addresses(any_client: TestClient) -> None:
    api = any_client
    ag = create_ag(api, addresses=["10.0.0.0/24"])
    r = change(api, ag["id"], "add_addresses", ["192.168.1.1", "192.168.1.1/32", "fd00::/8"])
    assert r.status_code == 200, r.text
    body = r.json()["address_group"]
    assert body["addresses"] == ["10.0.0.0/24", "192.168.1.1/32", "fd00::/8"]
    assert body["revision_number"] == 1
    # Adding one that is there changes nothing and names it (Neutron's AddressesAlreadyExist).
    r = change(api, ag["id"], "add_addresses", ["172.16.0.0/12", "10.0.0.9/24"])
    assert r.status_code == 400 and error_type(r) == "AddressesAlreadyExist"
    assert "10.0.0.0/24" in r.json()["NeutronError"]["message"]
    r = change(api, ag["id"], "remove_addresses", ["10.0.0.0/24", "8.8.8.8"])
    assert r.status_code == 404 and error_type(r) == "AddressesNotFound"
    assert "8.8.8.8/32" in r.json()["NeutronError"]["message"]
    shown = api.get(f"{AG}/{ag['id']}", headers=P1).json()["address_group"]
    assert shown["addresses"] == ["10.0.0.0/24", "192.168.1.1/32", "fd00::/8"]
    assert shown["revision_number"] == 1
    r = change(api, ag["id"], "remove_addresses", ["10.0.0.1/24", "fd00::/8"])
    assert r.status_code == 200
    assert r.json()["address_group"]["addresses"] == ["192.168.1.1/32"]
    assert r.json()["address_group"]["revision_number"] == 2


def test_action_bodies_are_validated(client: TestClient) -> None:
    ag = create_ag(client)
    url = f"{AG}/{ag['id']}/add_addresses"
    bodies: list[Any] = [
        {},
        {"addresses": "10.0.0.0/8"},
        {"addresses": ["x"]},
        [],
        {"addresses": [], "x": 1},
    ]
    for body in bodies:
        r = client.put(url, json=body, headers=P1)
        assert r.status_code == 400, body
        error_type(r)
    r = client.put(url, content=b"{", headers=P1)
    assert r.status_code == 400
    r = change(client, "missing", "add_addresses", ["10.0.0.0/8"])
    assert r.status_code == 404 and error_type(r) == "AddressGroupNotFound"


def test_addresses_change_only_through_actions(client: TestClient) -> None:
    ag = create_ag(client, addresses=["10.0.0.0/8"])
    r = client.put(f"{AG}/{ag['id']}", json={"address_group": {"addresses": []}}, headers=P1)
    assert r.status_code == 400
    r = client.put(
        f"{AG}/{ag['id']}", json={"address_group": {"name": "n", "description": "d"}}, headers=P1
    )
    assert r.status_code == 200
    updated = r.json()["address_group"]
    assert (updated["name"], updated["description"]) == ("n", "d")
    assert updated["addresses"] == ["10.0.0.0/8"]


def test_delete_in_use_by_a_rule(any_client: TestClient) -> None:
    api = any_client
    ag = create_ag(api, addresses=["10.0.0.0/8"])
    sg = create_sg(api, name="x")
    r = post_rule(
        api,
        {
            "security_group_id": sg["id"],
            "direction": "ingress",
            "remote_address_group_id": ag["id"],
        },
    )
    assert r.status_code == 201
    rule = r.json()["security_group_rule"]
    r = api.delete(f"{AG}/{ag['id']}", headers=P1)
    assert r.status_code == 409 and error_type(r) == "AddressGroupInUse"
    # The refused delete left the group whole and usable.
    assert change(api, ag["id"], "add_addresses", ["11.0.0.0/8"]).status_code == 200
    assert api.delete(f"/v2.0/security-group-rules/{rule['id']}", headers=P1).status_code == 204
    assert api.delete(f"{AG}/{ag['id']}", headers=P1).status_code == 204
    r = api.get(f"{AG}/{ag['id']}", headers=P1)
    assert r.status_code == 404 and error_type(r) == "AddressGroupNotFound"
    r = post_rule(
        api,
        {
            "security_group_id": sg["id"],
            "direction": "ingress",
            "remote_address_group_id": ag["id"],
        },
    )
    assert r.status_code == 404 and error_type(r) == "AddressGroupNotFound"


def test_delete_racing_rule_creates_leaves_no_dangling_reference(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    with make_client(SqliteStore(db)) as a, make_client(SqliteStore(db)) as b:
        sg = create_sg(a, name="x")
        for round_ in range(15):
            ag = create_ag(a, name=f"ag{round_}")
            calls: list[Any] = [
                partial(
                    post_rule,
                    a if i % 2 else b,
                    {
                        "security_group_id": sg["id"],
                        "direction": "ingress",
                        "protocol": "tcp",
                        "port_range_min": 1000 * round_ + i + 1,
                        "port_range_max": 1000 * round_ + i + 1,
                        "remote_address_group_id": ag["id"],
                    },
                )
                for i in range(3)
            ]
            calls.append(partial(b.delete, f"{AG}/{ag['id']}", headers=P1))
            statuses = [r.status_code for r in run_together(calls)]
            assert set(statuses) <= {201, 204, 404, 409}, statuses
            repo = repo_of(a)
            users = [
                r
                for r in repo.objects("security_group_rules")
                if r.get("remote_address_group_id") == ag["id"]
            ]
            if repo.get("address_groups", ag["id"]) is None:
                assert statuses[-1] == 204 and users == []
            else:
                assert statuses[-1] == 409 and users


def test_projects_and_roles(client: TestClient) -> None:
    ag = create_ag(client, addresses=["10.0.0.0/8"])
    for method, url, body in (
        ("GET", f"{AG}/{ag['id']}", None),
        ("PUT", f"{AG}/{ag['id']}", {"address_group": {"name": "x"}}),
        ("DELETE", f"{AG}/{ag['id']}", None),
        ("PUT", f"{AG}/{ag['id']}/add_addresses", {"addresses": ["1.1.1.1"]}),
        ("PUT", f"{AG}/{ag['id']}/remove_addresses", {"addresses": ["10.0.0.0/8"]}),
    ):
        r = client.request(method, url, json=body, headers=P2)
        assert r.status_code == 404 and error_type(r) == "AddressGroupNotFound", (method, url)
    assert client.get(AG, headers=P2).json()["address_groups"] == []
    # Another project's address group cannot be a rule's remote either.
    theirs = create_sg(client, P2, name="theirs")
    r = post_rule(
        client,
        {
            "security_group_id": theirs["id"],
            "direction": "ingress",
            "remote_address_group_id": ag["id"],
        },
        P2,
    )
    assert r.status_code == 404 and error_type(r) == "AddressGroupNotFound"
    assert client.get(AG, headers=READER).status_code == 200
    for method, url, body in (
        ("POST", AG, {"address_group": {"name": "r"}}),
        ("PUT", f"{AG}/{ag['id']}", {"address_group": {"name": "r"}}),
        ("PUT", f"{AG}/{ag['id']}/add_addresses", {"addresses": ["1.1.1.1"]}),
        ("DELETE", f"{AG}/{ag['id']}", None),
    ):
        r = client.request(method, url, json=body, headers=READER)
        assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized", (method, url)
    # Admins see and change every project's groups.
    r = change(client, ag["id"], "add_addresses", ["1.1.1.1"], {})
    assert r.status_code == 200
    r = client.post(AG, json={"address_group": {"project_id": "p2"}}, headers=P1)
    assert r.status_code == 400  # (neutron-lib: naming another project needs admin)
    # The owner's same requests succeed.
    mine = create_sg(client, P1, name="mine")
    r = post_rule(
        client,
        {
            "security_group_id": mine["id"],
            "direction": "ingress",
            "remote_address_group_id": ag["id"],
        },
        P1,
    )
    assert r.status_code == 201, r.text
    rule_url = f"/v2.0/security-group-rules/{r.json()['security_group_rule']['id']}"
    assert client.delete(rule_url, headers=P1).status_code == 204
    for method, url, body, status in (
        ("GET", f"{AG}/{ag['id']}", None, 200),
        ("POST", AG, {"address_group": {"name": "r"}}, 201),
        ("PUT", f"{AG}/{ag['id']}", {"address_group": {"name": "x"}}, 200),
        ("PUT", f"{AG}/{ag['id']}/add_addresses", {"addresses": ["2.2.2.2"]}, 200),
        ("PUT", f"{AG}/{ag['id']}/remove_addresses", {"addresses": ["10.0.0.0/8"]}, 200),
        ("DELETE", f"{AG}/{ag['id']}", None, 204),
    ):
        r = client.request(method, url, json=body, headers=P1)
        assert r.status_code == status, (method, url, r.text)
