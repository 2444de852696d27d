"""Floating IP port forwardings through the HTTP API: CRUD, Neutron's rules, every clash,
isolation, cascades, and that a refused request leaves the store exactly as it was."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import error_type
from tests.api.test_floatingips import fip, put_fip, topology
from tests.api.test_routers import P1, P2, READER, get_router, port, private_net, router
from wyvern.api.resources.port_forwardings import MAX_SHIFTED_PORTS
from wyvern.model.keys import ROOT


def pfs_url(fip_id: str) -> str:
    return f"/v2.0/floatingips/{fip_id}/port_forwardings"


def create_pf(client: TestClient, fip_id: str, headers: Any = P1, **attrs: Any) -> Any:
    return client.post(pfs_url(fip_id), json={"port_forwarding": attrs}, headers=headers)


def pf(client: TestClient, fip_id: str, **attrs: Any) -> dict[str, Any]:
    resp = create_pf(client, fip_id, **attrs)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["port_forwarding"])


def store_dump(client: TestClient) -> dict[str, bytes]:
    store = client.app.state.api.store  # type: ignore[attr-defined]
    return {kv.key: kv.value for kv in store.list(ROOT).items}


@pytest.fixture
def topo(client: TestClient) -> dict[str, str]:
    t = topology(client)
    t["fip"] = fip(client, t["ext_net"])["id"]
    return t


def tcp(t: dict[str, str], ext: int = 8080, internal: int = 80, **more: Any) -> dict[str, Any]:
    return {
        "protocol": "tcp",
        "internal_port_id": t["port"],
        "internal_ip_address": t["ip"],
        "internal_port": internal,
        "external_port": ext,
        **more,
    }


# ---- CRUD ---------------------------------------------------------------------------------
def test_create_show_list_update_delete(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    p = pf(client, t["fip"], **tcp(t), description="web")
    assert p["protocol"] == "tcp" and p["internal_port"] == 80 and p["external_port"] == 8080
    assert p["internal_port_range"] == "80:80" and p["external_port_range"] == "8080:8080"
    assert p["internal_ip_address"] == t["ip"] and p["internal_port_id"] == t["port"]
    assert p["description"] == "web"
    assert "project_id" not in p  # (Neutron does not show it)
    shown = client.get(f"{pfs_url(t['fip'])}/{p['id']}", headers=P1)
    assert shown.status_code == 200 and shown.json()["port_forwarding"] == p
    # A UDP range to the same ports, and an external range to one internal port.
    u = pf(
        client,
        t["fip"],
        protocol="udp",
        internal_port_id=t["port"],
        internal_port_range="5000:5009",
        external_port_range="5000:5009",
    )
    assert u["internal_port"] is None and u["external_port"] is None
    assert u["internal_ip_address"] == t["ip"]  # the port's first IPv4 address
    n1 = pf(
        client,
        t["fip"],
        protocol="tcp",
        internal_port_id=t["port"],
        internal_port=22,
        external_port_range="2200:2209",
    )
    assert n1["internal_port"] == 22 and n1["external_port_range"] == "2200:2209"
    listed = client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"]
    assert sorted(x["id"] for x in listed) == sorted([p["id"], u["id"], n1["id"]])
    only_udp = client.get(pfs_url(t["fip"]), params={"protocol": "udp"}, headers=P1).json()
    assert [x["id"] for x in only_udp["port_forwardings"]] == [u["id"]]
    by_ext = client.get(pfs_url(t["fip"]), params={"external_port": 8080}, headers=P1).json()
    assert [x["id"] for x in by_ext["port_forwardings"]] == [p["id"]]
    fields = client.get(pfs_url(t["fip"]), params={"fields": "id"}, headers=P1).json()
    assert all(set(x) == {"id"} for x in fields["port_forwardings"])
    # The floating IP is now on the router (Neutron sets its router_id), and ACTIVE only
    # once an agent says so (none here).
    f = client.get(f"/v2.0/floatingips/{t['fip']}", headers=P1).json()["floatingip"]
    assert f["router_id"] == t["router"] and f["port_id"] is None and f["status"] == "DOWN"
    # expose-port-forwarding-in-fip (with -detail): Neutron's fields, a port only where
    # that side is a single port; in lists too.
    to = {"internal_ip_address": t["ip"], "internal_port_id": t["port"]}
    assert sorted(f["port_forwardings"], key=lambda e: str(e["id"])) == sorted(
        [
            {"id": p["id"], **to, "protocol": "tcp", "internal_port": 80, "external_port": 8080},
            {"id": u["id"], **to, "protocol": "udp"},
            {"id": n1["id"], **to, "protocol": "tcp", "internal_port": 22},
        ],
        key=lambda e: str(e["id"]),
    )
    listed_fips = client.get("/v2.0/floatingips", headers=P1).json()["floatingips"]
    assert [len(x["port_forwardings"]) for x in listed_fips if x["id"] == t["fip"]] == [3]
    # What the agents see: the router carries each forwarding.
    r = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert r["_pfs"][u["id"]] == {
        "fip_id": t["fip"],
        "floating_ip_address": f["floating_ip_address"],
        "protocol": "udp",
        "internal_ip_address": t["ip"],
        "internal_port_id": t["port"],
        "ext": [5000, 5009],
        "int": [5000, 5009],
    }
    assert t["fip"] in r["_floatingips"]
    # Update: a new external port, then a range (the single port fields go None).
    up = client.put(
        f"{pfs_url(t['fip'])}/{p['id']}",
        json={"port_forwarding": {"external_port": 9090, "description": "w2"}},
        headers=P1,
    )
    assert up.status_code == 200, up.text
    assert up.json()["port_forwarding"]["external_port"] == 9090
    assert up.json()["port_forwarding"]["description"] == "w2"
    up = client.put(
        f"{pfs_url(t['fip'])}/{p['id']}",
        json={
            "port_forwarding": {"external_port_range": "9000:9001", "internal_port_range": "80:81"}
        },
        headers=P1,
    )
    assert up.status_code == 200, up.text
    got = up.json()["port_forwarding"]
    assert got["external_port"] is None and got["internal_port_range"] == "80:81"
    # Delete, one by one: the last one takes the floating IP off the router.
    for x in (p, u, n1):
        assert client.delete(f"{pfs_url(t['fip'])}/{x['id']}", headers=P1).status_code == 204
    assert client.get(f"{pfs_url(t['fip'])}/{p['id']}", headers=P1).status_code == 404
    assert client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"] == []
    f = client.get(f"/v2.0/floatingips/{t['fip']}", headers=P1).json()["floatingip"]
    assert f["router_id"] is None and f["port_forwardings"] == []
    r = get_router(client, t["router"])
    assert r["id"] == t["router"]
    stored = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert stored["_pfs"] == {} and t["fip"] not in stored["_floatingips"]


def test_openstacksdk_shape_and_404s(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    missing = "00000000-0000-0000-0000-000000000000"
    resp = client.get(pfs_url(missing), headers=P1)
    assert resp.status_code == 404 and error_type(resp) == "FloatingIPNotFound"
    resp = client.get(f"{pfs_url(t['fip'])}/{missing}", headers=P1)
    assert resp.status_code == 404 and error_type(resp) == "PortForwardingNotFound"
    resp = client.delete(f"{pfs_url(t['fip'])}/{missing}", headers=P1)
    assert resp.status_code == 404 and error_type(resp) == "PortForwardingNotFound"
    resp = client.get(pfs_url("not-a-uuid"), headers=P1)
    assert resp.status_code == 404


# ---- validation: every refusal changes nothing, and the fixed request then works --------
def refused(
    client: TestClient, resp: Any, status: int, kind: str, before: dict[str, bytes]
) -> None:
    assert resp.status_code == status, resp.text
    assert error_type(resp) == kind, resp.text
    assert store_dump(client) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": "icmp"}, "protocol"),
        ({"external_port": 0}, "external_port"),
        ({"internal_port": 70000}, "internal_port"),
        ({"external_port_range": "10:20"}, "external_port and external_port_range"),
        ({"external_port": None}, "external_port or external_port_range"),
        ({"internal_port": None}, "internal_port or internal_port_range"),
        ({"external_port": None, "external_port_range": "20:10"}, "above the last"),
        (
            {
                "internal_port": None,
                "internal_port_range": "80:82",
                "external_port": None,
                "external_port_range": "80:81",
            },
            "N-N or 1-N",
        ),
        (
            {"internal_port": None, "internal_port_range": "80:82", "external_port": 80},
            "N-N or 1-N",
        ),
        (
            {
                "internal_port": None,
                "internal_port_range": f"1000:{999 + MAX_SHIFTED_PORTS + 1}",
                "external_port": None,
                "external_port_range": f"2000:{1999 + MAX_SHIFTED_PORTS + 1}",
            },
            "port by port",
        ),
    ],
)
def test_bad_bodies(
    client: TestClient, topo: dict[str, str], change: dict[str, Any], message: str
) -> None:
    before = store_dump(client)
    resp = create_pf(client, topo["fip"], **{**tcp(topo), **change})
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["NeutronError"]["message"]
    assert store_dump(client) == before


def test_same_offset_ranges_are_not_bounded(client: TestClient, topo: dict[str, str]) -> None:
    """A range kept as it is (nat keeps the port) or sent to one port needs no expansion."""
    big = f"1000:{999 + 10 * MAX_SHIFTED_PORTS}"
    body = {**tcp(topo), "internal_port": None, "external_port": None}
    pf(client, topo["fip"], **{**body, "internal_port_range": big, "external_port_range": big})
    pf(
        client,
        topo["fip"],
        **{**body, "protocol": "udp", "internal_port": 53, "external_port_range": big},
    )


def test_internal_address_must_be_the_ports(client: TestClient, topo: dict[str, str]) -> None:
    before = store_dump(client)
    resp = create_pf(client, topo["fip"], **tcp(topo, internal_ip_address="10.0.0.250"))
    refused(client, resp, 400, "BadRequest", before)
    assert "not suitable for internal neutron port" in resp.json()["NeutronError"]["message"]


def test_internal_port_must_reach_the_fips_router(client: TestClient, topo: dict[str, str]) -> None:
    net, _ = private_net(client, "10.9.0.0/24")
    lonely = port(client, net, device_owner="compute:nova")
    before = store_dump(client)
    body = {**tcp(topo), "internal_port_id": lonely["id"], "internal_ip_address": None}
    resp = create_pf(client, topo["fip"], **body)
    refused(client, resp, 400, "BadRequest", before)
    assert "is not reachable from subnet" in resp.json()["NeutronError"]["message"]


def test_fip_on_another_router_than_its_forwardings(
    client: TestClient, topo: dict[str, str]
) -> None:
    """All forwardings of one floating IP go through one router, as in Neutron."""
    t = topo
    pf(client, t["fip"], **tcp(t))
    net, sub = private_net(client, "10.8.0.0/24")
    r2 = router(client, external_gateway_info={"network_id": t["ext_net"]})
    resp = client.put(
        f"/v2.0/routers/{r2['id']}/add_router_interface", json={"subnet_id": sub}, headers=P1
    )
    assert resp.status_code == 200
    other = port(client, net, device_owner="compute:nova")
    before = store_dump(client)
    body = {**tcp(t, ext=8081), "internal_port_id": other["id"], "internal_ip_address": None}
    resp = create_pf(client, t["fip"], **body)
    refused(client, resp, 400, "BadRequest", before)
    assert "can not reach it" in resp.json()["NeutronError"]["message"]


def test_associated_fip_cannot_forward(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    vm2 = port(client, t["net"], device_owner="compute:nova")
    assert put_fip(client, t["fip"], {"port_id": vm2["id"]}).status_code == 200
    before = store_dump(client)
    resp = create_pf(client, t["fip"], **tcp(t))
    refused(client, resp, 409, "FloatingIPPortAlreadyAssociated", before)


def test_forwarding_fip_cannot_be_associated(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    pf(client, t["fip"], **tcp(t))
    vm2 = port(client, t["net"], device_owner="compute:nova")
    before = store_dump(client)
    resp = put_fip(client, t["fip"], {"port_id": vm2["id"]})
    refused(client, resp, 409, "FipInUseByPortForwarding", before)
    # Nor can another floating IP be associated with the forwarded port.
    other = fip(client, t["ext_net"])
    before = store_dump(client)
    resp = put_fip(client, other["id"], {"port_id": t["port"]})
    refused(client, resp, 400, "PortHasPortForwarding", before)
    resp = client.post(
        "/v2.0/floatingips",
        json={"floatingip": {"floating_network_id": t["ext_net"], "port_id": t["port"]}},
        headers=P1,
    )
    refused(client, resp, 400, "PortHasPortForwarding", before)
    # Once the forwarding is gone, both work.
    fwd = client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"][0]
    assert client.delete(f"{pfs_url(t['fip'])}/{fwd['id']}", headers=P1).status_code == 204
    assert put_fip(client, other["id"], {"port_id": t["port"]}).status_code == 200


def test_port_with_a_fip_cannot_be_forwarded_to(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    other = fip(client, t["ext_net"], port_id=t["port"])
    assert other["port_id"] == t["port"]
    before = store_dump(client)
    resp = create_pf(client, t["fip"], **tcp(t))
    refused(client, resp, 409, "PortHasBindingFloatingIP", before)


# ---- clashes ------------------------------------------------------------------------------
def test_external_clashes(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    vm2 = port(client, t["net"], device_owner="compute:nova")
    body2 = {"internal_port_id": vm2["id"], "internal_ip_address": None}
    first = pf(client, t["fip"], **tcp(t, ext=8080))
    ranged = pf(
        client,
        t["fip"],
        **{
            **tcp(t, ext=9000),
            **body2,
            "external_port": None,
            "internal_port": 22,
            "external_port_range": "9000:9010",
        },
    )
    before = store_dump(client)
    for ext in ({"external_port": 8080}, {"external_port": 9005}):
        resp = create_pf(client, t["fip"], **{**tcp(t, internal=81), **body2, **ext})
        refused(client, resp, 400, "BadRequest", before)
        assert "collision with the external_port_range" in resp.json()["NeutronError"]["message"]
    resp = create_pf(
        client,
        t["fip"],
        **{
            **tcp(t, internal=81),
            **body2,
            "external_port": None,
            "external_port_range": "8070:8080",
        },
    )
    refused(client, resp, 400, "BadRequest", before)
    # An update into a clash is refused the same way and changes nothing.
    resp = client.put(
        f"{pfs_url(t['fip'])}/{first['id']}",
        json={"port_forwarding": {"external_port": 9010}},
        headers=P1,
    )
    refused(client, resp, 400, "BadRequest", before)
    # The same external port in UDP does not clash, nor on another floating IP.
    pf(client, t["fip"], **{**tcp(t), "protocol": "udp"})
    other = fip(client, t["ext_net"])
    pf(client, other["id"], **{**tcp(t, internal=81), **body2})
    assert ranged["external_port_range"] == "9000:9010"


def test_internal_clashes(client: TestClient, topo: dict[str, str]) -> None:
    """The same internal IP, protocol and port forwarded twice (from any floating IP)."""
    t = topo
    pf(client, t["fip"], **tcp(t, ext=8080, internal=80))
    other = fip(client, t["ext_net"])
    before = store_dump(client)
    resp = create_pf(client, other["id"], **tcp(t, ext=8080, internal=80))
    refused(client, resp, 400, "BadRequest", before)
    assert "collision with the internal_port_range" in resp.json()["NeutronError"]["message"]
    resp = create_pf(client, t["fip"], **tcp(t, ext=8081, internal=80))
    refused(client, resp, 400, "BadRequest", before)
    resp = create_pf(
        client,
        other["id"],
        **{
            **tcp(t),
            "internal_port": None,
            "external_port": None,
            "internal_port_range": "70:90",
            "external_port_range": "70:90",
        },
    )
    refused(client, resp, 400, "BadRequest", before)
    # A bulk create whose two members clash stores neither.
    resp = client.post(
        pfs_url(other["id"]),
        json={"port_forwardings": [tcp(t, ext=1, internal=1), tcp(t, ext=2, internal=1)]},
        headers=P1,
    )
    refused(client, resp, 400, "BadRequest", before)
    # UDP on the same port is another socket.
    pf(client, other["id"], **{**tcp(t), "protocol": "udp"})


# ---- isolation and policy -----------------------------------------------------------------
def test_isolation(client: TestClient, topo: dict[str, str]) -> None:
    t = topo
    p = pf(client, t["fip"], **tcp(t))
    before = store_dump(client)
    for resp in (
        client.get(pfs_url(t["fip"]), headers=P2),
        client.get(f"{pfs_url(t['fip'])}/{p['id']}", headers=P2),
        create_pf(client, t["fip"], headers=P2, **tcp(t, ext=1)),
        client.put(
            f"{pfs_url(t['fip'])}/{p['id']}",
            json={"port_forwarding": {"external_port": 2}},
            headers=P2,
        ),
        client.delete(f"{pfs_url(t['fip'])}/{p['id']}", headers=P2),
    ):
        assert resp.status_code == 404, resp.text
        assert error_type(resp) == "FloatingIPNotFound"
    assert store_dump(client) == before
    # Another project's port cannot be the target, even on one's own floating IP.
    net2, _ = private_net(client, "10.7.0.0/24", headers=P2)
    theirs = port(client, net2, headers=P2, device_owner="compute:nova")
    before = store_dump(client)
    resp = create_pf(client, t["fip"], **{**tcp(t, ext=3), "internal_port_id": theirs["id"]})
    refused(client, resp, 404, "PortNotFound", before)
    # A reader sees, but may not write.
    assert client.get(pfs_url(t["fip"]), headers=READER).status_code == 200
    resp = create_pf(client, t["fip"], headers=READER, **tcp(t, ext=4))
    refused(client, resp, 403, "PolicyNotAuthorized", before)


# ---- cascades -----------------------------------------------------------------------------
def test_deleting_the_internal_port_removes_its_forwardings(
    client: TestClient, topo: dict[str, str]
) -> None:
    t = topo
    vm2 = port(client, t["net"], device_owner="compute:nova")
    mine = pf(client, t["fip"], **tcp(t))
    kept = pf(
        client,
        t["fip"],
        **{
            **tcp(t, ext=22, internal=22),
            "internal_port_id": vm2["id"],
            "internal_ip_address": None,
        },
    )
    assert client.delete(f"/v2.0/ports/{t['port']}", headers=P1).status_code == 204
    left = client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"]
    assert [x["id"] for x in left] == [kept["id"]]
    stored = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert set(stored["_pfs"]) == {kept["id"]}
    assert not any(mine["id"] in k for k in store_dump(client))
    assert client.delete(f"/v2.0/ports/{vm2['id']}", headers=P1).status_code == 204
    stored = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert stored["_pfs"] == {} and t["fip"] not in stored["_floatingips"]
    f = client.get(f"/v2.0/floatingips/{t['fip']}", headers=P1).json()["floatingip"]
    assert f["router_id"] is None and f["port_forwardings"] == []


def test_a_forwarding_fip_is_deleted_after_its_forwardings(
    client: TestClient, topo: dict[str, str]
) -> None:
    t = topo
    p = pf(client, t["fip"], **tcp(t))
    # While it forwards, the router keeps its gateway and the interface (Neutron: in use).
    resp = client.put(
        f"/v2.0/routers/{t['router']}",
        json={"router": {"external_gateway_info": {}}},
        headers=P1,
    )
    assert resp.status_code == 409, resp.text
    resp = client.put(
        f"/v2.0/routers/{t['router']}/remove_router_interface",
        json={"subnet_id": t["sub"]},
        headers=P1,
    )
    assert resp.status_code == 409, resp.text
    # Neutron refuses to delete a floating IP that still forwards, and changes nothing.
    before = store_dump(client)
    resp = client.delete(f"/v2.0/floatingips/{t['fip']}", headers=P1)
    assert resp.status_code == 409 and error_type(resp) == "FipInUseByPortForwarding"
    assert resp.json()["NeutronError"]["message"] == (
        f"Floating IP {t['fip']} in use by Port Forwarding resources."
    )
    assert store_dump(client) == before
    assert client.delete(f"{pfs_url(t['fip'])}/{p['id']}", headers=P1).status_code == 204
    assert client.delete(f"/v2.0/floatingips/{t['fip']}", headers=P1).status_code == 204
    dump = store_dump(client)
    assert not any(p["id"] in k or p["id"].encode() in v for k, v in dump.items())
    stored = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert stored["_pfs"] == {} and stored["_floatingips"] == []
    # The forwarded port is free again.
    other = fip(client, t["ext_net"])
    pf(client, other["id"], **tcp(t))


def test_a_port_losing_the_address_loses_its_forwardings(
    client: TestClient, topo: dict[str, str]
) -> None:
    t = topo
    p = pf(client, t["fip"], **tcp(t))
    # The port keeps the address (another one added): the forwarding stays.
    resp = client.put(
        f"/v2.0/ports/{t['port']}",
        json={"port": {"fixed_ips": [{"ip_address": t["ip"]}, {"subnet_id": t["sub"]}]}},
        headers=P1,
    )
    assert resp.status_code == 200, resp.text
    listed = client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"]
    assert [x["id"] for x in listed] == [p["id"]]
    # It drops the address: the forwarding goes, with its router entry and claim.
    resp = client.put(
        f"/v2.0/ports/{t['port']}",
        json={"port": {"fixed_ips": [{"subnet_id": t["sub"], "ip_address": "10.0.0.99"}]}},
        headers=P1,
    )
    assert resp.status_code == 200, resp.text
    assert client.get(pfs_url(t["fip"]), headers=P1).json()["port_forwardings"] == []
    stored = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert stored["_pfs"] == {}
    assert not any(p["id"] in k for k in store_dump(client))


# ---- races, on a real store -----------------------------------------------------------------
def test_concurrent_clashing_creates_pick_one(sqlite_client: TestClient) -> None:
    """The same internal port raced from four floating IPs, and the same external port
    raced on one: exactly one of each wins, and only the winners are stored."""
    client = sqlite_client
    t = topology(client)
    fips = [fip(client, t["ext_net"])["id"] for _ in range(4)]
    vms = [port(client, t["net"], device_owner="compute:nova")["id"] for _ in range(4)]
    results: list[int] = []
    lock = threading.Lock()

    def go(fip_id: str, body: dict[str, Any]) -> None:
        r = create_pf(client, fip_id, **body)
        with lock:
            results.append(r.status_code)

    for jobs in (
        [(f, tcp(t)) for f in fips],  # one internal socket, four floating IPs
        [  # one floating IP's external port 9000, four internal ports
            (fips[0], {**tcp(t, ext=9000), "internal_port_id": v, "internal_ip_address": None})
            for v in vms
        ],
    ):
        results.clear()
        threads = [threading.Thread(target=go, args=job) for job in jobs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(results) == [201, 400, 400, 400], results
    stored = [
        p for f in fips for p in client.get(pfs_url(f), headers=P1).json()["port_forwardings"]
    ]
    assert len(stored) == 2
    r = client.app.state.api.state.repo.get("routers", t["router"]).obj  # type: ignore[attr-defined]
    assert sorted(r["_pfs"]) == sorted(p["id"] for p in stored)
