"""The extensions we advertise. Clients decide features from this list: only what works."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UPDATED = "2026-11-23T00:00:00-00:00"


@dataclass(frozen=True, slots=True)
class Extension:
    alias: str
    name: str
    description: str

    def body(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "name": self.name,
            "description": self.description,
            "updated": UPDATED,
            "links": [],
        }


def _ext(alias: str, name: str, description: str) -> Extension:
    return Extension(alias, name, description)


EXTENSIONS: list[Extension] = [
    _ext("project-id", "project_id field enabled", "Resources carry project_id."),
    _ext("standard-attr-description", "standard-attr-description", "Descriptions on resources."),
    _ext("standard-attr-timestamp", "Resource timestamps", "created_at and updated_at."),
    _ext("standard-attr-revisions", "Resource revision numbers", "revision_number."),
    _ext("revision-if-match", "If-Match constraints based on revision_number", "If-Match."),
    _ext("standard-attr-tag", "Tag support for resources", "Tags on every resource."),
    _ext("tag-ports-during-bulk-creation", "Tag ports during bulk creation", "Tags in POST."),
    _ext("pagination", "Pagination support", "limit, marker and page_reverse."),
    _ext("sorting", "Sorting support", "sort_key and sort_dir."),
    _ext("filter-validation", "Filter parameters validation", "Unknown filters are rejected."),
    _ext("empty-string-filtering", "Empty string filtering", "Filtering on empty values."),
    _ext("fields", "Fields", "The fields query parameter."),
    _ext("service-type", "Service Type Management", "The service providers (read-only)."),
    _ext("quotas", "Quota management support", "Per-project quotas."),
    _ext("quota_details", "Quota details management support", "Quota usage details."),
    _ext(
        "quota-check-limit",
        "Quota engine limit check",
        "A limit below the usage is refused unless forced.",
    ),
    _ext(
        "quota-check-limit-default",
        "Quota engine limit check by default",
        "The usage is checked unless force is true.",
    ),
    _ext("network-mtu", "Network MTU", "The mtu attribute of networks."),
    _ext("net-mtu", "Network MTU", "The mtu attribute of networks."),
    _ext("net-mtu-writable", "Network MTU (writable)", "mtu can be set."),
    _ext("provider", "Provider Network", "provider:* attributes."),
    _ext("external-net", "Neutron external network", "router:external networks."),
    _ext("rbac-policies", "RBAC Policies", "Networks shared with projects (rbac-policies)."),
    _ext("rbac-security-groups", "Add security_group type to network RBAC", "Shared groups."),
    _ext("rbac-address-groups", "Add address_group type to RBAC", "Shared address groups."),
    _ext("rbac-address-scope", "Add address_scope type to RBAC", "Shared address scopes."),
    _ext("rbac-subnetpool", "Add subnetpool type to RBAC", "Shared subnet pools."),
    _ext("port-security", "Port Security", "port_security_enabled on networks and ports."),
    _ext("binding", "Port Binding", "binding:* attributes."),
    _ext("allowed-address-pairs", "Allowed Address Pairs", "allowed_address_pairs on ports."),
    _ext("extra_dhcp_opt", "Neutron Extra DHCP options", "extra_dhcp_opts on ports."),
    _ext("security-group", "security-group", "Security groups and rules."),
    _ext("stateful-security-group", "Stateful security group", "The stateful flag."),
    _ext("address-group", "Address group", "Address groups."),
    _ext(
        "security-groups-normalized-cidr", "Normalized CIDR field for SG rules", "normalized_cidr."
    ),
    _ext("security-groups-remote-address-group", "Remote address group", "Rules by group."),
    _ext("router", "Neutron L3 Router", "Routers and floating IPs."),
    _ext(
        "subnet_allocation",
        "Subnet Allocation",
        "Enables allocation of subnets from a subnet pool.",
    ),
    _ext(
        "subnetpool-prefix-ops",
        "Subnet Pool Prefix Operations",
        "Provides support for adjusting the prefix list of subnet pools.",
    ),
    _ext(
        "default-subnetpools",
        "Default Subnetpools",
        "Provides ability to mark and use a subnetpool as the default.",
    ),
    _ext(
        "address-scope",
        "Address scope",
        "Address scopes: routers route between subnets of one scope only, else by NAT.",
    ),
    _ext("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "enable_snat."),
    _ext("extraroute", "Neutron Extra Route", "Static routes on routers."),
    _ext("extraroute-atomic", "Atomically add/remove extra routes", "add/remove_extraroutes."),
    _ext("fip-port-details", "Floating IP Port Details Extension", "port_details on FIPs."),
    _ext("dvr", "Distributed Virtual Router", "Routers are distributed."),
    _ext(
        "floating-ip-port-forwarding",
        "Floating IP Port Forwarding",
        "TCP/UDP ports of a floating IP forwarded to an internal port (gateway chassis).",
    ),
    _ext(
        "floating-ip-port-forwarding-port-ranges",
        "Floating IP Port Forwarding support port ranges",
        "internal_port_range and external_port_range.",
    ),
    _ext(
        "expose-port-forwarding-in-fip",
        "Expose Floating IP port forwardings",
        "port_forwardings on floating IPs.",
    ),
    _ext(
        "floating-ip-port-forwarding-detail",
        "Floating IP port forwarding detail",
        "id and internal_port_id in a floating IP's port_forwardings.",
    ),
    _ext(
        "floating-ip-port-forwarding-description",
        "Floating IP Port Forwarding new attribute description",
        "A description on port forwardings.",
    ),
    _ext(
        "dns-integration",
        "DNS Integration",
        "dns_name and dns_assignment on ports, dns_domain on networks: DHCP gives them.",
    ),
    _ext("dns-domain-ports", "dns_domain for ports", "dns_domain on ports."),
    _ext("qos", "Quality of Service", "QoS policies on networks and ports: enforced rules only."),
    _ext(
        "qos-bw-limit-direction",
        "Direction for QoS bandwidth limit rule",
        "Bandwidth limits egress and ingress (OpenFlow meters).",
    ),
    _ext("qos-default", "QoS default policy", "A project's default QoS policy (is_default)."),
    _ext(
        "qos-rule-type-details",
        "Details of QoS rule types",
        "GET /v2.0/qos/rule-types/{type}: the driver and its parameters.",
    ),
    _ext("qos-pps", "QoS packet rate limit rule", "Packet rate limits (OpenFlow pktps meters)."),
    _ext("dscp-marking", "DSCP marking", "DSCP marks set on the VM's IP packets."),
    _ext("rbac-qos", "Add qos_policy type to RBAC", "Shared QoS policies."),
    _ext("agent", "agent", "The chassis as agents: list, show, enable/disable, delete."),
    _ext(
        "availability_zone",
        "Availability Zone",
        "Availability zones of the chassis (their availability_zone setting).",
    ),
    _ext(
        "network_availability_zone",
        "Network Availability Zone",
        "availability_zone_hints and availability_zones on networks.",
    ),
    _ext(
        "trunk",
        "Trunk Extension",
        "VLAN-aware VMs: subports demultiplexed by VLAN on the parent's VIF.",
    ),
    _ext("trunk-details", "Trunk port details", "trunk_details on a trunk's parent port."),
    _ext(
        "router_availability_zone",
        "Router Availability Zone",
        "availability_zone_hints place a router's gateway; availability_zones on routers.",
    ),
    _ext(
        "metering",
        "Neutron Metering",
        "Metering labels and rules: packets and bytes through router gateways (/metrics).",
    ),
    _ext(
        "metering_source_and_destination_fields",
        "Neutron Metering with source and destination filtering",
        "source_ip_prefix and destination_ip_prefix on metering label rules.",
    ),
]
