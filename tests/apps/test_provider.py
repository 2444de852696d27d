"""Provider networks through the simulator: flat and VLAN networks reach their physical
network by the patch port of the chassis's bridge mapping, tagged or not, and never a
tunnel; frames from the physical network reach the right network's ports only."""

from __future__ import annotations

from tests.apps import scenario as sc
from wyvern.ir import VLAN_PRESENT
from wyvern.ir import packet as pk
from wyvern.ir.ofports import PATCH_OFPORT_BASE, TUNNEL_OFPORTS, patch_ofports
from wyvern.ir.packet import Packet
from wyvern.model.view import LocalView

MAC_A, MAC_B, MAC_C, MAC_D, MAC_H = (f"fa:16:3e:00:00:0{c}" for c in "abcdf")
MAPPINGS = {"physnet1": "br-ex", "physnet2": "br-ex2"}
PATCH1 = patch_ofports(MAPPINGS)["physnet1"]
PATCH2 = patch_ofports(MAPPINGS)["physnet2"]


def provider(id: str, key: int, type_: str, physnet: str, seg: int | None) -> sc.Obj:
    return sc.network(
        id,
        key=key,
        **{
            "provider:network_type": type_,
            "provider:physical_network": physnet,
            "provider:segmentation_id": seg,
        },
    )


def view_of(*nets: sc.Obj, mappings: dict[str, str] = MAPPINGS) -> LocalView:
    """hv1 (us): a (ofport 1) and c (ofport 3) on the first network, with b on hv2; with a
    second network, d (ofport 4) on it. Chassis records as the agents write them."""
    first = nets[0]["id"]
    ports = [
        sc.port("a", first, key=1, mac=MAC_A, ips=["10.0.0.5"]),
        sc.port("b", first, key=2, mac=MAC_B, ips=["10.0.0.6"]),
        sc.port("c", first, key=3, mac=MAC_C, ips=["10.0.0.7"]),
    ]
    local = {"a": 1, "c": 3}
    subnets = [sc.subnet("s1", first, "10.0.0.0/24")]
    if len(nets) > 1:
        subnets.append(sc.subnet("s2", nets[1]["id"], "10.0.0.0/24"))  # same CIDR on purpose
        ports.append(sc.port("d", nets[1]["id"], key=1, mac=MAC_D, ips=["10.0.0.8"]))
        local["d"] = 4
    view = sc.build_view(
        networks=list(nets), subnets=subnets, ports=ports, local=local, chassis_name="hv1"
    )
    for name, ip in (("hv1", "192.0.2.1"), ("hv2", "192.0.2.2")):
        rec = {"name": name, "tunnel_ip": ip, "bridge_mappings": mappings}
        view.apply("chassis", name, sc.record_from_obj("chassis", rec))
    view.port_chassis["b"] = "hv2"
    return view


def from_patch(p: Packet, patch: int = PATCH1, vlan: int | None = None) -> Packet:
    p = p.copy()
    p["in_port"] = patch
    if vlan is not None:
        p["vlan_vid"] = VLAN_PRESENT | vlan
    return p


def test_patch_ports_are_numbered_from_the_sorted_physnets() -> None:
    assert patch_ofports(["physnet2", "physnet1"]) == {
        "physnet1": PATCH_OFPORT_BASE,
        "physnet2": PATCH_OFPORT_BASE + 1,
    }


def test_vlan_broadcast_leaves_by_the_patch_tagged_and_reaches_local_ports_untagged() -> None:
    s = sc.Scenario(view_of(provider("n1", 100, "vlan", "physnet1", 101)))
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert sorted(o.port for o in out.outputs) == [3, PATCH1], out.format()
    for o in out.outputs:
        want = VLAN_PRESENT | 101 if o.port == PATCH1 else 0
        assert o.packet["vlan_vid"] == want, out.format()
    assert not [o for o in out.outputs if o.port in TUNNEL_OFPORTS.values()]


def test_unicast_to_a_port_on_another_chassis_goes_by_the_physical_network() -> None:
    s = sc.Scenario(view_of(provider("n1", 100, "vlan", "physnet1", 101)))
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6"))
    assert out.ports == [PATCH1], out.trace.format()
    assert out.packets[PATCH1]["vlan_vid"] == VLAN_PRESENT | 101
    # an unknown MAC (a host on the segment) too; a local port stays local and untagged
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_H, "10.0.0.5", "10.0.0.9"))
    assert PATCH1 in out.ports, out.trace.format()
    out = s.outcome(pk.icmp_echo(1, MAC_A, MAC_C, "10.0.0.5", "10.0.0.7"))
    assert out.ports == [3] and out.packets[3]["vlan_vid"] == 0, out.trace.format()


def test_a_tagged_frame_from_the_patch_reaches_the_vm_untagged() -> None:
    s = sc.Scenario(view_of(provider("n1", 100, "vlan", "physnet1", 101)))
    out = s.outcome(from_patch(pk.icmp_echo(0, MAC_H, MAC_A, "10.0.0.9", "10.0.0.5"), vlan=101))
    assert out.ports == [1], out.trace.format()
    assert out.packets[1]["vlan_vid"] == 0
    # a broadcast from the segment reaches every local port, and never goes back out
    out = s.outcome(from_patch(pk.arp(0, MAC_H, "10.0.0.9", "10.0.0.5"), vlan=101))
    assert out.ports == [1, 3], out.trace.format()


def test_frames_with_another_vlan_or_untagged_are_dropped() -> None:
    s = sc.Scenario(view_of(provider("n1", 100, "vlan", "physnet1", 101)))
    echo = pk.icmp_echo(0, MAC_H, MAC_A, "10.0.0.9", "10.0.0.5")
    assert s.outcome(from_patch(echo, vlan=101)).ports == [1]  # the network's own VLAN
    assert s.outcome(from_patch(echo, vlan=102)).dropped
    assert s.outcome(from_patch(echo)).dropped  # untagged
    assert s.outcome(from_patch(echo, PATCH2, vlan=101)).dropped  # another physnet


def test_a_flat_network_is_untagged_both_ways() -> None:
    s = sc.Scenario(view_of(provider("n1", 100, "flat", "physnet2", None)))
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert sorted(o.port for o in out.outputs) == [3, PATCH2], out.format()
    assert all(o.packet["vlan_vid"] == 0 for o in out.outputs), out.format()
    echo = pk.icmp_echo(0, MAC_H, MAC_A, "10.0.0.9", "10.0.0.5")
    out = s.outcome(from_patch(echo, PATCH2))
    assert out.ports == [1] and out.packets[1]["vlan_vid"] == 0, out.trace.format()
    assert s.outcome(from_patch(echo, PATCH2, vlan=101)).dropped  # tagged: not ours
    assert s.outcome(from_patch(echo, PATCH1)).dropped  # another physnet


def test_two_vlan_networks_on_one_physnet_stay_isolated() -> None:
    s = sc.Scenario(
        view_of(
            provider("n1", 100, "vlan", "physnet1", 101),
            provider("n2", 200, "vlan", "physnet1", 102),
        )
    )
    # a broadcast on n1 reaches n1's local port and the wire with n1's tag only
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert sorted(o.port for o in out.outputs) == [3, PATCH1], out.format()
    assert out.outputs[0].packet["vlan_vid"] in (0, VLAN_PRESENT | 101)
    tagged = [o.packet["vlan_vid"] for o in out.outputs if o.port == PATCH1]
    assert tagged == [VLAN_PRESENT | 101]
    # and n2's VM (d) sends with 102
    out = s.run(pk.arp(4, MAC_D, "10.0.0.8", "10.0.0.200"))
    assert [(o.port, o.packet["vlan_vid"]) for o in out.outputs] == [
        (PATCH1, VLAN_PRESENT | 102)
    ], out.format()
    # from the wire: VLAN 102 reaches d only, VLAN 101 a and c only
    arp = pk.arp(0, MAC_H, "10.0.0.9", "10.0.0.200")
    assert s.outcome(from_patch(arp, vlan=102)).ports == [4]
    assert s.outcome(from_patch(arp, vlan=101)).ports == [1, 3]
    # a unicast to d's MAC with n1's tag goes nowhere (d is not on n1)
    echo = pk.icmp_echo(0, MAC_H, MAC_D, "10.0.0.9", "10.0.0.8")
    assert s.outcome(from_patch(echo, vlan=101)).dropped


def test_without_a_bridge_mapping_for_the_physnet_nothing_leaves() -> None:
    net = provider("n1", 100, "vlan", "physnet1", 101)
    s = sc.Scenario(view_of(net, mappings={"physnet2": "br-ex2"}))
    out = s.run(pk.arp(1, MAC_A, "10.0.0.5", "10.0.0.200"))
    assert sorted(o.port for o in out.outputs) == [3], out.format()
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_B, "10.0.0.5", "10.0.0.6")).dropped


def test_a_local_port_that_is_down_gets_nothing_not_even_by_the_physical_network() -> None:
    up = sc.Scenario(view_of(provider("n1", 100, "vlan", "physnet1", 101)))
    assert up.outcome(pk.icmp_echo(1, MAC_A, MAC_C, "10.0.0.5", "10.0.0.7")).ports == [3]
    view = view_of(provider("n1", 100, "vlan", "physnet1", 101))
    down = sc.port("c", "n1", key=3, mac=MAC_C, ips=[("s1", "10.0.0.7")], admin_state_up=False)
    view.apply("port", "c", sc.record_from_obj("port", down))
    s = sc.Scenario(view)
    assert s.outcome(pk.icmp_echo(1, MAC_A, MAC_C, "10.0.0.5", "10.0.0.7")).dropped
