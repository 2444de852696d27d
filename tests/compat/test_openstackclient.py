"""python-openstackclient (`openstack ... --os-auth-type none`) against a live server.

Each CLI call costs about a second, so the scenarios are few and each goes far: about
thirty calls in all, covering the commands a README reader types.
"""

from __future__ import annotations

import uuid

import pytest

from tests.compat.conftest import Osc
from tests.harness import ApiServer
from wyvern.controller.chassis import ChassisInfo, ChassisRegistration
from wyvern.nb.sqlite import SqliteStore

pytestmark = [
    pytest.mark.compat,
    # The clients' notes about their own future API changes are not about the server.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_network_subnet_port_tags_and_ip_conflict(osc: Osc) -> None:
    net_name = unique("net")
    net = osc.json("network", "create", net_name)
    assert net["name"] == net_name and net["admin_state_up"] is True

    osc.ok("network", "set", "--tag", "red", "--tag", "blue", net_name)
    listed = osc.json("network", "list", "--tags", "red,blue")
    assert [n["ID"] for n in listed] == [net["id"]]

    subnet = osc.json(
        "subnet", "create", "--network", net_name, "--subnet-range", "192.168.10.0/24", "sub1"
    )
    assert subnet["cidr"] == "192.168.10.0/24" and subnet["gateway_ip"] == "192.168.10.1"

    fixed_ip = f"subnet={subnet['id']},ip-address=192.168.10.50"
    port = osc.json("port", "create", "--network", net_name, "--fixed-ip", fixed_ip, "p1")
    assert port["fixed_ips"][0]["ip_address"] == "192.168.10.50"

    # The same fixed IP again: IpAddressInUse, and the CLI says so and fails.
    clash = osc.run("port", "create", "--network", net_name, "--fixed-ip", fixed_ip, "p2")
    assert clash.returncode != 0
    assert "The IP address 192.168.10.50 is in use" in clash.stderr

    osc.ok("port", "delete", port["id"])
    osc.ok("subnet", "delete", subnet["id"])
    osc.ok("network", "delete", net_name)


def test_router_interface_gateway_and_floating_ip(osc: Osc) -> None:
    ext, net, router = unique("ext"), unique("net"), unique("router")
    osc.ok(
        "network",
        "create",
        "--external",
        "--provider-network-type",
        "vlan",
        "--provider-physical-network",
        "physnet1",
        ext,
    )
    osc.ok(
        "subnet",
        "create",
        "--network",
        ext,
        "--subnet-range",
        "203.0.113.0/24",
        "--no-dhcp",
        ext + "-sub",
    )
    osc.ok("network", "create", net)
    subnet = osc.json(
        "subnet", "create", "--network", net, "--subnet-range", "10.50.0.0/24", net + "-sub"
    )
    r = osc.json("router", "create", router)
    osc.ok("router", "add", "subnet", router, subnet["id"])
    osc.ok("router", "set", "--external-gateway", ext, router)
    # no chassis is registered with this API: no agent may host the gateway
    assert osc.json("network", "agent", "list", "--router", router, "--long") == []

    port = osc.json("port", "create", "--network", net, unique("vm"))
    fip = osc.json("floating", "ip", "create", ext)
    assert fip["floating_ip_address"].startswith("203.0.113.")
    osc.ok("floating", "ip", "set", "--port", port["id"], fip["id"])
    shown = osc.json("floating", "ip", "show", fip["id"])
    assert shown["port_id"] == port["id"] and shown["router_id"] == r["id"]
    assert shown["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    assert shown["status"] == "DOWN"  # no agent here installs its flows
    osc.ok("floating", "ip", "unset", "--port", fip["id"])
    osc.ok("floating", "ip", "delete", fip["id"])

    osc.ok("router", "remove", "subnet", router, subnet["id"])
    osc.ok("router", "unset", "--external-gateway", router)
    osc.ok("router", "delete", router)
    assert osc.json("router", "list", "--name", router) == []


def test_floating_ip_port_forwarding(osc: Osc) -> None:
    """`openstack floating ip port forwarding create|list|show|set|delete`, unchanged,
    with a single port and a range; a clash is refused and stores nothing."""
    ext, net, router = unique("ext"), unique("net"), unique("router")
    osc.ok("network", "create", "--external", "--provider-network-type", "vlan",
           "--provider-physical-network", "physnet1", ext)  # fmt: skip
    osc.ok("subnet", "create", "--network", ext, "--subnet-range", "203.0.114.0/24",
           "--no-dhcp", ext + "-sub")  # fmt: skip
    osc.ok("network", "create", net)
    subnet = osc.json(
        "subnet", "create", "--network", net, "--subnet-range", "10.51.0.0/24", net + "-sub"
    )
    osc.ok("router", "create", router)
    osc.ok("router", "add", "subnet", router, subnet["id"])
    osc.ok("router", "set", "--external-gateway", ext, router)
    port = osc.json("port", "create", "--network", net, unique("vm"))
    ip = port["fixed_ips"][0]["ip_address"]
    fip = osc.json("floating", "ip", "create", ext)

    pf = ["floating", "ip", "port", "forwarding"]
    web = osc.json(*pf, "create", "--internal-ip-address", ip, "--port", port["id"],
                   "--internal-protocol-port", "80", "--external-protocol-port", "8080",
                   "--protocol", "tcp", "--description", "web", fip["id"])  # fmt: skip
    assert (web["internal_port"], web["external_port"], web["protocol"]) == (80, 8080, "tcp")
    assert web["internal_ip_address"] == ip and web["description"] == "web"
    rng = osc.json(*pf, "create", "--internal-ip-address", ip, "--port", port["id"],
                   "--internal-protocol-port", "5000:5009", "--external-protocol-port",
                   "5000:5009", "--protocol", "udp", fip["id"])  # fmt: skip
    assert rng["external_port_range"] == "5000:5009" and rng["internal_port"] is None
    clash = osc.run(*pf, "create", "--internal-ip-address", ip, "--port", port["id"],
                    "--internal-protocol-port", "81", "--external-protocol-port", "8080",
                    "--protocol", "tcp", fip["id"])  # fmt: skip
    assert clash.returncode != 0 and "collision" in clash.stderr, clash.stderr

    listed = osc.json(*pf, "list", fip["id"])
    assert sorted(x["ID"] for x in listed) == sorted([web["id"], rng["id"]])
    only = osc.json(*pf, "list", "--protocol", "udp", fip["id"])
    assert [x["ID"] for x in only] == [rng["id"]]
    osc.ok(*pf, "set", "--external-protocol-port", "9090", fip["id"], web["id"])
    shown = osc.json(*pf, "show", fip["id"], web["id"])
    assert shown["external_port"] == 9090 and shown["internal_port"] == 80

    osc.ok(*pf, "delete", fip["id"], web["id"], rng["id"])
    assert osc.json(*pf, "list", fip["id"]) == []
    osc.ok("floating", "ip", "delete", fip["id"])


def test_security_group_and_rule(osc: Osc) -> None:
    sg = unique("sg")
    group = osc.json("security", "group", "create", "--description", "web", sg)
    assert group["name"] == sg
    rule = osc.json(
        "security",
        "group",
        "rule",
        "create",
        "--ingress",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "0.0.0.0/0",
        sg,
    )
    assert (rule["port_range_min"], rule["port_range_max"]) == (22, 22)
    rules = osc.json("security", "group", "rule", "list", sg)
    assert rule["id"] in [x["ID"] for x in rules] and len(rules) == 3
    osc.ok("security", "group", "rule", "delete", rule["id"])
    osc.ok("security", "group", "delete", sg)


def test_subnet_pools_address_scopes_and_default_pools(osc: Osc) -> None:
    scope = unique("scope")
    s = osc.json("address", "scope", "create", "--ip-version", "4", "--share", scope)
    assert s["ip_version"] == 4 and s["shared"] is True
    pool = unique("pool")
    p = osc.json(
        "subnet", "pool", "create", "--pool-prefix", "10.200.0.0/16",
        "--default-prefix-length", "24", "--address-scope", scope, pool,
    )  # fmt: skip
    assert p["address_scope_id"] == s["id"] and p["ip_version"] == 4
    assert "10.200.0.0/16" in str(p["prefixes"])
    net = unique("net")
    osc.ok("network", "create", net)
    sub = osc.json(
        "subnet", "create", "--network", net, "--subnet-pool", pool, "--prefix-length", "26",
        net + "-sub",
    )  # fmt: skip
    assert sub["cidr"] == "10.200.0.0/26" and sub["subnetpool_id"] == p["id"]
    assert osc.json("network", "show", net)["ipv4_address_scope"] == s["id"]
    # In use: neither the pool nor the scope can go (Neutron's errors, shown by the CLI).
    busy = osc.run("subnet", "pool", "delete", pool)
    assert busy.returncode != 0 and "Subnet pool has existing allocations" in busy.stderr
    busy = osc.run("address", "scope", "delete", scope)
    assert busy.returncode != 0 and "subnet pools in use on the address scope" in busy.stderr

    # Default pools, IPv4 and IPv6: --use-default-subnet-pool.
    d4, d6 = unique("d4"), unique("d6")
    osc.ok("subnet", "pool", "create", "--pool-prefix", "10.201.0.0/23",
           "--default-prefix-length", "24", "--default", "--share", d4)  # fmt: skip
    osc.ok("subnet", "pool", "create", "--pool-prefix", "2001:db8:77::/48",
           "--default", "--share", d6)  # fmt: skip
    net2 = unique("net")
    osc.ok("network", "create", net2)
    v4 = osc.json("subnet", "create", "--network", net2, "--use-default-subnet-pool", "v4")
    assert v4["cidr"] == "10.201.0.0/24"
    v6 = osc.json(
        "subnet", "create", "--network", net2, "--ip-version", "6", "--use-default-subnet-pool",
        "--ipv6-ra-mode", "slaac", "--ipv6-address-mode", "slaac", "v6",
    )  # fmt: skip
    assert v6["cidr"] == "2001:db8:77::/64"
    net3 = unique("net")
    osc.ok("network", "create", net3)
    osc.ok("subnet", "create", "--network", net3, "--use-default-subnet-pool", "v4b")
    full = osc.run("subnet", "create", "--network", net3, "--use-default-subnet-pool", "v4c")
    assert full.returncode != 0
    assert "Insufficient prefix space to allocate subnet size /24" in full.stderr

    listed = {row["Name"] for row in osc.json("subnet", "pool", "list")}
    assert {pool, d4, d6} <= listed
    for name in (net, net2, net3):
        osc.ok("network", "delete", name)
    for name in (pool, d4, d6):
        osc.ok("subnet", "pool", "delete", name)
    osc.ok("address", "scope", "delete", scope)


def test_agents_availability_zones_and_dns(osc: Osc, api: ApiServer) -> None:
    """`openstack network agent set --disable / delete`, `availability zone list
    --network`, zone hints, and dns_name / dns_domain, with the stock CLI."""
    store = SqliteStore(str(api.run_dir / "wyvern.db"))
    gw, compute, dead = unique("gw"), unique("compute"), unique("dead")
    regs = []
    for name, zone, priority in ((gw, "az-gw", 1), (compute, "az-compute", 0), (dead, "az-x", 0)):
        info = ChassisInfo(
            name, "192.0.2.9", hostname=name, gateway_priority=priority,
            bridge_mappings={"physnet1": "br-ex"}, availability_zone=zone,
        )  # fmt: skip
        reg = ChassisRegistration(store, info, ttl=60)
        reg.register()
        regs.append(reg)
    regs[2].stop()  # dead
    try:
        listed = {a["Host"]: a for a in osc.json("network", "agent", "list")}
        assert listed[gw]["Availability Zone"] == "az-gw" and listed[gw]["State"] is True
        osc.ok("network", "agent", "set", "--disable", listed[gw]["ID"])
        shown = osc.json("network", "agent", "show", listed[gw]["ID"])
        assert shown["admin_state_up"] is False
        zones = osc.json("availability", "zone", "list", "--network", "--long")
        rows = {(z["Zone Name"], z["Zone Resource"]): z["Zone Status"] for z in zones}
        assert rows[("az-compute", "network")] == "available"
        assert rows[("az-gw", "network")] == "not available"
        # (--network lists router zones too: those of the gateway chassis)
        assert rows[("az-gw", "router")] == "not available"
        assert ("az-compute", "router") not in rows
        osc.ok("network", "agent", "set", "--enable", listed[gw]["ID"])

        osc.ok("network", "agent", "delete", listed[dead]["ID"])
        assert dead not in {a["Host"] for a in osc.json("network", "agent", "list")}

        router = osc.json("router", "create", "--availability-zone-hint", "az-gw", unique("r"))
        assert router["availability_zone_hints"] == ["az-gw"]
        bad = osc.run("router", "create", "--availability-zone-hint", "az-compute", unique("r"))
        assert bad.returncode != 0 and "AvailabilityZone az-compute could not be found" in (
            bad.stderr
        )
        net_name = unique("net")
        net = osc.json(
            "network", "create", "--availability-zone-hint", "az-compute",
            "--dns-domain", "lab.example.org.", net_name,
        )  # fmt: skip
        assert net["dns_domain"] == "lab.example.org."
        assert net["availability_zone_hints"] == ["az-compute"]
        osc.ok("subnet", "create", "--network", net_name, "--subnet-range", "10.77.0.0/24", "s")
        port = osc.json("port", "create", "--network", net_name, "--dns-name", "web-1", "p")
        assert port["dns_name"] == "web-1"
        ip = port["fixed_ips"][0]["ip_address"]
        host = "host-" + ip.replace(".", "-")  # (the default dns_domain: no name used)
        assert port["dns_assignment"] == [
            {"ip_address": ip, "hostname": host, "fqdn": f"{host}.openstacklocal."}
        ]
        bad = osc.run("port", "set", "--dns-name=web_1", port["id"])
        assert bad.returncode != 0 and "not a valid PQDN or FQDN" in bad.stderr
        osc.ok("port", "delete", port["id"])
        osc.ok("router", "delete", router["id"])
        osc.ok("network", "delete", net_name)
    finally:
        for reg in regs:
            reg.stop()
        store.close()


def test_network_rbac(osc: Osc) -> None:
    """`openstack network rbac create/list/show/set/delete` as an admin without Keystone
    (`--target-project` needs Keystone to resolve the project: tests/api/test_keystone.py
    runs it there)."""
    net = osc.json("network", "create", unique("net"))
    pol = osc.json(
        "network", "rbac", "create", "--target-all-projects",
        "--action", "access_as_shared", "--type", "network", net["id"],
    )  # fmt: skip
    assert pol["object_id"] == net["id"] and pol["target_project_id"] == "*"
    assert pol["action"] == "access_as_shared" and pol["object_type"] == "network"
    assert osc.json("network", "show", net["id"])["shared"] is True
    listed = osc.json("network", "rbac", "list", "--type", "network", "--long")
    assert pol["id"] in [p["ID"] for p in listed]  # (with other tests' external networks')
    assert osc.json("network", "rbac", "show", pol["id"])["target_project_id"] == "*"
    # The same again: DuplicateRbacPolicy, and the CLI says so.
    dup = osc.run(
        "network", "rbac", "create", "--target-all-projects",
        "--action", "access_as_shared", "--type", "network", net["id"],
    )  # fmt: skip
    assert dup.returncode != 0 and "already exists" in dup.stderr
    # An unknown type: the CLI's own choices refuse it before the server sees it; the
    # server's answer to one is tests/api/test_rbac_policies.py's.
    ext = osc.json(
        "network", "rbac", "create", "--target-all-projects",
        "--action", "access_as_external", "--type", "network", net["id"],
    )  # fmt: skip
    assert osc.json("network", "show", net["id"])["router:external"] is True
    osc.ok("network", "rbac", "delete", pol["id"], ext["id"])
    left = [p["ID"] for p in osc.json("network", "rbac", "list")]
    assert pol["id"] not in left and ext["id"] not in left
    assert osc.json("network", "show", net["id"])["shared"] is False
    osc.ok("network", "delete", net["id"])


def test_network_meter_and_rules(osc: Osc) -> None:
    name = unique("meter")
    meter = osc.json("network", "meter", "create", "--description", "web", "--share", name)
    assert meter["name"] == name and meter["shared"] is True
    assert [m["ID"] for m in osc.json("network", "meter", "list")] == [meter["id"]]
    out = osc.json("network", "meter", "rule", "create", "--egress", "--remote-ip-prefix",
                   "10.0.0.0/24", meter["id"])  # fmt: skip
    assert out["direction"] == "egress" and out["remote_ip_prefix"] == "10.0.0.0/24"
    excluded = osc.json(
        "network", "meter", "rule", "create", "--ingress", "--exclude",
        "--source-ip-prefix", "192.0.2.0/24", "--destination-ip-prefix", "10.0.0.5",
        meter["id"],
    )  # fmt: skip
    assert excluded["is_excluded"] is True, excluded
    assert excluded["destination_ip_prefix"] == "10.0.0.5/32"
    # Neutron's errors through the CLI: remote with source/destination, an overlap
    bad = osc.run("network", "meter", "rule", "create", "--remote-ip-prefix", "10.1.0.0/16",
                  "--source-ip-prefix", "10.2.0.0/16", meter["id"])  # fmt: skip
    assert bad.returncode != 0 and "remote-ip-prefix" in bad.stderr
    clash = osc.run("network", "meter", "rule", "create", "--egress", "--remote-ip-prefix",
                    "10.0.0.128/25", meter["id"])  # fmt: skip
    assert clash.returncode != 0 and "overlaps another" in clash.stderr
    rules = osc.json("network", "meter", "rule", "list")
    assert {r["ID"] for r in rules} == {out["id"], excluded["id"]}
    shown = osc.json("network", "meter", "rule", "show", out["id"])
    assert shown["metering_label_id"] == meter["id"]
    osc.ok("network", "meter", "rule", "delete", out["id"])
    osc.ok("network", "meter", "delete", name)
    assert osc.json("network", "meter", "list") == []
    assert osc.json("network", "meter", "rule", "list") == []


def test_qos_policies_rules_and_rule_types(osc: Osc) -> None:
    types = osc.json("network", "qos", "rule", "type", "list")
    assert sorted(t["Type"] for t in types) == [
        "bandwidth_limit",
        "dscp_marking",
        "packet_rate_limit",
    ]
    detail = osc.json("network", "qos", "rule", "type", "show", "bandwidth_limit")
    assert detail["drivers"][0]["name"] == "wyvern"

    name = unique("qos")
    policy = osc.json("network", "qos", "policy", "create", "--share", "--default", name)
    assert policy["shared"] is True and policy["is_default"] is True
    bw = osc.json(
        "network", "qos", "rule", "create", "--type", "bandwidth-limit", "--max-kbps", "3000",
        "--max-burst-kbits", "2400", "--egress", name,
    )  # fmt: skip
    assert bw["max_kbps"] == 3000 and bw["direction"] == "egress"
    osc.json(
        "network", "qos", "rule", "create", "--type", "dscp-marking", "--dscp-mark", "26", name
    )
    # (the CLI has no packet-rate-limit type: tests/api/test_qos.py covers that rule)
    rules = osc.json("network", "qos", "rule", "list", name)
    assert sorted(r["Type"] for r in rules) == ["bandwidth_limit", "dscp_marking"]
    osc.ok("network", "qos", "rule", "set", "--max-kbps", "5000", name, bw["id"])
    shown = osc.json("network", "qos", "rule", "show", name, bw["id"])
    assert shown["max_kbps"] == 5000
    # Minimum bandwidth cannot be enforced here: refused, not ignored.
    refused = osc.run(
        "network", "qos", "rule", "create", "--type", "minimum-bandwidth", "--min-kbps", "1000",
        "--egress", name,
    )  # fmt: skip
    assert refused.returncode != 0 and "minimum_bandwidth is not supported" in refused.stderr

    # The default policy goes to new networks; a port takes its own.
    net = osc.json("network", "create", unique("net"))
    assert net["qos_policy_id"] == policy["id"]
    port = osc.json("port", "create", "--network", net["id"], "--qos-policy", name, unique("p"))
    assert port["qos_policy_id"] == policy["id"]
    in_use = osc.run("network", "qos", "policy", "delete", name)
    assert in_use.returncode != 0 and "is used by" in in_use.stderr
    osc.ok("port", "unset", "--qos-policy", port["id"])
    osc.ok("network", "set", "--no-qos-policy", net["id"])
    osc.ok("network", "qos", "rule", "delete", name, bw["id"])
    osc.ok("network", "qos", "policy", "set", "--no-default", "--no-share", name)
    shown = osc.json("network", "qos", "policy", "show", name)
    assert shown["is_default"] is False and shown["shared"] is False
    osc.ok("port", "delete", port["id"])
    osc.ok("network", "delete", net["id"])
    osc.ok("network", "qos", "policy", "delete", name)


def test_network_trunk(osc: Osc) -> None:
    """`openstack network trunk create|set|unset|show|list|delete` and `network subport
    list`, unchanged, and the forced subport delete's refusal without the option."""
    parent_net, sub_net = unique("tnet"), unique("snet")
    osc.ok("network", "create", parent_net)
    osc.ok("network", "create", sub_net)
    parent = osc.json("port", "create", "--network", parent_net, unique("parent"))
    sub1 = osc.json("port", "create", "--network", sub_net, unique("sub"))
    sub2 = osc.json("port", "create", "--network", sub_net, unique("sub"))
    name = unique("trunk")
    trunk = osc.json(
        "network", "trunk", "create", "--parent-port", parent["id"],
        "--subport", f"port={sub1['id']},segmentation-type=vlan,segmentation-id=100", name,
    )  # fmt: skip
    assert trunk["port_id"] == parent["id"] and trunk["status"] == "DOWN"
    assert [s["segmentation_id"] for s in trunk["sub_ports"]] == [100]
    osc.ok(
        "network", "trunk", "set",
        "--subport", f"port={sub2['id']},segmentation-type=vlan,segmentation-id=200", name,
    )  # fmt: skip
    subports = osc.json("network", "subport", "list", "--trunk", name)
    assert sorted(s["Segmentation ID"] for s in subports) == [100, 200]
    # the same VLAN again: Neutron's DuplicateSubPort, and the CLI fails
    sub3 = osc.json("port", "create", "--network", sub_net, unique("sub"))
    dup = osc.run(
        "network", "trunk", "set",
        "--subport", f"port={sub3['id']},segmentation-type=vlan,segmentation-id=200", name,
    )  # fmt: skip
    assert dup.returncode != 0 and "already in use on trunk" in dup.stderr
    # a subport cannot be deleted as a port without the force option
    refused = osc.run("port", "delete", sub1["id"])
    assert refused.returncode != 0 and "is currently a subport" in refused.stderr
    osc.ok("network", "trunk", "unset", "--subport", sub1["id"], name)
    assert [s["port_id"] for s in osc.json("network", "trunk", "show", name)["sub_ports"]] == [
        sub2["id"]
    ]
    assert name in [t["Name"] for t in osc.json("network", "trunk", "list")]
    osc.ok("network", "trunk", "set", "--name", f"{name}-2", "--description", "d", name)
    shown = osc.json("network", "trunk", "show", f"{name}-2")
    assert shown["description"] == "d"
    osc.ok("network", "trunk", "delete", f"{name}-2")
    for port in (parent, sub1, sub2, sub3):
        osc.ok("port", "delete", port["id"])
