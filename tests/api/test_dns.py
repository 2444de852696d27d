"""dns-integration through the HTTP API: port dns_name and dns_assignment, network and port
dns_domain, validated as Neutron does (wyvern.model.dns)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import as_project, create, error_type, make_client
from wyvern.nb.memory import MemoryStore

P1, P2 = as_project("p1"), as_project("p2")


@pytest.fixture
def org() -> Iterator[TestClient]:
    """An API whose dns_domain setting is example.org (not Neutron's default)."""
    with make_client(MemoryStore(), dns_domain="example.org") as c:
        yield c


def _port_on_subnet(client: TestClient, **attrs: object) -> dict[str, object]:
    n = create(client, "networks", headers=P1)["id"]
    create(client, "subnets", headers=P1, network_id=n, cidr="10.0.0.0/24", ip_version=4)
    return create(client, "ports", headers=P1, network_id=n, **attrs)


def test_defaults_and_assignment_with_the_default_domain(client: TestClient) -> None:
    """Neutron's default dns_domain (openstacklocal) keeps a dns_name but does not use it:
    every address is host-<ip>.openstacklocal."""
    p = _port_on_subnet(client, dns_name="Web-1")
    assert p["dns_name"] == "web-1"  # lower-cased
    assert p["dns_domain"] == ""
    (ip,) = [f["ip_address"] for f in p["fixed_ips"]]  # type: ignore[attr-defined]
    host = "host-" + ip.replace(".", "-")
    assert p["dns_assignment"] == [
        {"ip_address": ip, "hostname": host, "fqdn": f"{host}.openstacklocal."}
    ]
    net = client.get(f"/v2.0/networks/{p['network_id']}", headers=P1).json()["network"]
    assert net["dns_domain"] == ""


def test_dns_name_makes_the_assignment(org: TestClient) -> None:
    p = _port_on_subnet(org, dns_name="web-1")
    (ip,) = [f["ip_address"] for f in p["fixed_ips"]]  # type: ignore[attr-defined]
    assert p["dns_assignment"] == [
        {"ip_address": ip, "hostname": "web-1", "fqdn": "web-1.example.org."}
    ]
    r = org.put(
        f"/v2.0/ports/{p['id']}", json={"port": {"dns_name": "db.example.org."}}, headers=P1
    )
    assert r.status_code == 200, r.text
    shown = org.get(f"/v2.0/ports/{p['id']}", headers=P1).json()["port"]
    assert shown["dns_name"] == "db.example.org."
    assert shown["dns_assignment"][0]["fqdn"] == "db.example.org."
    r = org.put(f"/v2.0/ports/{p['id']}", json={"port": {"dns_name": ""}}, headers=P1)
    host = "host-" + ip.replace(".", "-")
    assert r.json()["port"]["dns_assignment"][0]["hostname"] == host
    listed = org.get("/v2.0/ports?dns_name=", headers=P1).json()["ports"]
    assert [q["id"] for q in listed] == [p["id"]]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("-web", "must not start or end with a hyphen"),
        ("web_1", "must be 1-63 characters long"),
        ("a..b", "Encountered an empty component"),
        ("web.123", "TLD '123' must not be all numeric"),
        ("x" * 64, "must be 1-63 characters long"),
        ("web.example.com.", "Its higher level labels must be equal to the dns_domain"),
        ("example.org.", "Its higher level labels must be equal to the dns_domain"),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60, "resulting length exceeds"),
    ],
)
def test_invalid_dns_name_is_400_and_changes_nothing(
    org: TestClient, name: str, reason: str
) -> None:
    p = _port_on_subnet(org, dns_name="keep")
    r = org.put(f"/v2.0/ports/{p['id']}", json={"port": {"dns_name": name}}, headers=P1)
    assert r.status_code == 400 and error_type(r) == "InvalidInput", r.text
    assert reason in r.json()["NeutronError"]["message"]
    assert "Invalid input for dns_name" in r.json()["NeutronError"]["message"]
    shown = org.get(f"/v2.0/ports/{p['id']}", headers=P1).json()["port"]
    assert shown["dns_name"] == "keep"
    r = org.post(
        "/v2.0/ports", json={"port": {"network_id": p["network_id"], "dns_name": name}}, headers=P1
    )
    assert r.status_code == 400 and error_type(r) == "InvalidInput"
    assert len(org.get("/v2.0/ports", headers=P1).json()["ports"]) == 1


def test_dns_name_must_be_a_string(client: TestClient) -> None:
    n = create(client, "networks")["id"]
    r = client.post("/v2.0/ports", json={"port": {"network_id": n, "dns_name": 5}})
    assert r.status_code == 400 and error_type(r) == "InvalidInput"


def test_network_dns_domain(client: TestClient) -> None:
    n = create(client, "networks", headers=P1, dns_domain="Lab.Example.NET.")
    assert n["dns_domain"] == "lab.example.net."
    for bad, reason in (("lab.example.net", "is not a FQDN"), ("a..b.", "empty component")):
        r = client.put(
            f"/v2.0/networks/{n['id']}", json={"network": {"dns_domain": bad}}, headers=P1
        )
        assert r.status_code == 400 and error_type(r) == "InvalidInput"
        assert reason in r.json()["NeutronError"]["message"]
    r = client.put(f"/v2.0/networks/{n['id']}", json={"network": {"dns_domain": ""}}, headers=P1)
    assert r.status_code == 200 and r.json()["network"]["dns_domain"] == ""
    r = client.post("/v2.0/networks", json={"network": {"dns_domain": "nodot"}}, headers=P1)
    assert r.status_code == 400
    assert [x["id"] for x in client.get("/v2.0/networks", headers=P1).json()["networks"]] == [
        n["id"]
    ]


def test_port_dns_domain(client: TestClient) -> None:
    """dns-domain-ports: an FQDN, kept (for an external DNS service)."""
    p = _port_on_subnet(client, dns_domain="zone.example.com.")
    assert p["dns_domain"] == "zone.example.com."
    r = client.put(f"/v2.0/ports/{p['id']}", json={"port": {"dns_domain": "zone"}}, headers=P1)
    assert r.status_code == 400 and error_type(r) == "InvalidInput"


def test_other_projects_dns_names_are_not_seen(org: TestClient) -> None:
    p = _port_on_subnet(org, dns_name="secret")
    assert org.get("/v2.0/ports?dns_name=secret", headers=P2).json()["ports"] == []
    r = org.put(f"/v2.0/ports/{p['id']}", json={"port": {"dns_name": "mine"}}, headers=P2)
    assert r.status_code == 404
    assert org.get(f"/v2.0/ports/{p['id']}", headers=P1).json()["port"]["dns_name"] == "secret"


def test_floating_ip_dns_name_and_domain(client: TestClient) -> None:
    """Kept (for an external DNS service: Wyvern publishes to none), validated as
    Neutron's fip_dns_name and dns_domain, set at creation only."""
    ext = {"router:external": True, "provider:network_type": "flat"}
    n = create(client, "networks", **ext)["id"]
    create(client, "subnets", network_id=n, cidr="203.0.113.0/24", ip_version=4)
    fip = create(client, "floatingips", floating_network_id=n, dns_name="Web", dns_domain="ex.org.")
    assert (fip["dns_name"], fip["dns_domain"]) == ("web", "ex.org.")
    plain = create(client, "floatingips", floating_network_id=n)
    assert (plain["dns_name"], plain["dns_domain"]) == ("", "")
    for attrs, reason in (
        ({"dns_name": "web.ex.org."}, "should be a relative domain name"),
        ({"dns_domain": "ex.org"}, "is not a FQDN"),
    ):
        r = client.post(
            "/v2.0/floatingips", json={"floatingip": {"floating_network_id": n, **attrs}}
        )
        assert r.status_code == 400 and error_type(r) == "InvalidInput"
        assert reason in r.json()["NeutronError"]["message"]
    assert len(client.get("/v2.0/floatingips").json()["floatingips"]) == 2
    r = client.put(f"/v2.0/floatingips/{fip['id']}", json={"floatingip": {"dns_name": "x"}})
    assert r.status_code == 400
