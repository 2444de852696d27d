"""openstacksdk against a live server: the calls a Nova/Heat/Terraform-style client makes."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from openstack import exceptions
from openstack.connection import Connection

pytestmark = [
    pytest.mark.compat,
    # The clients' notes about their own future API changes are not about the server.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_network_lifecycle_with_tags(conn: Connection) -> None:
    name = unique("net")
    net = conn.network.create_network(name=name, description="compat")
    assert net.id and net.name == name and net.is_admin_state_up is True
    assert net.project_id == "default" and net.status == "ACTIVE"
    assert conn.network.get_network(net.id).description == "compat"

    revision = net.revision_number
    renamed = conn.network.update_network(net, name=name + "-2", mtu=1400)
    assert renamed.name == name + "-2" and renamed.mtu == 1400
    assert renamed.revision_number > revision

    conn.network.set_tags(renamed, ["red", "blue"])
    assert sorted(conn.network.get_network(net.id).tags) == ["blue", "red"]
    tagged = [n.id for n in conn.network.networks(tags="red,blue")]
    assert tagged == [net.id]
    assert net.id not in [n.id for n in conn.network.networks(not_tags="red")]

    conn.network.delete_network(net, ignore_missing=False)
    assert conn.network.find_network(net.id) is None
    with pytest.raises(exceptions.NotFoundException):
        conn.network.delete_network(net.id, ignore_missing=False)


def test_paginated_list_follows_next_links(conn: Connection) -> None:
    tag = unique("page")
    made = [conn.network.create_network(name=f"{tag}-{i}", tags=[tag]).id for i in range(5)]
    try:
        # One raw page: two items and Neutron's links (`previous` too, even on the first).
        page = conn.network.get("/networks", params={"limit": 2, "tags": tag}).json()
        assert len(page["networks"]) == 2
        assert [link["rel"] for link in page["networks_links"]] == ["next", "previous"]
        # The SDK's generator walks every page, without repeats.
        listed = [n.id for n in conn.network.networks(limit=2, tags=tag, sort_key="name")]
        assert listed == made
    finally:
        for id_ in made:
            conn.network.delete_network(id_)


def test_subnet_defaults_and_update(conn: Connection) -> None:
    net = conn.network.create_network(name=unique("net"))
    subnet = conn.network.create_subnet(
        network_id=net.id, ip_version=4, cidr="10.20.0.0/24", name=unique("sub")
    )
    assert subnet.gateway_ip == "10.20.0.1"
    assert subnet.allocation_pools == [{"start": "10.20.0.2", "end": "10.20.0.254"}]
    assert subnet.is_dhcp_enabled is True
    assert conn.network.get_network(net.id).subnet_ids == [subnet.id]

    updated = conn.network.update_subnet(subnet, dns_nameservers=["192.0.2.53"])
    assert updated.dns_nameservers == ["192.0.2.53"]

    conn.network.delete_subnet(subnet, ignore_missing=False)
    conn.network.delete_network(net, ignore_missing=False)


def test_port_lifecycle_and_ip_conflict(conn: Connection) -> None:
    net = conn.network.create_network(name=unique("net"))
    subnet = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.30.0.0/24")
    port = conn.network.create_port(network_id=net.id, name=unique("port"))
    assert port.mac_address.startswith("fa:16:3e:")
    (fixed,) = port.fixed_ips
    assert fixed["subnet_id"] == subnet.id
    assert ipaddress.ip_address(fixed["ip_address"]) in ipaddress.ip_network("10.30.0.0/24")
    assert len(port.security_group_ids) == 1  # the project's default group

    # Allocation is random over the pool, as in Neutron: pin an address the first port lacks.
    want = "10.30.0.51" if fixed["ip_address"] == "10.30.0.50" else "10.30.0.50"
    pinned = conn.network.create_port(
        network_id=net.id, fixed_ips=[{"subnet_id": subnet.id, "ip_address": want}]
    )
    assert pinned.fixed_ips[0]["ip_address"] == want
    with pytest.raises(exceptions.ConflictException) as exc:
        conn.network.create_port(
            network_id=net.id, fixed_ips=[{"subnet_id": subnet.id, "ip_address": want}]
        )
    assert f"{want} is in use" in str(exc.value)

    updated = conn.network.update_port(port, name="renamed", device_id="vm-1")
    assert (updated.name, updated.device_id) == ("renamed", "vm-1")
    assert [p.id for p in conn.network.ports(device_id="vm-1")] == [port.id]

    # A network with ports cannot go; its ports can.
    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_network(net, ignore_missing=False)
    for p in (port, pinned):
        conn.network.delete_port(p, ignore_missing=False)
    conn.network.delete_subnet(subnet, ignore_missing=False)
    conn.network.delete_network(net, ignore_missing=False)


def test_router_interface_gateway_and_floating_ip(conn: Connection) -> None:
    ext = conn.network.create_network(
        name=unique("ext"),
        is_router_external=True,
        provider_network_type="vlan",
        provider_physical_network="physnet1",
    )
    ext_sub = conn.network.create_subnet(
        network_id=ext.id, ip_version=4, cidr="198.51.100.0/24", is_dhcp_enabled=False
    )
    net = conn.network.create_network(name=unique("int"))
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.40.0.0/24")
    router = conn.network.create_router(
        name=unique("router"), external_gateway_info={"network_id": ext.id}
    )
    assert router.external_gateway_info["network_id"] == ext.id

    info = conn.network.add_interface_to_router(router, sub.id)
    assert info["subnet_id"] == sub.id and info["id"] == router.id
    (rif,) = conn.network.ports(device_id=router.id, device_owner="network:router_interface")
    assert rif.id == info["port_id"]
    assert rif.fixed_ips[0]["ip_address"] == "10.40.0.1"  # the subnet's gateway

    vm = conn.network.create_port(network_id=net.id)
    fip = conn.network.create_ip(floating_network_id=ext.id)
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network("198.51.100.0/24")
    assert fip.port_id is None

    fip = conn.network.update_ip(fip, port_id=vm.id)
    assert fip.port_id == vm.id and fip.router_id == router.id
    assert fip.fixed_ip_address == vm.fixed_ips[0]["ip_address"]
    assert fip.status == "DOWN"  # no agent here installs its flows
    assert [f.id for f in conn.network.ips(port_id=vm.id)] == [fip.id]

    fip = conn.network.update_ip(fip, port_id=None)
    assert fip.port_id is None and fip.fixed_ip_address is None
    conn.network.delete_ip(fip, ignore_missing=False)

    conn.network.delete_port(vm, ignore_missing=False)
    conn.network.remove_interface_from_router(router, sub.id)
    owner = "network:router_interface"
    assert list(conn.network.ports(device_id=router.id, device_owner=owner)) == []
    conn.network.update_router(router, external_gateway_info={})
    conn.network.delete_router(router, ignore_missing=False)
    for s in (sub, ext_sub):
        conn.network.delete_subnet(s, ignore_missing=False)
    for n in (net, ext):
        conn.network.delete_network(n, ignore_missing=False)


def test_security_group_and_rules(conn: Connection) -> None:
    sg = conn.network.create_security_group(name=unique("sg"), description="web")
    # A new group allows all egress, for IPv4 and IPv6.
    egress = {(r["direction"], r["ethertype"]) for r in sg.security_group_rules}
    assert egress == {("egress", "IPv4"), ("egress", "IPv6")}

    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="0.0.0.0/0",
    )
    assert (rule.protocol, rule.port_range_min, rule.port_range_max) == ("tcp", 22, 22)
    with pytest.raises(exceptions.ConflictException):
        conn.network.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            ethertype="IPv4",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix="0.0.0.0/0",
        )
    listed = [r.id for r in conn.network.security_group_rules(security_group_id=sg.id)]
    assert rule.id in listed and len(listed) == 3

    conn.network.delete_security_group_rule(rule, ignore_missing=False)
    conn.network.delete_security_group(sg, ignore_missing=False)
    assert conn.network.find_security_group(sg.id) is None


def test_quotas_and_extensions(conn: Connection) -> None:
    quota = conn.network.get_quota("default")
    assert quota.networks == 100 and quota.ports == 500
    aliases = {e.alias for e in conn.network.extensions()}
    assert {"router", "security-group", "standard-attr-tag"} <= aliases


def test_subnet_pools_and_address_scopes(conn: Connection) -> None:
    scope = conn.network.create_address_scope(name="as-sdk", ip_version=4)
    pool = conn.network.create_subnet_pool(
        name="pool-sdk",
        prefixes=["10.210.0.0/16"],
        default_prefix_length=24,
        address_scope_id=scope.id,
    )
    assert pool.address_scope_id == scope.id and pool.minimum_prefix_length == 8
    net = conn.network.create_network(name="n-sdk")
    sub = conn.network.create_subnet(
        network_id=net.id, ip_version=4, subnet_pool_id=pool.id, prefix_length=25
    )
    assert sub.cidr == "10.210.0.0/25" and sub.subnet_pool_id == pool.id
    assert conn.network.get_network(net.id).ipv4_address_scope_id == scope.id
    assert "subnet_allocation" in {e.alias for e in conn.network.extensions()}
    conn.network.delete_subnet(sub)
    conn.network.delete_network(net)
    conn.network.delete_subnet_pool(pool)
    conn.network.delete_address_scope(scope)


def test_metering_labels_and_rules(conn: Connection) -> None:
    label = conn.network.create_metering_label(name=unique("meter"), is_shared=False)
    assert conn.network.get_metering_label(label.id).name == label.name
    rule = conn.network.create_metering_label_rule(
        metering_label_id=label.id, direction="ingress", remote_ip_prefix="10.0.0.0/24"
    )
    assert rule.direction == "ingress" and rule.is_excluded is False
    pair = conn.network.create_metering_label_rule(
        metering_label_id=label.id,
        direction="egress",
        source_ip_prefix="10.0.0.0/24",
        destination_ip_prefix="192.0.2.0/24",
    )
    listed = {r.id for r in conn.network.metering_label_rules(metering_label_id=label.id)}
    assert listed == {rule.id, pair.id}
    assert label.id in {m.id for m in conn.network.metering_labels()}
    conn.network.delete_metering_label(label)
    assert conn.network.find_metering_label(label.id) is None
    assert [r.id for r in conn.network.metering_label_rules(metering_label_id=label.id)] == []
