"""`wyvern up`: the all-in-one, as an ordered list of components under one supervisor.

Components start in list order (each is ready before the next starts) and stop in
reverse, so nothing outlives what it depends on: a private OVS (userspace datapath, in
its own network namespace, under <run_dir>/ovs), the API on the embedded store, then the
chassis agent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from wyvern.config import Settings
from wyvern.supervisor import Component, ComponentError

if TYPE_CHECKING:
    from wyvern.controller.agent import Agent
    from wyvern.nb.store import Store
    from wyvern.southbound.ovs import OvsInstance

LOG = logging.getLogger("wyvern.up")


def components(settings: Settings, *, access_log: bool = True) -> list[Component]:
    """What `wyvern up` runs, in start order: private OVS, API, agent."""
    parts: list[Component] = []
    if settings.ovs_mode == "private":
        parts.append(OvsComponent(settings))
    from wyvern.server import ApiComponent  # (the API's imports only where it runs)

    parts.append(ApiComponent(settings, access_log=access_log))
    parts.append(AgentComponent(settings))
    return parts


class OvsComponent:
    """A private ovsdb-server + ovs-vswitchd with br-int (created once, never re-set).

    Daemons already running in the OVS run dir are attached to, not restarted.
    """

    name = "ovs"

    def __init__(self, settings: Settings, *, stop_on_exit: bool = True) -> None:
        self.settings = settings
        self.stop_on_exit = stop_on_exit
        self.ovs: OvsInstance | None = None

    def start(self) -> None:
        from wyvern.southbound.ovs import OvsInstance

        s = self.settings
        self.ovs = OvsInstance.start(s.agent_ovs_dir, s.agent_netns)
        self.ovs.ensure_bridge(s.bridge)
        LOG.info("ovs: run dir %s, netns %s, bridge %s", s.agent_ovs_dir, s.agent_netns, s.bridge)

    def check(self) -> str | None:
        if self.ovs is not None and not self.ovs.running:
            return f"OVS daemons in {self.ovs.run_dir} are not running"
        return None

    def stop(self) -> None:
        if self.ovs is not None and self.stop_on_exit:
            self.ovs.stop()
        self.ovs = None


def open_ovs(settings: Settings) -> OvsInstance:
    """The chassis's OVS as the settings name it (already running: attach)."""
    from wyvern.southbound.ovs import OvsInstance

    return OvsInstance.attach(settings.agent_ovs_dir, settings.agent_netns)


class AgentComponent:
    """The chassis agent on its own store connection, driving the OVS of the settings."""

    name = "agent"

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store
        self.agent: Agent | None = None
        self._opened: Store | None = None

    def start(self) -> None:
        from wyvern.controller.agent import Agent
        from wyvern.controller.chassis import ChassisInfo
        from wyvern.controller.dhcp import DhcpSettings
        from wyvern.controller.metadata import MetadataSettings
        from wyvern.controller.ra import RaSettings
        from wyvern.nb.factory import open_store
        from wyvern.southbound.ovs import OvsError

        s = self.settings
        if s.store == "memory" and self.store is None:
            LOG.warning("agent: the memory store is private to each process; use sqlite or etcd")
        ovs = None
        if s.ovs_mode != "fake":
            try:
                ovs = open_ovs(s)
            except OvsError as exc:
                raise ComponentError(f"agent: no OVS to drive: {exc}") from exc
        store = self.store if self.store is not None else open_store(s)
        self._opened = store if self.store is None else None
        # The chassis name is also the host that binding:host_id names (Nova's host).
        info = ChassisInfo(
            s.agent_chassis,
            s.tunnel_ip,
            hostname=s.agent_chassis,
            encaps=tuple(s.encaps),
            bridge_mappings=dict(s.bridge_mappings),
            bridge=s.bridge,
            gateway_priority=s.gateway_priority,
            availability_zone=s.availability_zone,
            underlay_interface=s.underlay_interface,
            underlay_bridge=s.underlay_bridge,
            tunnel_prefixlen=s.tunnel_prefixlen,
        )
        # A gateway chassis may host the gateway of any router on the physnets it maps
        # and routes what other chassis send through it: it follows everything.
        selective = s.gateway_priority == 0 and (
            s.distribution == "selective" or (s.distribution == "auto" and s.store == "etcd")
        )
        self.agent = Agent(
            store,
            ovs,
            info,
            bridge=s.bridge,
            lease_ttl=s.agent_lease_ttl,
            selective=selective,
            liveness_grace=s.agent_liveness_grace,
            mac_binding_refresh=s.agent_mac_binding_refresh,
            metering_interval=s.agent_metering_interval,
            router_adverts=RaSettings(s.min_rtr_adv_interval, s.max_rtr_adv_interval, s.dns_domain),
            dhcp=DhcpSettings(lease_time=s.dhcp_lease_duration, domain_name=s.dns_domain),
            metrics_file=s.agent_metrics_file,
            metadata=MetadataSettings(
                nova_metadata_host=s.nova_metadata_host,
                nova_metadata_port=s.nova_metadata_port,
                nova_metadata_protocol=s.nova_metadata_protocol,
                metadata_proxy_shared_secret=s.metadata_proxy_shared_secret,
            ),
        )
        self.agent.start()
        LOG.info(
            "agent: chassis %s (tunnel %s) on %s, %s distribution, %d flows installed",
            info.name,
            info.tunnel_ip,
            ovs.run_dir if ovs is not None else "no switch (fake)",
            "selective" if selective else "full",
            len(self.agent.installer.installed),
        )

    def check(self) -> str | None:
        return self.agent.check() if self.agent is not None else None

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self._opened is not None:
            self._opened.close()
            self._opened = None
