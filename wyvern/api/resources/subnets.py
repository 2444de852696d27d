"""Subnets: Neutron's CIDR, gateway and allocation pool rules, and the IPAM arithmetic ports use.

A subnet lives under its network (`/wyvern/subnets/<network-id>/<id>`) and is listed in the
network's `subnets`, which create and delete change in the same transaction (so the network's
revision moves and a concurrent port create retries and sees the new set of subnets). IP
addresses are never stored on the subnet: each allocated address is a create-if-absent claim
`uniq/ip/<subnet-id>/<ip>` owned by its port. Delete is two-phase like a network's: mark the
subnet (every port write that takes an address guards the subnet's revision, so it retries and
then skips the subnet), then check it is unused and delete it with its claims at once.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from typing_extensions import TypedDict

from wyvern.api import rbac
from wyvern.api.attributes import Attr, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    InvalidInput,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from wyvern.api.repo import Repo, Stored, Txn
from wyvern.api.resource import Resource, delete_marked, touch
from wyvern.api.resources.networks import (
    AUTO_DELETE_OWNERS,
    Networks,
    network_or_404,
    subnet_mtu_error,
)
from wyvern.api.resources.subnetpools import SubnetPools
from wyvern.api.types import CIDR_SCHEMA, Bool, IpAddress, Uuid
from wyvern.model.keys import uniq_key, uniq_prefix

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

SLAAC = "slaac"
DHCPV6_STATEFUL = "dhcpv6-stateful"
DHCPV6_STATELESS = "dhcpv6-stateless"
Ipv6Mode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]
AUTO_ADDRESS_MODES = (SLAAC, DHCPV6_STATELESS)
# Ports that take an address from pools even on SLAAC subnets (Neutron's
# ROUTER_INTERFACE_OWNERS_SNAT): they route the prefix, so they hold its gateway.
ROUTER_INTERFACE_OWNERS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)
ROUTER_INTERFACE_OWNERS_SNAT = (*ROUTER_INTERFACE_OWNERS, "network:router_centralized_snat")
ROUTER_GW = "network:router_gateway"


def _ip_version(value: int) -> int:
    if value not in (4, 6):
        raise ValueError(f"'{value}' is not in [4, 6]")
    return value


def _strict_cidr(value: str) -> str:
    """Neutron's validate_subnet: a prefix length is required and host bits are an error."""
    if "/" not in value:
        raise ValueError(f"'{value}' is not a valid IP subnet: a prefix length is required")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP subnet") from None
    raise ValueError(f"'{value}' isn't a recognized IP subnet cidr, '{net}' is recommended")


IpVersion = Annotated[int, AfterValidator(_ip_version), WithJsonSchema({"enum": [4, 6]})]
StrictCidr = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_strict_cidr),
    WithJsonSchema(CIDR_SCHEMA),
]
NameServer = Annotated[str, StringConstraints(max_length=64)]


class PoolIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    start: IpAddress
    end: IpAddress


class HostRouteIn(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    destination: StrictCidr
    nexthop: IpAddress


def none_to_empty(value: Any) -> Any:
    """Neutron's convert_none_to_empty_list."""
    return [] if value is None else value


NoneIsEmpty = BeforeValidator(none_to_empty)
# Bounds only stop absurd bodies; the configured limits give Neutron's errors below them.
Pools = Annotated[list[PoolIn], Field(max_length=1024)]
HostRoutes = Annotated[list[HostRouteIn], Field(max_length=1024), NoneIsEmpty]
NameServers = Annotated[list[NameServer], Field(max_length=1024), NoneIsEmpty]

DEFN = ResourceDef(
    name="subnet",
    collection="subnets",
    path="subnets",
    kind="subnets",
    parent_attr="network_id",
    quota="subnet",
    attrs=(
        *standard_attrs(),
        Attr("network_id", Uuid, post=True, required=True, filter=True, sort=True),
        Attr("ip_version", IpVersion, post=True, required=True, filter=True, sort=True),
        Attr(
            "cidr",
            StrictCidr | None,
            post=True,
            filter=True,
            sort=True,
            doc="Required without a subnet pool; with one, it must lie in the pool's free "
            "space. Host bits set are an error.",
        ),
        Attr(
            "gateway_ip",
            IpAddress | None,
            post=True,
            put=True,
            filter=True,
            sort=True,
            doc="Default: the first host of the CIDR; null: no gateway. Must be in the CIDR.",
        ),
        Attr(
            "allocation_pools",
            Pools,
            post=True,
            put=True,
            doc="[{start, end}]. Default: the CIDR minus network, broadcast and gateway.",
        ),
        Attr("dns_nameservers", NameServers, post=True, put=True, default_factory=list),
        Attr("host_routes", HostRoutes, post=True, put=True, default_factory=list),
        Attr("enable_dhcp", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr("ipv6_ra_mode", Ipv6Mode | None, post=True, default=None, filter=True, sort=True),
        Attr("ipv6_address_mode", Ipv6Mode | None, post=True, default=None, filter=True, sort=True),
        Attr("subnetpool_id", Uuid | None, post=True, default=None, filter=True, sort=True),
        Attr(
            "prefixlen",
            Annotated[int, Field(ge=0, le=128)] | None,
            post=True,
            default=None,
            visible=False,
            doc="With a subnet pool and no cidr: the size to allocate (default: the pool's).",
        ),
        Attr(
            "use_default_subnetpool",
            Bool,
            post=True,
            default=False,
            visible=False,
            doc="Allocate from the default subnet pool of ip_version.",
        ),
        Attr("segment_id", Uuid | None, post=True, put=True, default=None, filter=True),
        # Neutron's subnet `shared`: not shown, but filterable; it is the network's, as the
        # caller sees it (Subnets.visible_objects sets it before the filters run).
        Attr("shared", Bool, filter=True, visible=False),
    ),
)


def _shares_subnets(ctx: RequestContext, net: dict[str, Any]) -> bool:
    """Whether the caller sees the network's subnets: it owns the network or the network
    is shared with it (an RBAC access_as_shared policy for it or for everyone); an
    external network alone does not show its subnets (access_as_external)."""
    return rbac.visible(ctx, net, (rbac.SHARED,))


# ---- pure IP arithmetic (shared with ports) ------------------------------------------------
def is_auto_address(subnet: dict[str, Any]) -> bool:
    """SLAAC or DHCPv6-stateless: hosts build their own address (EUI-64 from the MAC)."""
    mode = subnet.get("ipv6_address_mode")
    if mode is None:
        mode = subnet.get("ipv6_ra_mode")
    return subnet.get("ip_version") == 6 and mode in AUTO_ADDRESS_MODES


def eui64_address(cidr: str, mac: str) -> str:
    """The modified EUI-64 address of `mac` in a /64 (RFC 4291 appendix A)."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    iid = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    net = ipaddress.IPv6Network(cidr)
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def check_subnet_ip(net: IpNetwork, ip: IpAddr, router_port: bool = False) -> bool:
    """Neutron's check_subnet_ip: inside the CIDR, and not the v4 network or broadcast address
    (nor the v6 subnet-router anycast address, except for router ports)."""
    if ip.version != net.version or ip not in net:
        return False
    if net.version == 6:
        return router_port or ip != net.network_address
    return ip != net.network_address and ip != net.broadcast_address


def default_gateway(net: IpNetwork) -> str | None:
    """The first host of the CIDR, if the CIDR has one that may be a gateway."""
    if net.num_addresses < 2:
        return None
    gw = net.network_address + 1
    if net.version == 4 and gw == net.broadcast_address:
        return None
    return str(gw)


def generate_pools(net: IpNetwork, gateway: str | None) -> list[dict[str, str]]:
    """Neutron's generate_pools: the whole range minus the network address (and the v4
    broadcast address), minus the gateway."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if first == last:
        return [_pool(net.version, first, last)]
    lo, hi = first + 1, last - (1 if net.version == 4 else 0)
    if lo >= hi:
        return []
    ranges = [(lo, hi)]
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        ranges = []
        if lo <= gw - 1:
            ranges.append((lo, min(hi, gw - 1)))
        if gw + 1 <= hi:
            ranges.append((max(lo, gw + 1), hi))
    return [_pool(net.version, a, b) for a, b in ranges]


def _pool(version: int, a: int, b: int) -> dict[str, str]:
    return {"start": str(_addr(version, a)), "end": str(_addr(version, b))}


def _addr(version: int, value: int) -> IpAddr:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _pool_text(pool: dict[str, str]) -> str:
    return f"{pool['start']}-{pool['end']}"


def validate_pools(
    net: IpNetwork, pools: list[dict[str, str]], gateway: str | None
) -> list[dict[str, str]]:
    """Neutron's allocation pool checks, in its order; returns the canonical pools."""
    cidr = str(net)
    lo = int(net.network_address) + 1
    hi = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    if net.num_addresses == 1:
        lo = hi = int(net.network_address)
    ranges: list[tuple[int, int, dict[str, str]]] = []
    for pool in pools:
        start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        shown = {"start": str(start), "end": str(end)}
        if start.version != net.version or end.version != net.version or int(start) > int(end):
            raise bad_request(
                "InvalidAllocationPool", f"The allocation pool {_pool_text(shown)} is not valid."
            )
        if int(start) < lo or int(end) > hi:
            raise bad_request(
                "OutOfBoundsAllocationPool",
                f"The allocation pool {_pool_text(shown)} spans beyond the subnet cidr {cidr}.",
            )
        ranges.append((int(start), int(end), shown))
    ordered = sorted(ranges, key=lambda r: r[0])
    for (_, a_end, a), (b_start, _, b) in itertools.pairwise(ordered):
        if b_start <= a_end:
            raise conflict(
                "OverlappingAllocationPools",
                f"Found overlapping allocation pools: {_pool_text(a)} {_pool_text(b)} for "
                f"subnet {cidr}.",
            )
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for start_i, end_i, shown in ranges:
            if start_i <= gw <= end_i:
                raise conflict(
                    "GatewayConflictWithAllocationPools",
                    f"Gateway ip {gateway} conflicts with allocation pool {_pool_text(shown)}.",
                )
    return [r[2] for r in ranges]


@dataclass(frozen=True, slots=True)
class PoolSet:
    """A subnet's allocation pools as integer ranges, for picking addresses."""

    version: int
    ranges: tuple[tuple[int, int], ...]
    total: int

    def nth(self, n: int) -> int:
        for a, b in self.ranges:
            size = b - a + 1
            if n < size:
                return a + n
            n -= size
        raise IndexError(n)

    def text(self, value: int) -> str:
        return str(_addr(self.version, value))


@lru_cache(maxsize=4096)
def _pool_set(version: int, pools: tuple[tuple[str, str], ...]) -> PoolSet:
    ranges = tuple((int(ipaddress.ip_address(a)), int(ipaddress.ip_address(b))) for a, b in pools)
    return PoolSet(version, ranges, sum(b - a + 1 for a, b in ranges))


def pool_set(subnet: dict[str, Any]) -> PoolSet:
    pools = tuple((p["start"], p["end"]) for p in subnet.get("allocation_pools") or [])
    return _pool_set(int(subnet["ip_version"]), pools)


def pick_free(pools: PoolSet, taken: Taken, probes: int = 32) -> str | None:
    """A random free address of the pools (`taken(text) -> bool`), or None if all are taken.

    Random probes first (cheap for any pool size, and concurrent creators rarely pick the
    same one); if they all hit, walk from a random point far enough that either a free
    address turns up or every address was seen.
    """
    total = pools.total
    if total == 0:
        return None
    for _ in range(probes):
        text = pools.text(pools.nth(random.randrange(total)))
        if not taken(text):
            return text
    limit = min(total, taken.bound + 1)
    start = random.randrange(total)
    for k in range(limit):
        text = pools.text(pools.nth((start + k) % total))
        if not taken(text):
            return text
    return None


class Taken:
    """Addresses of one subnet already claimed: in the store (read once per txn) or by this
    transaction. `bound` caps how many pool addresses can possibly be taken."""

    def __init__(self, stored: set[str], txn: Txn, prefix: str) -> None:
        self.stored = stored
        self.txn = txn
        self.prefix = prefix

    @property
    def bound(self) -> int:
        return len(self.stored) + len(self.txn.claimed)

    def __call__(self, text: str) -> bool:
        return text in self.stored or (self.prefix + text) in self.txn.claimed


def claimed_values(repo: Repo, prefix: str) -> set[str]:
    """The claimed values under a uniq prefix (keys only: owners are not needed)."""
    n = len(prefix)
    return {kv.key[n:] for kv in repo.store.list(prefix, keys_only=True).items}


def txn_cache(txn: Txn) -> dict[Any, Any]:
    """Reads shared by every object of one transaction: a bulk create reads each network, its
    subnets and its claims once, and later objects see what earlier ones took."""
    cache: dict[Any, Any] = txn.__dict__.setdefault("_wyvern_cache", {})
    return cache


def require_once(txn: Txn, stored: Stored) -> None:
    """`txn.require`, once per key (bulk creates touch the same network many times)."""
    seen: set[str] = txn_cache(txn).setdefault("required", set())
    if stored.key not in seen:
        seen.add(stored.key)
        txn.require(stored)


# ---- validation helpers ---------------------------------------------------------------------
def _invalid(attr: str, reason: str) -> InvalidInput:
    return InvalidInput(f"Invalid input for {attr}. Reason: {reason}.")


def _check_version(version: int, value: str, name: str) -> None:
    addr = (
        ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_address(value)
    )
    if addr.version != version:
        raise InvalidInput(f"{name} '{value}' does not match the ip_version '{version}'")


def check_gateway(net: IpNetwork, version: int, gateway: str) -> None:
    _check_version(version, gateway, "gateway_ip")
    ip = ipaddress.ip_address(gateway)
    if ip not in net or (
        net.version == 4
        and net.num_addresses > 1
        and ip in (net.network_address, net.broadcast_address)
    ):
        raise InvalidInput("Gateway is not valid on subnet")


def check_nameservers(settings_max: int, servers: list[str], subnet_id: str) -> list[str]:
    if len(servers) > settings_max:
        raise bad_request(
            "DNSNameServersExhausted",
            f"Unable to complete operation for {subnet_id}. The number of DNS nameservers "
            f"exceeds the limit {settings_max}.",
        )
    out: list[str] = []
    for host in servers:
        try:
            canonical = str(ipaddress.ip_address(host))
        except ValueError:
            raise _invalid(
                "dns_nameservers",
                f"'{host}' is not a valid nameserver. '{host}' is not a valid IP address",
            ) from None
        if canonical in out:
            raise _invalid("dns_nameservers", f"Duplicate nameserver '{host}'")
        out.append(canonical)
    return out


def check_host_routes(
    settings_max: int, routes: list[dict[str, str]], version: int, subnet_id: str
) -> list[dict[str, str]]:
    if len(routes) > settings_max:
        raise bad_request(
            "HostRoutesExhausted",
            f"Unable to complete operation for {subnet_id}. The number of host routes "
            f"exceeds the limit {settings_max}.",
        )
    out: list[dict[str, str]] = []
    for route in routes:
        _check_version(version, route["nexthop"], "nexthop")
        _check_version(version, route["destination"], "destination")
        canonical = {"destination": route["destination"], "nexthop": route["nexthop"]}
        if canonical in out:
            raise _invalid("host_routes", f"Duplicate hostroute '{canonical}'")
        out.append(canonical)
    return out


def _check_dhcp_prefix(net: IpNetwork) -> None:
    """Neutron refuses DHCP on prefixes that leave no room, and on special ranges."""
    if (net.version == 4 and net.prefixlen > 30) or (net.version == 6 and net.prefixlen > 126):
        raise InvalidInput(
            "Subnet has a prefix length that is incompatible with DHCP service enabled."
        )
    if net.is_multicast:
        raise InvalidInput("Multicast IP subnet is not supported if enable_dhcp is True.")
    if net.is_loopback:
        raise InvalidInput("Loopback IP subnet is not supported if enable_dhcp is True.")
    if net.is_link_local:
        raise InvalidInput("Link-local IP subnet is not supported if enable_dhcp is True.")


def _check_ipv6_modes(attrs: dict[str, Any], net: IpNetwork) -> None:
    ra, addr = attrs.get("ipv6_ra_mode"), attrs.get("ipv6_address_mode")
    if attrs["ip_version"] == 4:
        for name, value in (("ipv6_ra_mode", ra), ("ipv6_address_mode", addr)):
            if value is not None:
                raise InvalidInput(f"{name} is not valid when ip_version is 4")
        return
    if (ra or addr) and not attrs.get("enable_dhcp", True):
        raise InvalidInput(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False."
        )
    if ra and addr and ra != addr:
        raise InvalidInput(
            f"ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{addr}' is not valid. "
            "If both attributes are set, they must be the same value"
        )
    if is_auto_address(attrs) and net.prefixlen != 64:
        raise InvalidInput(
            f"Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address "
            "format, which requires the prefix to be /64"
        )


def _bad(msg: str) -> NeutronError:
    """Neutron's BadRequest(resource='subnets', msg=...)."""
    if not msg.endswith("."):
        msg += "."
    return bad_request("BadRequest", f"Bad subnets request: {msg}")


def subnet_in_use(subnet_id: str) -> NeutronError:
    return conflict(
        "SubnetInUse",
        f"Unable to complete operation on subnet {subnet_id}: One or more ports have an IP "
        "allocation from this subnet.",
    )


class Subnets(Resource):
    defn = DEFN
    # A pool without room: Neutron's SubnetAllocationError is a 500 (wyvern.api.resources.
    # subnetpools.allocation_error), and clients see the same.
    create_errors = (500,)

    @property
    def networks(self) -> Networks:
        return cast(Networks, self.state.resources["network"])

    # ---- reading ---------------------------------------------------------------------------
    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        """Owners see their subnets, and everyone those of networks they own or that are
        shared with them; not those of an external network (Neutron's rule: others may
        attach a gateway or a floating IP there, not see its addressing)."""
        if obj.get("_deleting"):
            return False
        if ctx.owns(obj):
            return True
        net = self.repo.get("networks", obj["network_id"])
        return net is not None and _shares_subnets(ctx, net.obj)

    def policy_target(
        self,
        ctx: RequestContext,
        obj: dict[str, Any],
        nets: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Neutron's subnet rules read the network's owner, `shared` and `router:external`
        (a create on a network the caller cannot see is its 404)."""
        net_id = str(obj.get("network_id"))
        if nets is not None:
            net = nets.get(net_id)
        else:
            stored = self.repo.get("networks", net_id)
            net = stored.obj if stored is not None else None
        if "id" not in obj and (net is None or not self.networks.visible(ctx, net)):
            raise not_found("network", net_id)
        net = net or {}
        return {
            **obj,
            "network:project_id": net.get("project_id"),
            "network:tenant_id": net.get("project_id"),
            "shared": rbac.shared_with(ctx, net),  # (as the caller sees it)
            "router:external": bool(net.get("router:external")),
        }

    def all_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.repo.objects("subnets") if not o.get("_deleting")]

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        objs = self.all_objects()
        nets = {n["id"]: n for n in self.repo.objects("networks")}
        if not ctx.is_admin and any(not ctx.owns(o) for o in objs):
            seen = {i for i, n in nets.items() if _shares_subnets(ctx, n)}
            objs = [o for o in objs if ctx.owns(o) or o["network_id"] in seen]
        policy = self.state.policy
        out = [o for o in objs if policy.check(ctx, "get_subnet", self.policy_target(ctx, o, nets))]
        for o in out:  # (`?shared=`: shared with the caller's project or everyone)
            o["shared"] = rbac.shared_with(ctx, nets.get(o["network_id"]) or {})
        return out

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        if attrs.get("segment_id") is not None:
            raise NotFound(
                f"Segment {attrs['segment_id']} could not be found.", type="SegmentNotFound"
            )
        cidr = attrs.get("cidr")
        pool_id = attrs.get("subnetpool_id")
        use_default = attrs.pop("use_default_subnetpool", False)
        prefixlen = attrs.pop("prefixlen", None)
        if cidr is not None and prefixlen is not None:
            raise _bad("cidr and prefixlen must not be supplied together")
        if use_default and pool_id is not None:
            raise _bad("subnetpool_id and use_default_subnetpool cannot both be specified")
        if pool_id is None and not use_default:
            if cidr is None:
                raise _bad("a subnetpool must be specified in the absence of a cidr")
            self._check_cidr(attrs)
            return
        if cidr is None and "allocation_pools" in attrs:
            raise _bad("allocation_pools allowed only for specific subnet requests.")
        if cidr is not None:
            _check_version(attrs["ip_version"], cidr, "cidr")
        # (the CIDR comes from the pool in create_ops; checked there, as for any subnet)
        attrs["_pool_request"] = {"default": bool(use_default), "prefixlen": prefixlen}

    def _check_cidr(self, attrs: dict[str, Any]) -> None:
        """Neutron's _validate_subnet, once the CIDR is known."""
        cidr = attrs["cidr"]
        version = attrs["ip_version"]
        _check_version(version, cidr, "cidr")
        net = ipaddress.ip_network(cidr)
        if net.prefixlen == 0:
            raise InvalidInput("0 is not allowed as CIDR prefix length")
        if attrs.get("enable_dhcp", True):
            _check_dhcp_prefix(net)
        _check_ipv6_modes(attrs, net)
        if "gateway_ip" not in attrs:
            attrs["gateway_ip"] = default_gateway(net)
        elif attrs["gateway_ip"] is not None:
            check_gateway(net, version, attrs["gateway_ip"])
        gateway = attrs["gateway_ip"]
        if "allocation_pools" in attrs:
            attrs["allocation_pools"] = validate_pools(net, attrs["allocation_pools"], gateway)
        else:
            attrs["allocation_pools"] = generate_pools(net, gateway)
        s = self.settings
        attrs["dns_nameservers"] = check_nameservers(
            s.max_dns_nameservers, attrs.get("dns_nameservers") or [], "new subnet"
        )
        attrs["host_routes"] = check_host_routes(
            s.max_subnet_host_routes, attrs.get("host_routes") or [], version, "new subnet"
        )

    def _from_pool(
        self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn
    ) -> tuple[str, int] | None:
        """Allocate the subnet's CIDR from its pool (Neutron's _create_subnet_from_pool)
        and check it like any CIDR; returns the pool's address scope (id, key)."""
        request = attrs.pop("_pool_request")
        pools = cast(SubnetPools, self.state.resources["subnetpool"])
        version = int(attrs["ip_version"])
        if request["default"]:
            attrs["subnetpool_id"] = pools.default_pool(ctx, version)
        pool, cidr = pools.allocate_for(
            ctx,
            txn,
            attrs["subnetpool_id"],
            attrs["project_id"],
            attrs.get("cidr"),
            request["prefixlen"],
            version,
        )
        attrs["cidr"] = cidr
        self._check_cidr(attrs)
        return pools.scope_of(pool)

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        network_id = attrs["network_id"]
        cache = txn_cache(txn)
        entry: tuple[Stored, list[dict[str, Any]]] | None = cache.get(("subnet-net", network_id))
        if entry is None:
            network = network_or_404(self, ctx, network_id)
            entry = (network, self.repo.objects("subnets", network_id))
            cache[("subnet-net", network_id)] = entry
        network, siblings = entry
        mtu_error = subnet_mtu_error(network.obj, int(attrs["ip_version"]))
        if mtu_error is not None:
            raise mtu_error
        pooled = "_pool_request" in attrs
        scope = self._from_pool(ctx, attrs, txn) if pooled else None
        net = ipaddress.ip_network(attrs["cidr"])
        for other in siblings:
            other_net = ipaddress.ip_network(other["cidr"])
            if other_net.version == net.version and other_net.overlaps(net):
                raise InvalidInput(
                    f"Requested subnet with cidr: {attrs['cidr']} for network: {network_id} "
                    "overlaps with another subnet"
                )
        self._check_pool_affinity(network.obj, siblings, attrs, scope)
        obj = self.new_object(attrs)
        txn.create("subnets", obj, network_id)
        siblings.append(obj)
        if scope is not None:
            self.networks.set_scope(network, int(obj["ip_version"]), scope)
        self.networks.add_subnet(txn, network, obj["id"], add=True)
        if is_auto_address(obj):
            self._add_auto_addresses(txn, obj)
        return obj

    @staticmethod
    def _check_pool_affinity(
        network: dict[str, Any],
        siblings: list[dict[str, Any]],
        attrs: dict[str, Any],
        scope: tuple[str, int] | None,
    ) -> None:
        """Neutron's _validate_network_subnetpools: the subnets of one IP version on a
        network come from one pool, or from pools of one address scope."""
        version = int(attrs["ip_version"])
        pool_id = attrs.get("subnetpool_id")
        net_scope = network.get(f"ipv{version}_address_scope")
        if net_scope and pool_id is not None and (scope is None or scope[0] != net_scope):
            raise bad_request(
                "NetworkAddressScopeAffinityError",
                "Subnets of an IP version on a network must share the same address scope.",
            )
        for other in siblings:
            if other.get("ip_version") != version:
                continue
            other_pool = other.get("subnetpool_id")
            if (pool_id is not None and other_pool != pool_id and not net_scope) or (
                pool_id is None and other_pool
            ):
                raise bad_request(
                    "NetworkSubnetPoolAffinityError",
                    "Subnets hosted on the same network must be allocated from the same "
                    "subnet pool.",
                )

    def after_create(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """A stateful subnet on an external network gives the routers' gateways there an
        address on it (wyvern.api.resources.routers.Routers.add_gateway_subnet), after
        the subnet is committed, as Neutron does after its subnet create."""
        routers = self.state.resources.get("router")
        add = getattr(routers, "add_gateway_subnet", None)
        if add is None:
            return
        for sub in objs:
            if is_auto_address(sub):
                continue  # (its address came with the subnet, as for every port)
            net = self.repo.get("networks", sub["network_id"])
            if net is not None and net.obj.get("router:external"):
                add(sub)

    def _add_auto_addresses(self, txn: Txn, subnet: dict[str, Any]) -> None:
        """A new SLAAC subnet gives every existing (non-router) port of the network its
        EUI-64 address, as Neutron's add_auto_addrs_on_network_ports does."""
        prefix = uniq_prefix("ip", subnet["id"])
        for port in self.repo.scan("ports", subnet["network_id"]):
            if port.obj.get("device_owner") in ROUTER_INTERFACE_OWNERS_SNAT:
                continue
            ip = eui64_address(subnet["cidr"], port.obj["mac_address"])
            if prefix + ip in txn.claimed:
                continue
            txn.claim(prefix + ip, port.obj["id"], None)
            port.obj["fixed_ips"] = [
                *port.obj.get("fixed_ips", []),
                {"subnet_id": subnet["id"], "ip_address": ip},
            ]
            touch(port.obj)
            txn.update(port)
            if port.obj.get("device_owner") == ROUTER_GW:
                self._add_gateway_address(txn, port.obj, subnet, ip)

    def _add_gateway_address(
        self, txn: Txn, port: dict[str, Any], subnet: dict[str, Any], ip: str
    ) -> None:
        """A router gateway port's new SLAAC address shows in its router's
        external_gateway_info too (Neutron lists the gateway port's fixed IPs there), in
        the same transaction."""
        router = self.repo.get("routers", port.get("device_id") or "")
        gw = router.obj.get("external_gateway_info") if router is not None else None
        if router is None or not gw or gw.get("network_id") != subnet["network_id"]:
            return
        entry = {"subnet_id": subnet["id"], "ip_address": ip}
        gw["external_fixed_ips"] = [*(gw.get("external_fixed_ips") or []), entry]
        router.obj["_gw_fixed_ips"] = [
            *(router.obj.get("_gw_fixed_ips") or []),
            {**entry, "cidr": str(subnet["cidr"])},
        ]
        touch(router.obj)
        txn.update(router)

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        version = int(obj["ip_version"])
        net = ipaddress.ip_network(obj["cidr"])
        s = self.settings
        if changes.get("segment_id") is not None:
            raise NotFound(
                f"Segment {changes['segment_id']} could not be found.", type="SegmentNotFound"
            )
        if changes.get("enable_dhcp") and not obj.get("enable_dhcp"):
            _check_dhcp_prefix(net)
        if changes.get("enable_dhcp") is False and (
            obj.get("ipv6_ra_mode") or obj.get("ipv6_address_mode")
        ):
            raise InvalidInput("Cannot disable enable_dhcp with ipv6 attributes set")
        gateway = changes.get("gateway_ip", obj.get("gateway_ip"))
        if "gateway_ip" in changes:
            if gateway is not None:
                check_gateway(net, version, gateway)
            self._check_gateway_unused(obj, gateway)
        if "allocation_pools" in changes:
            changes["allocation_pools"] = validate_pools(net, changes["allocation_pools"], gateway)
        elif "gateway_ip" in changes:
            validate_pools(net, obj.get("allocation_pools") or [], gateway)
        if "dns_nameservers" in changes:
            changes["dns_nameservers"] = check_nameservers(
                s.max_dns_nameservers, changes["dns_nameservers"], obj["id"]
            )
        if "host_routes" in changes:
            changes["host_routes"] = check_host_routes(
                s.max_subnet_host_routes, changes["host_routes"], version, obj["id"]
            )
        obj.update(changes)

    def _check_gateway_unused(self, obj: dict[str, Any], new_gateway: str | None) -> None:
        """A router interface holding the current gateway address pins it (GatewayIpInUse)."""
        old = obj.get("gateway_ip")
        if not old or old == new_gateway:
            return
        owner = self.repo.claim_owner(uniq_key("ip", obj["id"], old))
        if owner is None:
            return
        port = self.repo.get("ports", owner)
        if port is not None and port.obj.get("device_owner") in ROUTER_INTERFACE_OWNERS_SNAT:
            raise conflict(
                "GatewayIpInUse",
                f"Current gateway ip {old} already in use by port {owner}. Unable to update.",
            )

    # ---- delete ---------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        """Mark, then check and delete (see delete_marked): a port create that read the
        subnet before the mark fails its guard on the subnet's revision and retries."""
        delete_marked(self, ctx, id_, if_match, {})

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        """Delete a subnet and every claim on it. `network_gone` (the network's own delete,
        in the same txn): the network and its ports are going too, so touch neither."""
        subnet = stored.obj
        subnet_id = subnet["id"]
        network_gone = params.get("network_gone") == "True"
        force = params.get("force") == "True"
        if not network_gone:
            self._detach_ports(txn, subnet, force)
            network = self.repo.get("networks", subnet["network_id"])
            if network is not None:
                version = int(subnet["ip_version"])
                if not any(
                    o["id"] != subnet_id and o.get("ip_version") == version
                    for o in self.repo.objects("subnets", subnet["network_id"])
                ):  # (the network's last subnet of this version: no scope left)
                    self.networks.set_scope(network, version, None)
                self.networks.add_subnet(txn, network, subnet_id, add=False)
        prefix = uniq_prefix("ip", subnet_id)
        for value in claimed_values(self.repo, prefix):
            txn.release(prefix + value)
        txn.delete("subnets", stored)

    def _detach_ports(self, txn: Txn, subnet: dict[str, Any], force: bool) -> None:
        """Ports with an address here block the delete (SubnetInUse), except DHCP ports and,
        on SLAAC subnets, non-router ports: those just lose the address."""
        subnet_id = subnet["id"]
        auto = is_auto_address(subnet)
        for port in self.repo.scan("ports", subnet["network_id"]):
            ips = port.obj.get("fixed_ips") or []
            mine = [ip for ip in ips if ip["subnet_id"] == subnet_id]
            if not mine:
                continue
            owner = port.obj.get("device_owner")
            detachable = owner in AUTO_DELETE_OWNERS or (
                auto and owner not in ROUTER_INTERFACE_OWNERS_SNAT
            )
            if not detachable and not force:
                raise subnet_in_use(subnet_id)
            port.obj["fixed_ips"] = [ip for ip in ips if ip["subnet_id"] != subnet_id]
            touch(port.obj)
            txn.update(port)


RESOURCES: list[type[Resource]] = [Subnets]
