"""The store's key layout: the one contract between the API (the only writer of API
objects) and the agents (who follow them and write port statuses and chassis records).

    /wyvern/<kind>/<id>                      top-level objects (networks, routers, ...)
    /wyvern/<kind>/<parent-id>/<id>          children (subnets and ports under their network,
                                             rules under their security group)
    /wyvern/index/<kind>/<id>                child id -> parent id, to get a child by id
    /wyvern/index/host_ports/<host>/<port>   a port requested on a host -> its network id
    /wyvern/owner/<project>/<kind>/<id>      ownership index, for quota counts
    /wyvern/uniq/<namespace>/.../<value>     create-if-absent claims (IPs, MACs, keys)
    /wyvern/quotas/<project>                 a project's quota overrides
    /wyvern/rbac_policies/<id>               RBAC policies (API only; agents never read them)
    /wyvern/intent/<kind>/<id>               a delete in progress, on its process's lease
    /wyvern/status/ports/<network>/<port>    a port's binding status, written by its agent
    /wyvern/status/floatingips/<id>          a floating IP NATed by a chassis (its agent)
    /wyvern/status/gateways/<router>         the chassis hosting a router's gateway (its agent)
    /wyvern/status/metering/<chassis>        a chassis's metering label counters (its agent)
    /wyvern/status/router_ports/<port>/<chassis>  a router interface routed there, with
                                             its flows installed (that chassis's agent)
    /wyvern/mac_bindings/<network>/<id>      a neighbour's MAC learned by an agent (ARP)
    /wyvern/chassis/<name>                   a live chassis (on a store lease)
    /wyvern/agents/<name>                    the agent registry (no lease; GET /v2.0/agents)
    /wyvern/nova/notifier                    the API process that notifies Nova (on its lease)

Children sit under their parent so that an agent can follow one network (or one group)
by prefix. Ids are fixed-length UUIDs, so an object's key is also a prefix of only itself.
No other module spells a key prefix.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from typing import Literal

ROOT = "/wyvern/"
_MAC_BINDINGS = uuid.UUID("5f0c1d8e-7a43-4e57-9a55-0b8d2f6c4e21")  # uuid5 namespace

ViewKind = Literal[
    "network", "subnet", "port", "router", "security_group", "security_group_rule",
    "address_group", "chassis", "mac_binding", "metering_label",
    "address_group", "chassis", "mac_binding", "qos_policy",
]  # fmt: skip

# Store kind segment -> view kind, for every object kind an agent follows.
STORE_KINDS: dict[str, ViewKind] = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "security_groups": "security_group",
    "security_group_rules": "security_group_rule",
    "address_groups": "address_group",
    "qos_policies": "qos_policy",
    "chassis": "chassis",
    "mac_bindings": "mac_binding",
    "metering_labels": "metering_label",
}
# Kinds stored under a parent: /wyvern/<kind>/<parent id>/<id>.
CHILD_KINDS = frozenset(
    {"subnets", "ports", "security_group_rules", "mac_bindings", "metering_label_rules"}
)
# Segments under ROOT that hold no API object an agent follows: claims, ownership and
# child -> parent indexes, quotas, the agent registry.
UNFOLLOWED_SEGMENTS = frozenset(
    {
        "uniq",
        "owner",
        "index",
        "quotas",
        "agents",
        "intent",
        "nova",
        "rbac_policies",
        "trunks",
        # The API's own rule records: agents read the rules from their label's `_rules`.
        "metering_label_rules",
    }
)

CHASSIS_PREFIX = f"{ROOT}chassis/"
AGENTS_PREFIX = f"{ROOT}agents/"
STATUS_PORTS = f"{ROOT}status/ports/"
STATUS_FIPS = f"{ROOT}status/floatingips/"
STATUS_GATEWAYS = f"{ROOT}status/gateways/"
STATUS_METERING = f"{ROOT}status/metering/"
METERING_LABELS = f"{ROOT}metering_labels/"
STATUS_ROUTER_PORTS = f"{ROOT}status/router_ports/"
HOST_PORTS = f"{ROOT}index/host_ports/"
QUOTAS_PREFIX = f"{ROOT}quotas/"
INTENTS_PREFIX = f"{ROOT}intent/"
# The one API process (of all on the store) that sends Nova its events holds this key on
# its lease (wyvern.api.nova).
NOVA_NOTIFIER_KEY = f"{ROOT}nova/notifier"


# ----------------------------------------------------------------------------- API objects


def obj_key(kind: str, id_: str, parent: str | None = None) -> str:
    return f"{ROOT}{kind}/{parent}/{id_}" if parent else f"{ROOT}{kind}/{id_}"


def kind_prefix(kind: str, parent: str | None = None) -> str:
    """Every object of a kind (under one parent, for children)."""
    return f"{ROOT}{kind}/{parent}/" if parent else f"{ROOT}{kind}/"


def index_key(kind: str, id_: str) -> str:
    return f"{ROOT}index/{kind}/{id_}"


def host_port_key(host: str, port_id: str) -> str:
    """A port requested on a host (binding:host_id) -> its network id: what a chassis
    follows to learn which networks its ports will need before they are plugged (OVN's
    requested-chassis), and how a fake chassis (no OVS) knows what to bind."""
    return f"{host_ports_prefix(host)}{port_id}"


def host_ports_prefix(host: str) -> str:
    return f"{HOST_PORTS}{host.replace('/', '%2F')}/"


def owner_key(project: str, kind: str, id_: str) -> str:
    return f"{owner_prefix(project, kind)}{id_}"


def owner_prefix(project: str, kind: str) -> str:
    return f"{ROOT}owner/{project}/{kind}/"


def uniq_key(*parts: object) -> str:
    return ROOT + "uniq/" + "/".join(str(p) for p in parts)


def uniq_prefix(*parts: object) -> str:
    return uniq_key(*parts) + "/"


def quota_key(project: str) -> str:
    return f"{QUOTAS_PREFIX}{project}"


def intent_key(kind: str, id_: str) -> str:
    """The live intent behind an object's `_deleting` mark (see wyvern.api.repo)."""
    return f"{INTENTS_PREFIX}{kind}/{id_}"


# ----------------------------------------------------------------------------- agent records


def status_prefix(network_id: str) -> str:
    """A network's port statuses: followed with the network, so a port's status wakes only
    the chassis that follow its network."""
    return f"{STATUS_PORTS}{network_id}/"


def status_key(network_id: str, port_id: str) -> str:
    return f"{STATUS_PORTS}{network_id}/{port_id}"


def mac_binding_id(network_id: str, ip: str) -> str:
    """The id of the MAC binding of IP in a network: a UUID derived from both, so keys
    stay fixed-length and a re-learn (or another chassis learning it) replaces it."""
    return str(uuid.uuid5(_MAC_BINDINGS, f"{network_id}/{ipaddress.ip_address(ip)}"))


def mac_binding_key(network_id: str, ip: str) -> str:
    return obj_key("mac_bindings", mac_binding_id(network_id, ip), network_id)


def fip_status_key(fip_id: str) -> str:
    """ACTIVE while the chassis that NATs the floating IP has its flows installed."""
    return f"{STATUS_FIPS}{fip_id}"


def gateway_status_key(router_id: str) -> str:
    """Names the chassis that hosts the router's gateway, with its flows installed."""
    return f"{STATUS_GATEWAYS}{router_id}"


def metering_status_key(chassis: str) -> str:
    """A chassis's metering counters: per label, router and direction, with the flow
    readings they were summed from (so a restarted agent carries on from them)."""
    return f"{STATUS_METERING}{chassis.replace('/', '%2F')}"


def router_port_status_prefix(port_id: str) -> str:
    """The chassis that route for a router interface port with its flows installed (a
    distributed router's port is on every chassis that follows its network)."""
    return f"{STATUS_ROUTER_PORTS}{port_id}/"


def router_port_status_key(port_id: str, chassis: str) -> str:
    return f"{router_port_status_prefix(port_id)}{chassis}"


def chassis_key(name: str) -> str:
    return f"{CHASSIS_PREFIX}{name}"


def registry_key(name: str) -> str:
    return f"{AGENTS_PREFIX}{name}"


# -------------------------------------------------------------------- what an agent follows


def network_prefixes(network_id: str) -> tuple[str, ...]:
    """Everything of one network: its record, subnets, ports and port statuses."""
    return (
        obj_key("networks", network_id),
        kind_prefix("subnets", network_id),
        kind_prefix("ports", network_id),
        status_prefix(network_id),
        kind_prefix("mac_bindings", network_id),
    )


def rules_prefix(sg_id: str) -> str:
    return kind_prefix("security_group_rules", sg_id)


def router_prefixes(router_id: str) -> tuple[str, ...]:
    return (obj_key("routers", router_id),)


def gateway_prefixes(router_id: str) -> tuple[str, ...]:
    """A router's gateway status: followed for the routers with a gateway, so that every
    chassis knows which one hosts it (a tie of priorities keeps it there)."""
    return (gateway_status_key(router_id),)


def group_prefixes(sg_id: str) -> tuple[str, ...]:
    return (obj_key("security_groups", sg_id), rules_prefix(sg_id))


def address_group_prefixes(ag_id: str) -> tuple[str, ...]:
    return (obj_key("address_groups", ag_id),)


def qos_policy_prefixes(policy_id: str) -> tuple[str, ...]:
    """A QoS policy's record (it holds its rules)."""
    return (obj_key("qos_policies", policy_id),)


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a store key holds for an agent: an object (view kind, id); with kind
    "status", a port's binding status (id = the port id); with kind "gateway_host", the
    chassis hosting a router's gateway (id = the router id)."""

    kind: ViewKind | Literal["status", "gateway_host"]
    id: str


def decode_key(key: str) -> Decoded | None:
    """Map a store key to what it holds; None for keys no agent follows."""
    if not key.startswith(ROOT):
        return None
    parts = key[len(ROOT) :].split("/")
    if not parts or parts[0] in UNFOLLOWED_SEGMENTS:
        return None
    if parts[0] == "status":
        if len(parts) == 4 and parts[1] == "ports" and parts[2] and parts[3]:
            return Decoded("status", parts[3])
        if len(parts) == 3 and parts[1] == "gateways" and parts[2]:
            return Decoded("gateway_host", parts[2])
        return None
    kind = STORE_KINDS.get(parts[0])
    if kind is None or len(parts) not in (2, 3) or not parts[-1]:
        return None
    return Decoded(kind, parts[-1])


def requested_port(key: str) -> str | None:
    """The port id of a host_ports index key (a port requested on a host), else None."""
    if not key.startswith(HOST_PORTS):
        return None
    port_id = key[len(HOST_PORTS) :].partition("/")[2]
    return port_id if port_id and "/" not in port_id else None


def status_port(key: str) -> str | None:
    """The port id of a port status key, else None."""
    decoded = decode_key(key)
    return decoded.id if decoded is not None and decoded.kind == "status" else None
