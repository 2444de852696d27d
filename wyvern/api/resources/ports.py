"""Ports: IPAM, MAC addresses, dataplane keys, port security, bindings and Neutron's rules.

Every value a port holds exclusively is a create-if-absent claim written in the port's own
transaction, owned by the port id: `uniq/ip/<subnet>/<ip>`, `uniq/mac/<network>/<mac>` and
`uniq/portkey/<network>/<n>` (the small integer the dataplane carries in Geneve options). To
pick a free address a port tries random candidates that this process's hints (the subnet's
claims, read once in full) say are free, checking each with one point read; a candidate taken
meanwhile by another API server fails the claim's guard and the whole create re-runs, so the
guard, never a read, is what makes an address unique. Exhaustion is decided only on a fresh
full read of the claims. A port create guards the
revision of its network and of each subnet it takes an address from, so a concurrent
network or subnet delete (which first bumps those revisions) can never leave it orphaned.

Routers and floating IPs create their ports through `create_internal` inside their own
transactions, and every port delete calls their `port_deleted_ops` hooks in the same one.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, cast

import orjson
from pydantic import ConfigDict, Field, StringConstraints
from typing_extensions import TypedDict

from wyvern.api import rbac
from wyvern.api.attributes import MISSING, Attr, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    InvalidInput,
    NeutronError,
    PolicyNotAuthorized,
    bad_request,
    conflict,
    not_found,
)
from wyvern.api.repo import Repo, Stored, Txn
from wyvern.api.resource import ApiState, Resource
from wyvern.api.resources.networks import network_or_404, qos_of
from wyvern.api.resources.subnets import (
    ROUTER_INTERFACE_OWNERS,
    ROUTER_INTERFACE_OWNERS_SNAT,
    NoneIsEmpty,
    StrictCidr,
    Taken,
    check_subnet_ip,
    claimed_values,
    eui64_address,
    is_auto_address,
    pick_free,
    pool_set,
    require_once,
    txn_cache,
)
from wyvern.api.resources.trunks import (
    port_in_use_as_parent,
    port_in_use_as_subport,
    trunk_details,
)
from wyvern.api.types import (
    Bool,
    DeviceOwner,
    IpAddress,
    MacAddress,
    NoDuplicates,
    ShortStr,
    Uuid,
)
from wyvern.model import dhcp6_options, dns
from wyvern.model.keys import (
    CHASSIS_PREFIX,
    STATUS_PORTS,
    STATUS_ROUTER_PORTS,
    host_port_key,
    router_port_status_prefix,
    status_key,
    status_port,
    uniq_key,
    uniq_prefix,
)
from wyvern.model.port_status import reported_status

if TYPE_CHECKING:
    from wyvern.api.resources import security_groups
    from wyvern.api.resources.floatingips import FloatingIps
    from wyvern.api.resources.port_forwardings import PortForwardings
    from wyvern.api.resources.routers import Routers
    from wyvern.api.resources.trunks import Trunks

MAX_PORT_KEY = 32767
MAX_PROFILE_BYTES = 4095  # Neutron's binding profile column
ROUTER_GW = "network:router_gateway"
FLOATINGIP = "network:floatingip"
# Ports only their router or floating IP may delete (Neutron's prevent_l3_port_deletion).
L3_OWNERS = (*ROUTER_INTERFACE_OWNERS, ROUTER_GW, FLOATINGIP)
VnicType = Literal[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "remote-managed",
    "vdpa",
    "accelerator-direct",
    "accelerator-direct-physical",
]
VIF_DETAILS_OVS: dict[str, Any] = {
    "port_filter": True,
    "connectivity": "l2",
    "bridge_name": "br-int",
    "datapath_type": "netdev",
    "ovs_hybrid_plug": False,
}


class FixedIpIn(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    subnet_id: Uuid
    ip_address: IpAddress


class AddressPairIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    ip_address: IpAddress | StrictCidr
    mac_address: NotRequired[MacAddress]


OptName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
OptValue = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class DhcpOptIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    opt_name: OptName
    opt_value: OptValue | None
    ip_version: NotRequired[Literal[4, 6]]


FixedIps = Annotated[list[FixedIpIn], Field(max_length=256)]
AddressPairs = Annotated[list[AddressPairIn], Field(max_length=1024), NoneIsEmpty]
DhcpOpts = Annotated[list[DhcpOptIn], Field(max_length=256), NoneIsEmpty]
SecurityGroups = Annotated[list[Uuid], Field(max_length=256), NoneIsEmpty, NoDuplicates]


# ---- list filters beyond attributes -----------------------------------------------------------
def _fixed_ips_filter(obj: dict[str, Any], values: list[str]) -> bool:
    """`?fixed_ips=ip_address=X&fixed_ips=subnet_id=Y`: one of the port's addresses matches
    every given key (several values of one key OR), like Neutron's single join."""
    wanted: dict[str, set[str]] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or key not in ("ip_address", "subnet_id", "ip_address_substr"):
            raise bad_request(
                "HTTPBadRequest",
                f"Invalid fixed_ips filter '{raw[:100]}': expected ip_address=, subnet_id= or "
                "ip_address_substr=",
            )
        if key == "ip_address":
            value = _canonical_ip(value)
        wanted.setdefault(key, set()).add(value)
    for ip in obj.get("fixed_ips") or []:
        if "ip_address" in wanted and ip["ip_address"] not in wanted["ip_address"]:
            continue
        if "subnet_id" in wanted and ip["subnet_id"] not in wanted["subnet_id"]:
            continue
        subs = wanted.get("ip_address_substr")
        if subs and not any(s in ip["ip_address"] for s in subs):
            continue
        return True
    return False


def _ip_address_filter(obj: dict[str, Any], values: list[str]) -> bool:
    wanted = {_canonical_ip(v) for v in values}
    return any(ip["ip_address"] in wanted for ip in obj.get("fixed_ips") or [])


def _canonical_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


DEFN = ResourceDef(
    name="port",
    collection="ports",
    path="ports",
    kind="ports",
    parent_attr="network_id",
    quota="port",
    extra_filters={"fixed_ips": _fixed_ips_filter, "ip_address": _ip_address_filter},
    attrs=(
        *standard_attrs(),
        Attr("network_id", Uuid, post=True, required=True, filter=True, sort=True),
        Attr("admin_state_up", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr(
            "mac_address",
            MacAddress,
            post=True,
            put=True,
            filter=True,
            sort=True,
            doc="Default: a random MAC under settings.base_mac. PUT: admin only, unbound ports.",
        ),
        Attr(
            "fixed_ips",
            FixedIps,
            post=True,
            put=True,
            doc="[{subnet_id, ip_address}]: an exact address, or any from a subnet. Default: "
            "one IPv4 and one stateful IPv6 address, plus every SLAAC subnet's.",
        ),
        Attr("device_id", ShortStr, post=True, put=True, default="", filter=True, sort=True),
        Attr("device_owner", DeviceOwner, post=True, put=True, default="", filter=True, sort=True),
        Attr("status", str, filter=True, sort=True),
        Attr(
            "binding:host_id",
            ShortStr,
            post=True,
            put=True,
            default="",
            filter=True,
        ),
        Attr("binding:vnic_type", VnicType, post=True, put=True, default="normal", filter=True),
        Attr(
            "binding:profile",
            dict[str, Any] | None,
            post=True,
            put=True,
            default_factory=dict,
        ),
        Attr("binding:vif_type", str, filter=True),
        Attr("binding:vif_details", dict[str, Any]),
        Attr("security_groups", SecurityGroups, post=True, put=True, filter=True),
        Attr("port_security_enabled", Bool, post=True, put=True, filter=True),
        Attr("allowed_address_pairs", AddressPairs, post=True, put=True, default_factory=list),
        Attr("extra_dhcp_opts", DhcpOpts, post=True, put=True, default_factory=list),
        Attr(
            "dns_name",
            str,
            post=True,
            put=True,
            default="",
            filter=True,
            doc="A host label or FQDN (lower-cased): the port's hostname in dns_assignment "
            "and DHCP, unless the dns_domain setting is Neutron's default.",
        ),
        Attr("dns_assignment", list[dict[str, str]], doc="{ip_address, hostname, fqdn}"),
        Attr(
            "dns_domain",
            str,
            post=True,
            put=True,
            default="",
            doc="An FQDN (dns-domain-ports), kept for an external DNS service: Wyvern "
            "publishes to none, as Neutron without an external_dns_driver.",
        ),
        Attr(
            "qos_policy_id",
            Uuid | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            doc="The port's QoS policy: it overrides its network's.",
        ),
        Attr("qos_network_policy_id", str | None, doc="Its network's QoS policy."),
        Attr(
            "trunk_details",
            dict[str, Any],
            doc="trunk-details, on a trunk's parent port: {trunk_id, sub_ports: [{port_id, "
            "segmentation_type, segmentation_id, mac_address}]}",
        ),
    ),
)


# ---- errors ---------------------------------------------------------------------------------
def ip_in_use(network_id: str, ip: str) -> NeutronError:
    return conflict(
        "IpAddressInUse",
        f"Unable to complete operation for network {network_id}. The IP address {ip} is in use.",
    )


def mac_in_use(network_id: str, mac: str) -> NeutronError:
    return conflict(
        "MacAddressInUse",
        f"Unable to complete operation for network {network_id}. The mac address {mac} is in use.",
    )


def ips_exhausted(network_id: str) -> NeutronError:
    return conflict(
        "IpAddressGenerationFailure", f"No more IP addresses available on network {network_id}."
    )


def _invalid(attr: str, reason: str) -> InvalidInput:
    return InvalidInput(f"Invalid input for {attr}. Reason: {reason}.")


SG_NEEDS_PORT_SECURITY = bad_request(
    "PortSecurityAndIPRequiredForSecurityGroups",
    "Port security must be enabled and port must have an IP address in order to use security "
    "groups.",
)


def _pairs_need_port_security() -> NeutronError:
    return conflict(
        "AddressPairAndPortSecurityRequired",
        "Port Security must be enabled in order to have allowed address pairs on a port.",
    )


# ---- body checks that need no store reads ----------------------------------------------------
def check_fixed_ips(fixed_ips: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Neutron's validate_fixed_ips: each entry names a subnet and/or an address, and no
    address twice. Returns canonical entries (a copy)."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for entry in fixed_ips:
        if "subnet_id" not in entry and "ip_address" not in entry:
            raise InvalidInput("IP allocation requires subnet_id or ip_address")
        item: dict[str, str] = {k: str(entry[k]) for k in ("subnet_id", "ip_address") if k in entry}
        if "ip_address" in item:
            if item["ip_address"] in seen:
                raise _invalid("fixed_ips", f"Duplicate IP address '{item['ip_address']}'")
            seen.add(item["ip_address"])
        out.append(item)
    return out


def check_address_pairs(limit: int, pairs: list[dict[str, Any]]) -> None:
    if len(pairs) > limit:
        raise bad_request(
            "AllowedAddressPairExhausted",
            f"The number of allowed address pair exceeds the maximum {limit}.",
        )
    seen: set[tuple[str | None, str]] = set()
    for pair in pairs:
        key = (pair.get("mac_address"), pair["ip_address"])
        if key in seen:
            raise bad_request(
                "DuplicateAddressPairInRequest",
                f"Request contains duplicate address pair: mac_address {key[0]} ip_address "
                f"{key[1]}.",
            )
        seen.add(key)


def _fill_pairs(pairs: list[dict[str, Any]], mac: str) -> list[dict[str, str]]:
    """A pair without a MAC means the port's own (stored explicitly, as Neutron does)."""
    return [
        {"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or mac} for p in pairs
    ]


def _check_profile(profile: dict[str, Any] | None) -> dict[str, Any]:
    if profile is None:
        return {}
    if len(orjson.dumps(profile)) > MAX_PROFILE_BYTES:
        raise _invalid("binding:profile", f"the profile exceeds {MAX_PROFILE_BYTES} bytes")
    return profile


def check_dns(attrs: dict[str, Any], config_domain: str) -> None:
    """dns_name and dns_domain, lower-cased (Neutron's convert_string_to_case_insensitive)
    and validated as Neutron does (wyvern.model.dns)."""
    if "dns_name" in attrs:
        attrs["dns_name"] = name = str(attrs["dns_name"]).lower()
        error = dns.dns_name_error(name, config_domain)
        if error:
            raise _invalid("dns_name", error)
    if "dns_domain" in attrs:
        attrs["dns_domain"] = domain = str(attrs["dns_domain"]).lower()
        error = dns.dns_domain_error(domain)
        if error:
            raise _invalid("dns_domain", error)


def check_dhcp6_opts(opts: list[dict[str, Any]]) -> None:
    """Refuse an ip_version 6 option the agent's DHCPv6 server could not send exactly
    (wyvern.model.dhcp6_options: the same table serves them)."""
    for opt in opts:
        if opt.get("ip_version") != 6 or opt.get("opt_value") is None:
            continue
        try:
            dhcp6_options.encode(opt["opt_name"], opt["opt_value"])
        except dhcp6_options.Dhcp6OptionError as exc:
            raise _invalid("extra_dhcp_opts", str(exc)) from None


def _merge_dhcp_opts(
    current: list[dict[str, Any]], updates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Neutron's extra_dhcp_opts semantics: update by (name, version), null value deletes."""
    out = [dict(o) for o in current]
    for upd in updates:
        version = upd.get("ip_version", 4)
        match = next(
            (o for o in out if o["opt_name"] == upd["opt_name"] and o["ip_version"] == version),
            None,
        )
        if upd.get("opt_value") is None:
            if match is not None:
                out.remove(match)
        elif match is not None:
            match["opt_value"] = upd["opt_value"]
        else:
            out.append(
                {"opt_name": upd["opt_name"], "opt_value": upd["opt_value"], "ip_version": version}
            )
    return out


def _bind(obj: dict[str, Any]) -> None:
    """A port with a host is bound to our OVS integration bridge; without one it is not."""
    if obj.get("binding:host_id"):
        obj["binding:vif_type"] = "ovs"
        obj["binding:vif_details"] = dict(VIF_DETAILS_OVS)
    else:
        obj["binding:vif_type"] = "unbound"
        obj["binding:vif_details"] = {}


# Port statuses (wyvern.model.keys.status_key) are written by the agent that binds the
# port, never by the API (the only writer of the port object itself): {"chassis", "host",
# "status", "installed_revision", "ofport"}. (wyvern/controller/bindings.py)


def is_router_interface(port: dict[str, Any]) -> bool:
    return str(port.get("device_owner") or "").startswith("network:router_interface")


def merge_binding_status(objs: list[dict[str, Any]], statuses: dict[str, dict[str, Any]]) -> None:
    """Show a port as its agent reports it: status, and the host it is bound on."""
    for obj in objs:
        st = statuses.get(str(obj.get("id")))
        if not st or obj.get("_deleting"):
            continue
        obj["status"] = reported_status(obj, st) or obj.get("status", "DOWN")
        if not obj.get("binding:host_id") and st.get("host"):
            obj["binding:host_id"] = st["host"]
        if obj.get("binding:host_id") and obj["status"] == "ACTIVE":
            obj["binding:vif_type"] = "ovs"
            obj["binding:vif_details"] = dict(VIF_DETAILS_OVS)


def _choose_port_key(taken: Taken) -> str | None:
    for _ in range(32):
        n = str(random.randint(1, MAX_PORT_KEY))
        if not taken(n):
            return n
    start = random.randint(1, MAX_PORT_KEY)
    for k in range(min(MAX_PORT_KEY, taken.bound + 1)):
        n = str((start + k - 1) % MAX_PORT_KEY + 1)
        if not taken(n):
            return n
    return None


class ClaimHints:
    """This process's memory of the values claimed under uniq prefixes (IPs of a subnet,
    port keys of a network). Only a hint: other API servers claim and release behind its
    back, so picks are verified and a full re-read decides exhaustion."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.sets: dict[str, set[str]] = {}

    def get(self, prefix: str) -> set[str]:
        found = self.sets.get(prefix)
        return found if found is not None else self.refresh(prefix)

    def refresh(self, prefix: str) -> set[str]:
        fresh = claimed_values(self.repo, prefix)
        self.sets[prefix] = fresh
        return fresh

    def forget(self, prefix: str, value: str) -> None:
        found = self.sets.get(prefix)
        if found is not None:
            found.discard(value)


class _Subnet:
    """A subnet as IPAM sees it within one transaction."""

    __slots__ = ("auto", "net", "obj", "stored")

    def __init__(self, stored: Stored) -> None:
        self.stored = stored
        self.obj = stored.obj
        self.net = ipaddress.ip_network(self.obj["cidr"])
        self.auto = is_auto_address(self.obj)

    @property
    def id(self) -> str:
        return str(self.obj["id"])


class Ports(Resource):
    defn = DEFN

    def __init__(self, state: ApiState) -> None:
        super().__init__(state)
        self.hints = ClaimHints(self.repo)

    # ---- reading ---------------------------------------------------------------------------
    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        """Port owners and the network's owner (Neutron's admin_owner_or_network_owner)."""
        return ctx.owns(obj) or obj.get("_net_project") == ctx.project_id

    def all_objects(self) -> list[dict[str, Any]]:
        # Status merged before filtering, so `?status=ACTIVE` sees what the agents wrote.
        objs = super().all_objects()
        merge_binding_status(objs, self._statuses(objs))
        self._network_policies(objs)
        self._merge_routed(objs)
        return objs

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        if len(objs) == 1:  # show, create, update (lists were merged by all_objects)
            merge_binding_status(objs, self._statuses(objs))
            self._network_policies(objs)
            self._merge_routed(objs)

    def _network_policies(self, objs: list[dict[str, Any]]) -> None:
        """qos_network_policy_id: the QoS policy of each port's network."""
        if len(objs) == 1:
            got = self.repo.get("networks", objs[0]["network_id"])
            nets = {got.obj["id"]: got.obj} if got is not None else {}
        else:
            nets = {n["id"]: n for n in self.repo.objects("networks")}
        for o in objs:
            o["qos_network_policy_id"] = (nets.get(o["network_id"]) or {}).get("qos_policy_id")

    def _merge_routed(self, objs: list[dict[str, Any]]) -> None:
        """A router interface port is bound nowhere: it is ACTIVE while a live chassis
        says it routes for it with the flows installed (bindings.RouterPortStatusWriter),
        DOWN otherwise."""
        ports = [o for o in objs if is_router_interface(o) and not o.get("_deleting")]
        if not ports:
            return
        store = self.repo.store
        prefix = router_port_status_prefix(str(ports[0]["id"])) if len(objs) == 1 else None
        routed: dict[str, set[str]] = {}
        for kv in store.list(prefix or STATUS_ROUTER_PORTS, keys_only=True).items:
            port_id, _, chassis = kv.key[len(STATUS_ROUTER_PORTS) :].partition("/")
            routed.setdefault(port_id, set()).add(chassis)
        live: set[str] = set()
        if routed:
            live = {
                kv.key[len(CHASSIS_PREFIX) :]
                for kv in store.list(CHASSIS_PREFIX, keys_only=True).items
            }
        for obj in ports:
            obj["status"] = "ACTIVE" if routed.get(str(obj["id"]), set()) & live else "DOWN"

    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        ips = [str(f["ip_address"]) for f in obj.get("fixed_ips") or []]
        assignment = dns.dns_assignment(
            str(obj.get("dns_name") or ""), ips, self.settings.dns_domain
        )
        shown = {"dns_name": "", "dns_domain": "", **obj, "dns_assignment": assignment}
        details = trunk_details(self.repo.get, obj)
        if details is not None:
            shown["trunk_details"] = details
        out = super().show(ctx, shown, fields)
        if out.get("trunk_details", 0) is None:
            del out["trunk_details"]  # (Neutron shows it on a trunk's parent only)
        return out

    def _statuses(self, objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Agents' binding facts per port id: one key read for one port, one list for more."""
        if not objs:
            return {}
        if len(objs) == 1:
            port_id = str(objs[0]["id"])
            kv = self.repo.store.get(status_key(str(objs[0]["network_id"]), port_id))
            return {port_id: orjson.loads(kv.value)} if kv else {}
        out: dict[str, dict[str, Any]] = {}
        for kv in self.repo.store.list(STATUS_PORTS).items:
            listed_port = status_port(kv.key)
            if listed_port is not None:
                out[listed_port] = orjson.loads(kv.value)
        return out

    def policy_target(self, ctx: RequestContext, obj: dict[str, Any]) -> dict[str, Any]:
        """Neutron's port rules read the network's owner and whether it is shared (a
        create on a network the caller cannot see is its 404, as in Neutron)."""
        net_project = obj.get("_net_project")
        if net_project is not None and "id" in obj:  # stored: no read (lists stay cheap)
            return {**obj, "network:project_id": net_project, "network:tenant_id": net_project}
        net = self.repo.get("networks", str(obj.get("network_id")))
        if net is None or not self.state.resources["network"].visible(ctx, net.obj):
            raise not_found("network", str(obj.get("network_id")))
        net_project = net.obj.get("project_id")
        return {
            **obj,
            "network:project_id": net_project,
            "network:tenant_id": net_project,
            "shared": rbac.shared_with(ctx, net.obj),  # (as the caller sees it)
        }

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        if "fixed_ips" in attrs:
            attrs["fixed_ips"] = check_fixed_ips(attrs["fixed_ips"])
        check_address_pairs(
            self.settings.max_allowed_address_pair, attrs.get("allowed_address_pairs") or []
        )
        attrs["binding:profile"] = _check_profile(attrs.get("binding:profile"))
        check_dhcp6_opts(attrs.get("extra_dhcp_opts") or [])
        check_dns(attrs, self.settings.dns_domain)
        if attrs.get("port_security_enabled") is False and attrs.get("security_groups"):
            raise SG_NEEDS_PORT_SECURITY

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        """The API's create: Neutron's policy on the network, then what `create_internal`
        does."""
        # (Neutron's policy on the network was checked by Resource.authorize)
        network = self._network(ctx, txn, attrs["network_id"])
        net = network.obj
        # Shared with the caller by an RBAC policy; seeing it as external is not enough
        # (Neutron: 403). The port `require`s the network, whose record a revocation marks
        # first (wyvern.api.rbac). What others may set on it is the policy's (network_owner).
        if not ctx.owns(net) and not rbac.may_use(self.repo, ctx, net, rbac.SHARED):
            raise PolicyNotAuthorized("create_port")
        if attrs.get("qos_policy_id") is not None:
            qos_of(self).for_attach(ctx, txn, attrs["qos_policy_id"])
        return self._build(ctx, txn, attrs, network)

    def create_internal(
        self, ctx: RequestContext, txn: Txn, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        """Build a port into `txn` from already validated attrs (routers, floating IPs): the
        same IPAM, MAC and key claims as the API's create, atomically with the caller's change.
        Missing attributes take their defaults; no policy is checked here."""
        attrs = dict(attrs)
        for attr in self.defn.attrs:
            if attr.post and attr.name not in attrs and attr.has_default():
                attrs[attr.name] = attr.make_default()
        project = attrs.get("project_id")
        if project is None:
            project = attrs.get("tenant_id", ctx.project_id)
        attrs["project_id"] = attrs["tenant_id"] = project
        if "fixed_ips" in attrs:
            attrs["fixed_ips"] = check_fixed_ips(attrs["fixed_ips"])
        stored = self.repo.get("networks", attrs["network_id"])
        if stored is None or stored.obj.get("_deleting"):
            raise not_found("network", attrs["network_id"])
        return self._build(ctx, txn, attrs, stored)

    def _network(self, ctx: RequestContext, txn: Txn, network_id: str) -> Stored:
        cache = txn_cache(txn)
        key = ("port-net", network_id, ctx)
        stored: Stored | None = cache.get(key)
        if stored is None:
            stored = network_or_404(self, ctx, network_id)
            cache[key] = stored
        return stored

    def _build(
        self, ctx: RequestContext, txn: Txn, attrs: dict[str, Any], network: Stored
    ) -> dict[str, Any]:
        net = network.obj
        network_id = net["id"]
        requested_mac = attrs.pop("mac_address", None)
        requested_ips = attrs.pop("fixed_ips", MISSING)
        obj = self.new_object(attrs)
        port_id = obj["id"]
        obj["status"] = "DOWN"
        obj["_net_project"] = net.get("project_id")
        obj["binding:profile"] = _check_profile(obj.get("binding:profile"))
        _bind(obj)
        # MAC: an explicit one must be free (409); a random one that collides just retries.
        if requested_mac is not None:
            mac = requested_mac
            txn.claim(uniq_key("mac", network_id, mac), port_id, mac_in_use(network_id, mac))
        else:
            mac = self._random_mac()
            txn.claim(uniq_key("mac", network_id, mac), port_id, None)
        obj["mac_address"] = mac
        key = self._free_port_key(txn, network_id)
        txn.claim(uniq_key("portkey", network_id, key), port_id, None)
        obj["_key"] = key
        subnets = self._subnets(txn, network)
        owner = obj.get("device_owner") or ""
        if requested_ips is MISSING:
            obj["fixed_ips"] = self._allocate_default(txn, network_id, subnets, obj)
        else:
            obj["fixed_ips"] = self._allocate_requested(
                ctx, txn, network_id, subnets, obj, requested_ips, handled=set()
            )
        port_security = obj.get("port_security_enabled")
        if port_security is None:
            port_security = bool(net.get("port_security_enabled", True))
        obj["port_security_enabled"] = port_security
        groups = obj.get("security_groups")
        if groups is None:
            trusted = owner.startswith("network:")
            groups = [] if trusted or not port_security else self._default_group(obj)
        elif groups and not port_security:
            raise SG_NEEDS_PORT_SECURITY
        obj["security_groups"] = self._check_groups(txn, obj["project_id"], groups)
        pairs = obj.get("allowed_address_pairs") or []
        if pairs and not port_security:
            raise _pairs_need_port_security()
        obj["allowed_address_pairs"] = _fill_pairs(pairs, mac)
        check_address_pairs(self.settings.max_allowed_address_pair, obj["allowed_address_pairs"])
        obj["extra_dhcp_opts"] = _merge_dhcp_opts([], obj.get("extra_dhcp_opts") or [])
        require_once(txn, network)
        txn.create("ports", obj, network_id, owned=True)
        if obj.get("binding:host_id"):
            txn.puts[host_port_key(obj["binding:host_id"], obj["id"])] = network_id.encode()
        return obj

    def _random_mac(self) -> str:
        """Neutron's get_random_mac: three (or four, if set) octets from base_mac."""
        base = self.settings.base_mac.split(":")
        octets = [int(base[0], 16), int(base[1], 16), int(base[2], 16)]
        octets += [random.getrandbits(8) for _ in range(3)]
        if base[3] != "00":
            octets[3] = int(base[3], 16)
        return ":".join(f"{o:02x}" for o in octets)

    def _free_port_key(self, txn: Txn, network_id: str) -> int:
        key = self._pick(txn, uniq_prefix("portkey", network_id), _choose_port_key)
        if key is None:
            raise conflict(
                "Conflict",
                f"Unable to create the port: network {network_id} already has {MAX_PORT_KEY} "
                "ports.",
            )
        return int(key)

    def _pick(self, txn: Txn, prefix: str, choose: Callable[[Taken], str | None]) -> str | None:
        """A value under `prefix` that nobody has claimed, or None if there is none.

        Candidates avoid what this process's hints say is taken and are checked with one
        point read; only when the hints look full (or keep missing) are the claims re-read
        in full, so a create costs O(1) reads, and "none left" is always decided on a fresh
        read. The claim's guard, not this check, is what makes the value unique.
        """
        hint = self.hints.get(prefix)
        for _ in range(8):
            value = choose(Taken(hint, txn, prefix))
            if value is None:
                break
            hint.add(value)
            if self.repo.store.get(prefix + value) is None:
                return value
        hint = self.hints.refresh(prefix)
        value = choose(Taken(hint, txn, prefix))
        if value is not None:
            hint.add(value)
        return value

    # ---- IPAM -----------------------------------------------------------------------------
    def _subnets(self, txn: Txn, network: Stored) -> list[_Subnet]:
        """The network's live subnets in the network's order (read once per txn)."""
        cache = txn_cache(txn)
        key = ("port-subnets", network.obj["id"])
        views: list[_Subnet] | None = cache.get(key)
        if views is None:
            by_id = {s.obj["id"]: s for s in self.repo.scan("subnets", network.obj["id"])}
            views = []
            for sid in network.obj.get("subnets") or []:
                stored = by_id.get(sid)
                if stored is not None and not stored.obj.get("_deleting"):
                    views.append(_Subnet(stored))
            cache[key] = views
        return views

    def _claim_ip(
        self, txn: Txn, network_id: str, sub: _Subnet, ip: str, port_id: str, exact: bool
    ) -> dict[str, str]:
        error = ip_in_use(network_id, ip) if exact else None
        txn.claim(uniq_key("ip", sub.id, ip), port_id, error)
        require_once(txn, sub.stored)
        return {"subnet_id": sub.id, "ip_address": ip}

    def _any_ip(
        self, txn: Txn, network_id: str, candidates: list[_Subnet], port_id: str
    ) -> dict[str, str] | None:
        """One address from the first of `candidates` that has a free one."""
        for sub in candidates:
            pools = pool_set(sub.obj)
            ip = self._pick(txn, uniq_prefix("ip", sub.id), partial(pick_free, pools))
            if ip is not None:
                return self._claim_ip(txn, network_id, sub, ip, port_id, exact=False)
        return None

    def _auto_ips(
        self,
        txn: Txn,
        network_id: str,
        subnets: list[_Subnet],
        obj: dict[str, Any],
        handled: set[str],
    ) -> list[dict[str, str]]:
        """The EUI-64 address on each SLAAC subnet (not for router ports)."""
        if (obj.get("device_owner") or "") in ROUTER_INTERFACE_OWNERS_SNAT:
            return []
        out = []
        for sub in subnets:
            if sub.auto and sub.id not in handled:
                ip = eui64_address(str(sub.net), obj["mac_address"])
                out.append(self._claim_ip(txn, network_id, sub, ip, obj["id"], exact=True))
        return out

    def _allocate_default(
        self, txn: Txn, network_id: str, subnets: list[_Subnet], obj: dict[str, Any]
    ) -> list[dict[str, str]]:
        """Neutron's default: one IPv4 address (first subnet with room), one stateful IPv6
        address likewise, and the address of every SLAAC subnet."""
        out: list[dict[str, str]] = []
        v4 = [s for s in subnets if s.net.version == 4]
        v6 = [s for s in subnets if s.net.version == 6 and not s.auto]
        for group in (v4, v6):
            if not group:
                continue
            got = self._any_ip(txn, network_id, group, obj["id"])
            if got is None:
                raise ips_exhausted(network_id)
            out.append(got)
        out += self._auto_ips(txn, network_id, subnets, obj, handled=set())
        return out

    def _subnet_for(
        self,
        ctx: RequestContext,
        network_id: str,
        subnets: list[_Subnet],
        entry: dict[str, str],
        router: bool,
    ) -> _Subnet:
        """Neutron's _get_subnet_for_fixed_ip. A subnet of another network is 400 only if
        the caller may see it: else 404 like an unknown one (no existence oracle)."""
        if "subnet_id" in entry:
            sub = next((s for s in subnets if s.id == entry["subnet_id"]), None)
            if sub is None:
                other = self.repo.get("subnets", entry["subnet_id"])
                subnet_res = self.state.resources["subnet"]
                if other is None or not subnet_res.visible(ctx, other.obj):
                    raise not_found("subnet", entry["subnet_id"])
                raise InvalidInput(
                    f"Failed to create port on network {network_id}, because fixed_ips "
                    f"included invalid subnet {entry['subnet_id']}"
                )
            if "ip_address" in entry and not check_subnet_ip(
                sub.net, ipaddress.ip_address(entry["ip_address"]), router
            ):
                raise bad_request(
                    "InvalidIpForSubnet",
                    f"IP address {entry['ip_address']} is not a valid IP for the specified subnet.",
                )
            return sub
        if not subnets:
            raise InvalidInput("IP allocation requires subnets for network")
        ip = ipaddress.ip_address(entry["ip_address"])
        for sub in subnets:
            if check_subnet_ip(sub.net, ip, router):
                return sub
        raise bad_request(
            "InvalidIpForNetwork",
            f"IP address {entry['ip_address']} is not a valid IP for any of the subnets on the "
            "specified network.",
        )

    def _allocate_requested(
        self,
        ctx: RequestContext,
        txn: Txn,
        network_id: str,
        subnets: list[_Subnet],
        obj: dict[str, Any],
        entries: list[dict[str, str]],
        handled: set[str],
    ) -> list[dict[str, str]]:
        """Explicit fixed_ips: exact addresses (409 if taken) and any-address requests, then
        the SLAAC addresses of subnets not already `handled`."""
        owner = obj.get("device_owner") or ""
        router = owner in ROUTER_INTERFACE_OWNERS
        snat_router = owner in ROUTER_INTERFACE_OWNERS_SNAT
        out: list[dict[str, str]] = []
        pending: list[tuple[_Subnet, dict[str, str]]] = []
        for entry in entries:
            sub = self._subnet_for(ctx, network_id, subnets, entry, router)
            if "ip_address" in entry:
                if sub.auto and not router:
                    raise InvalidInput(
                        f"IPv6 address {entry['ip_address']} cannot be directly assigned to a "
                        f"port on subnet {sub.id} as the subnet is configured for automatic "
                        "addresses"
                    )
            elif sub.auto and not snat_router:
                continue  # its EUI-64 address is added below anyway
            pending.append((sub, entry))
        # Exact addresses first, so an any-address pick never takes one asked for explicitly.
        for sub, entry in pending:
            if "ip_address" in entry:
                ip = str(ipaddress.ip_address(entry["ip_address"]))
                out.append(self._claim_ip(txn, network_id, sub, ip, obj["id"], exact=True))
        for sub, entry in pending:
            if "ip_address" not in entry:
                got = self._any_ip(txn, network_id, [sub], obj["id"])
                if got is None:
                    raise ips_exhausted(network_id)
                out.append(got)
        done = handled | {sub.id for sub, _ in pending}
        out += self._auto_ips(txn, network_id, subnets, obj, done)
        return out

    # ---- security groups ------------------------------------------------------------------
    @property
    def _groups(self) -> security_groups.SecurityGroups:
        return cast("security_groups.SecurityGroups", self.state.resources["security_group"])

    def _default_group(self, obj: dict[str, Any]) -> list[str]:
        if not obj.get("project_id"):
            return []
        return [self._groups.ensure_default(obj["project_id"])]

    def _check_groups(self, txn: Txn, project_id: str, groups: list[str]) -> list[str]:
        """Each group must exist and be the port's project's; the port guards its revision
        (a group delete marks it first, so a racing port create retries and sees it gone).
        Stateful and stateless groups never meet on one port, as in Neutron: a packet would
        need both connection tracking and none."""
        stateful = set()
        for gid in groups:
            stored = self._groups.group_for_port(gid, project_id)
            require_once(txn, stored)
            stateful.add(bool(stored.obj.get("stateful", True)))
        if len(stateful) > 1:
            raise conflict(
                "SecurityGroupConflict",
                "Error Cannot apply both stateful and stateless security groups on the same "
                "port at the same time while attempting the operation.",
            )
        return list(groups)

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        changes = dict(changes)
        check_dns(changes, self.settings.dns_domain)
        if changes.get("qos_policy_id") not in (None, obj.get("qos_policy_id")):
            qos_of(self).for_attach(ctx, txn, changes["qos_policy_id"])
        if "mac_address" in changes:
            new_mac = changes.pop("mac_address")
            if new_mac != obj["mac_address"]:
                self._change_mac(ctx, txn, obj, new_mac)
        if "fixed_ips" in changes:
            entries = check_fixed_ips(changes.pop("fixed_ips"))
            self._update_fixed_ips(ctx, txn, stored, entries)
            forwardings = cast("PortForwardings", self.state.resources["port_forwarding"])
            forwardings.port_ips_changed(txn, obj)
        if "binding:profile" in changes:
            changes["binding:profile"] = _check_profile(changes["binding:profile"])
        port_security = changes.get("port_security_enabled", obj.get("port_security_enabled"))
        groups = obj.get("security_groups") or []
        if "security_groups" in changes:
            groups = changes["security_groups"]
            if groups and not port_security:
                raise SG_NEEDS_PORT_SECURITY
            changes["security_groups"] = self._check_groups(txn, obj["project_id"], groups)
        elif not port_security and groups:
            raise conflict(
                "PortSecurityPortHasSecurityGroup",
                "Port has security group associated. Cannot disable port security or IP "
                "address until security group is removed",
            )
        pairs = obj.get("allowed_address_pairs") or []
        if "allowed_address_pairs" in changes:
            check_address_pairs(
                self.settings.max_allowed_address_pair, changes["allowed_address_pairs"]
            )
            pairs = changes["allowed_address_pairs"] = _fill_pairs(
                changes["allowed_address_pairs"], obj["mac_address"]
            )
            check_address_pairs(self.settings.max_allowed_address_pair, pairs)
        if pairs and not port_security:
            raise _pairs_need_port_security()
        if "extra_dhcp_opts" in changes:
            check_dhcp6_opts(changes["extra_dhcp_opts"])
            changes["extra_dhcp_opts"] = _merge_dhcp_opts(
                obj.get("extra_dhcp_opts") or [], changes["extra_dhcp_opts"]
            )
        old_host = obj.get("binding:host_id")
        obj.update(changes)
        if "binding:host_id" in changes:
            _bind(obj)
            if old_host and old_host != obj.get("binding:host_id"):
                txn.release(host_port_key(old_host, obj["id"]))
            if obj.get("binding:host_id"):
                txn.puts[host_port_key(obj["binding:host_id"], obj["id"])] = obj[
                    "network_id"
                ].encode()

    def _change_mac(self, ctx: RequestContext, txn: Txn, obj: dict[str, Any], mac: str) -> None:
        """Admins may change the MAC of an unbound port (Neutron's PortBound otherwise)."""
        if obj.get("binding:vif_type") not in (None, "unbound"):
            raise conflict(
                "PortBound",
                f"Unable to complete operation on port {obj['id']}, port is already bound, "
                f"port type: {obj.get('binding:vif_type')}, old_mac {obj['mac_address']}, "
                f"new_mac {mac}.",
            )
        network_id = obj["network_id"]
        txn.claim(uniq_key("mac", network_id, mac), obj["id"], mac_in_use(network_id, mac))
        txn.release(uniq_key("mac", network_id, obj["mac_address"]))
        obj["mac_address"] = mac

    def _update_fixed_ips(
        self, ctx: RequestContext, txn: Txn, stored: Stored, entries: list[dict[str, str]]
    ) -> None:
        """Neutron's _get_changed_ips_for_port: keep addresses asked for again (by address,
        or by subnet), release the others (SLAAC ones stay unless their subnet is named),
        claim the new ones; all in `txn`."""
        obj = stored.obj
        network_id = obj["network_id"]
        original = [dict(ip) for ip in obj.get("fixed_ips") or []]
        by_ip = {ip["ip_address"]: ip for ip in original}
        kept: list[dict[str, str]] = []
        add: list[dict[str, str]] = []
        for entry in entries:
            if "ip_address" in entry:
                canonical = str(ipaddress.ip_address(entry["ip_address"]))
                orig = by_ip.pop(canonical, None)
                if (
                    orig is not None
                    and entry.get("subnet_id", orig["subnet_id"]) == orig["subnet_id"]
                ):
                    kept.append(orig)
                else:
                    if orig is not None:
                        by_ip[canonical] = orig
                    add.append(entry)
        by_subnet: dict[str, list[dict[str, str]]] = {}
        for ip in by_ip.values():
            by_subnet.setdefault(ip["subnet_id"], []).append(ip)
        for entry in entries:
            if "ip_address" in entry:
                continue
            have = by_subnet.get(entry["subnet_id"])
            if have:
                kept.append(have.pop())
            else:
                add.append(entry)
        network = self.repo.get("networks", network_id)
        if network is None or network.obj.get("_deleting"):
            raise not_found("network", network_id)
        subnets = self._subnets(txn, network)
        auto_ids = {s.id for s in subnets if s.auto}
        snat_router = (obj.get("device_owner") or "") in ROUTER_INTERFACE_OWNERS_SNAT
        removed: list[dict[str, str]] = []
        for leftovers in by_subnet.values():
            for ip in leftovers:
                if ip["subnet_id"] in auto_ids and not snat_router:
                    kept.append(ip)
                else:
                    removed.append(ip)
        for ip in removed:
            txn.release(uniq_key("ip", ip["subnet_id"], ip["ip_address"]))
            self.hints.forget(uniq_prefix("ip", ip["subnet_id"]), ip["ip_address"])
        handled = {ip["subnet_id"] for ip in kept + removed}
        added = self._allocate_requested(ctx, txn, network_id, subnets, obj, add, handled)
        order = {id(ip): i for i, ip in enumerate(original)}
        kept.sort(key=lambda ip: order.get(id(ip), len(order)))
        obj["fixed_ips"] = [*kept, *added]

    # ---- delete ---------------------------------------------------------------------------
    # `?force=true` deletes a trunk's subport: out of its trunk and deleted in one
    # transaction (a Neutron PTG ask; docs/architecture.md, Trunks).
    delete_query = frozenset({"force"})

    def delete_query_doc(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "force",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean"},
                "description": "a trunk's subport: remove it from its trunk and delete it "
                "(else 409 PortInUseAsSubPort)",
            }
        ]

    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        """The client's `force` only releases a subport from its trunk; the internal
        `force` of cascades (routers, floating IPs, networks) is never the client's."""
        force = params.get("force")
        if force is not None and force.lower() not in ("true", "false"):
            raise _invalid("force", f"'{force[:100]}' is not a boolean")
        inner = {"subport": "remove"} if force is not None and force.lower() == "true" else {}
        super().delete(ctx, id_, if_match, inner)

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        """Delete a port and release everything it claimed; routers and floating IPs hear of
        it in the same transaction. Ports of live routers and floating IPs are theirs to
        delete (ServicePortInUse) unless `force` (their own cascades)."""
        port = stored.obj
        owner = port.get("device_owner") or ""
        trunks = cast("Trunks", self.state.resources["trunk"])
        if port.get("_trunk"):
            raise port_in_use_as_parent(port["id"], str(port["_trunk"]["id"]))
        if port.get("_subport"):
            if params.get("force") != "True" and params.get("subport") != "remove":
                raise port_in_use_as_subport(port["id"], str(port["_subport"]["trunk_id"]))
            trunks.subport_deleted_ops(txn, port)
        if params.get("force") != "True" and owner in L3_OWNERS and self._l3_port_live(port):
            raise conflict(
                "ServicePortInUse",
                f"Port {port['id']} cannot be deleted directly via the port API: has device "
                f"owner {owner}.",
            )
        network_id = port["network_id"]
        for ip in port.get("fixed_ips") or []:
            txn.release(uniq_key("ip", ip["subnet_id"], ip["ip_address"]))
            self.hints.forget(uniq_prefix("ip", ip["subnet_id"]), ip["ip_address"])
        if port.get("mac_address"):
            txn.release(uniq_key("mac", network_id, port["mac_address"]))
        if port.get("_key") is not None:
            txn.release(uniq_key("portkey", network_id, port["_key"]))
            self.hints.forget(uniq_prefix("portkey", network_id), str(port["_key"]))
        txn.delete("ports", stored, owned=True)
        if port.get("binding:host_id"):
            txn.release(host_port_key(port["binding:host_id"], port["id"]))
        routers = cast("Routers", self.state.resources["router"])
        floatingips = cast("FloatingIps", self.state.resources["floatingip"])
        routers.port_deleted_ops(ctx, txn, port)
        floatingips.port_deleted_ops(ctx, txn, port)
        forwardings = cast("PortForwardings", self.state.resources["port_forwarding"])
        forwardings.port_deleted_ops(txn, port)

    def _l3_port_live(self, port: dict[str, Any]) -> bool:
        """Neutron lets stale L3 ports go: no address, or their router/floating IP is gone."""
        device = port.get("device_id") or ""
        if not port.get("fixed_ips") or not device:
            return False
        kind = "floatingips" if port.get("device_owner") == FLOATINGIP else "routers"
        return self.repo.get(kind, device) is not None


RESOURCES: list[type[Resource]] = [Ports]
