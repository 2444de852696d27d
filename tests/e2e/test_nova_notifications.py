"""Nova notifications for real: a chassis agent on real OVS reports its ports, and the
API's notifier tells a Nova stand-in (tests/novaapi.py), found in a real Keystone's
catalog as `compute`, which validates the service user's token with that Keystone and
records the events. The exact sequence Neutron would send for a server's port: boot,
unplug and replug, a fixed IP change, a rebinding to another host and back, a floating
IP associated and moved, and the delete.

The chassis fixture's API (noauth) is restarted on the same run dir with the [nova]
settings; the agent writes its statuses into the same SQLite store meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Chassis
from tests.harness import start_api
from tests.keystone import KeystoneServer
from tests.novaapi import NovaApi, keystone_validator, nova_env, nova_options, register_compute
from wyvern.southbound import vif

pytestmark = pytest.mark.system

STATUS_EVENTS = ("network-vif-plugged", "network-vif-unplugged")


@pytest.fixture
def nova_chassis(chassis: Chassis, keystone: KeystoneServer) -> Iterator[tuple[Chassis, NovaApi]]:
    service = keystone.service_user(f"neutron-{uuid.uuid4().hex[:8]}")
    with NovaApi(keystone_validator(keystone)) as nova:
        register_compute(keystone, nova.endpoint)
        chassis.api.stop()
        chassis.api = start_api(chassis.run_dir, env=nova_env(nova_options(service), 0.5))
        try:
            yield chassis, nova
        finally:
            chassis.api.stop()


class Expect:
    """The events Nova got, checked against the whole expected sequence at each step (so
    an extra or duplicate event shows up as a mismatch)."""

    def __init__(self, nova: NovaApi, chassis: Chassis) -> None:
        self.nova = nova
        self.chassis = chassis
        self.want: list[dict[str, Any]] = []

    def __call__(self, *events: dict[str, Any], timeout: float = 30.0) -> None:
        self.want += events
        deadline = time.monotonic() + timeout
        while len(self.nova.state.events()) < len(self.want):
            assert time.monotonic() < deadline, (
                f"Nova got {self.nova.state.events()}, expected {self.want}\n"
                f"refused: {self.nova.state.refused}\n{self.chassis.api.log}"
            )
            time.sleep(0.05)
        got = self.nova.state.events()
        assert got == self.want, f"got {got}\nwanted {self.want}"


def test_the_events_nova_gets_for_a_servers_port(
    nova_chassis: tuple[Chassis, NovaApi],
) -> None:
    c, nova = nova_chassis
    host = c.env["WYVERN_CHASSIS_NAME"]
    expect = Expect(nova, c)
    ext = c.post(
        "networks",
        name="ext",
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    c.post("subnets", network_id=ext["id"], cidr="203.0.113.0/24", ip_version=4)
    net = c.post("networks", name="n")
    sub = c.post("subnets", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    router = c.post("routers", name="r", external_gateway_info={"network_id": ext["id"]})
    c.action("routers", router["id"], "add_router_interface", subnet_id=sub["id"])
    server = str(uuid.uuid4())

    def ev(name: str, port: dict[str, Any], status: str | None = "completed") -> dict[str, Any]:
        out = {"name": name, "server_uuid": server, "tag": port["id"]}
        return {**out, "status": status} if name in STATUS_EVENTS and status else out

    # Boot: Nova creates the port on the host, the VIF is plugged, the agent installs its
    # flows and reports it ACTIVE: network-vif-plugged, completed.
    port = c.post(
        "ports",
        network_id=net["id"],
        device_id=server,
        device_owner="compute:nova",
        **{"binding:host_id": host},
    )
    # (a port of no server, plugged too: never notified)
    c.vm(net, "not-a-server")
    c.plug(port)
    c.wait_active(port)
    expect(ev("network-vif-plugged", port))

    # Unplugged (the VIF leaves OVS): network-vif-unplugged; plugged again.
    vif.unplug(c.ovs, port["id"], delete_netns=True)
    c.vms = [(p, ns) for p, ns in c.vms if p != port["id"]]
    expect(ev("network-vif-unplugged", port))
    c.plug(port)
    c.wait_active(port)
    expect(ev("network-vif-plugged", port))

    # A second fixed IP: network-changed only (the port stays ACTIVE throughout).
    ip = port["fixed_ips"][0]
    c.put("ports", port["id"], fixed_ips=[ip, {"subnet_id": sub["id"]}])
    expect(ev("network-changed", port))

    # Rebound to another host (a cold migration's step): ML2 resets the status, so Nova
    # hears unplugged and changed; bound back here, where it is plugged: plugged, changed.
    c.put("ports", port["id"], **{"binding:host_id": "another-host"})
    expect(ev("network-vif-unplugged", port), ev("network-changed", port))
    c.put("ports", port["id"], **{"binding:host_id": host})
    expect(ev("network-vif-plugged", port), ev("network-changed", port))
    assert c.get("ports", port["id"])["status"] == "ACTIVE"

    # A floating IP associated, then moved to another server's port: network-changed for
    # each server whose port it touched, the one it left first (as Neutron).
    other_server = str(uuid.uuid4())
    other = c.post(
        "ports", network_id=net["id"], device_id=other_server, device_owner="compute:nova"
    )
    fip = c.post(
        "floatingips",
        floating_network_id=ext["id"],
        port_id=port["id"],
        fixed_ip_address=ip["ip_address"],
    )
    expect(ev("network-changed", port))
    c.put("floatingips", fip["id"], port_id=other["id"])
    expect(
        ev("network-changed", port),
        {"name": "network-changed", "server_uuid": other_server, "tag": other["id"]},
    )
    c.put("floatingips", fip["id"], port_id=None)
    expect({"name": "network-changed", "server_uuid": other_server, "tag": other["id"]})

    # Deleted while plugged: network-vif-deleted (and nothing for the status key the
    # agent then removes).
    c.delete("ports", port["id"])
    expect(ev("network-vif-deleted", port))
    other_vm = c.post(
        "ports", network_id=net["id"], device_id=other_server, device_owner="compute:nova"
    )
    c.plug(other_vm)
    c.wait_active(other_vm)
    # (a later event arrives after it: nothing was sent for the delete's aftermath)
    plugged = {"name": "network-vif-plugged", "server_uuid": other_server, "tag": other_vm["id"]}
    expect({**plugged, "status": "completed"})

    # Every request came from the service user, at Neutron's microversion.
    assert nova.state.refused == []
    assert all(r.roles & {"admin", "service"} for r in nova.state.requests)
    assert {r.microversion for r in nova.state.requests} == {"2.1"}
