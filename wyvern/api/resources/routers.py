"""Routers: external gateways, interfaces and extra routes, written atomically with their ports.

A router records what is attached to it (`_interfaces`, `_gw_port_id`, `_gw_fixed_ips`,
`_floatingips`) so the agent and the API never scan ports to find out. Those fields change
in the same transaction as the ports and floating IPs they describe, and every decision that
depends on a router's attachments (associating a floating IP, removing an interface, moving
the gateway, deleting the router) writes or guards the router object: concurrent operations
on one router serialize on its revision instead of racing on a read-then-write.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Annotated, Any, Protocol, Required, cast

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from wyvern.api import openapi, rbac
from wyvern.api.attributes import Attr, ResourceDef, inline_refs, standard_attrs
from wyvern.api.context import RequestContext, admin_context
from wyvern.api.errors import (
    BadRequest,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from wyvern.api.repo import Repo, Stored, Txn, with_retries
from wyvern.api.resource import Resource, free_key, touch
from wyvern.api.resource import Route as ApiRoute
from wyvern.api.resources import agents
from wyvern.api.resources.networks import ROUTER_INTERFACE_OWNERS, network_or_404
from wyvern.api.resources.subnets import is_auto_address
from wyvern.api.types import Bool, Cidr, IpAddress, ShortStr, Uuid
from wyvern.model.keys import obj_key, uniq_key

LOG = logging.getLogger(__name__)
ROUTER_GW = "network:router_gateway"
ROUTER_INTF = "network:router_interface"
FLOATINGIP_OWNER = "network:floatingip"
ROUTER_OWNERS = frozenset({*ROUTER_INTERFACE_OWNERS, ROUTER_GW})
MAX_ROUTES = 30  # Neutron's max_routes default
MAX_KEY = 2**24 - 1  # routers take datapath keys from the networks' key space


# ---- attribute types ---------------------------------------------------------------------
@with_config(ConfigDict(extra="forbid"))
class FixedIpRequest(TypedDict, total=False):
    subnet_id: Uuid
    ip_address: IpAddress


@with_config(ConfigDict(extra="forbid"))
class GatewayInfo(TypedDict, total=False):
    network_id: Required[Uuid]
    enable_snat: Bool
    external_fixed_ips: list[FixedIpRequest]


@with_config(ConfigDict(extra="forbid"))
class Route(TypedDict):
    destination: Cidr
    nexthop: IpAddress


def _empty_to_none(value: Any) -> Any:
    """Neutron's dict_or_nodata: `{}` clears the gateway just like null does."""
    return None if value == {} else value


def _no_duplicate_routes(routes: list[Route]) -> list[Route]:
    seen: set[tuple[str, str]] = set()
    for r in routes:
        pair = (r["destination"], r["nexthop"])
        if pair in seen:
            raise ValueError(f"Duplicate hostroute '{dict(r)}'")
        seen.add(pair)
    return routes


def _none_to_empty(value: list[Route] | None) -> list[Route]:
    return value or []


GatewayInfoOrNone = Annotated[GatewayInfo | None, BeforeValidator(_empty_to_none)]
Routes = Annotated[
    Annotated[list[Route], AfterValidator(_no_duplicate_routes)] | None,
    AfterValidator(_none_to_empty),
]
_ROUTES_ANY_ORDER: TypeAdapter[list[Route]] = TypeAdapter(list[Route])
_UUID: TypeAdapter[str] = TypeAdapter(Uuid)

DEFN = ResourceDef(
    name="router",
    collection="routers",
    path="routers",
    kind="routers",
    quota="router",
    attrs=(
        *standard_attrs(),
        Attr("admin_state_up", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr("status", str, filter=True, sort=True),
        Attr(
            "external_gateway_info",
            GatewayInfoOrNone,
            post=True,
            put=True,
            default=None,
            doc="network_id (an external network), enable_snat (admin), "
            "external_fixed_ips (admin). null or {} clears the gateway.",
        ),
        Attr("routes", Routes, put=True, default_factory=list, doc="Extra routes (PUT only)."),
        Attr(
            "distributed",
            Bool,
            post=True,
            put=True,
            default=True,
            filter=True,
            doc="Always true: every Wyvern router is distributed.",
        ),
        Attr(
            "ha",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            doc="Always false: distributed routers need no HA pair.",
        ),
        Attr("flavor_id", str | None, filter=True),
        Attr("availability_zone_hints", list[ShortStr], post=True, default_factory=list),
        Attr("availability_zones", list[str]),
    ),
)


# ---- errors ------------------------------------------------------------------------------
def bad_router(msg: str) -> BadRequest:
    return bad_request("BadRequest", f"Bad router request: {msg}.")


def router_in_use(router_id: str) -> NeutronError:
    return conflict("RouterInUse", f"Router {router_id} still has ports")


def gateway_in_use_by_fip(router_id: str, net_id: str) -> NeutronError:
    return conflict(
        "RouterExternalGatewayInUseByFloatingIp",
        f"Gateway cannot be updated for router {router_id}, since a gateway to external "
        f"network {net_id} is required by one or more floating IPs.",
    )


def invalid_routes(routes: list[dict[str, Any]], reason: str) -> BadRequest:
    shown = [{"destination": r["destination"], "nexthop": r["nexthop"]} for r in routes]
    return bad_request("InvalidRoutes", f"Invalid format for routes: {shown}, {reason}")


# ---- helpers shared with floating IPs ----------------------------------------------------
class PortOps(Protocol):
    """What routers and floating IPs use of the ports controller (its internal contract)."""

    def load(self, ctx: RequestContext, id_: str) -> Stored: ...

    def create_internal(
        self, ctx: RequestContext, txn: Txn, attrs: dict[str, Any]
    ) -> dict[str, Any]: ...

    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None: ...

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None: ...


def ports_of(res: Resource) -> PortOps:
    return cast(PortOps, res.state.resources["port"])


def read_through(repo: Repo, txn: Txn, kind: str, id_: str) -> Stored | None:
    """A top-level object as `txn` will leave it (None if missing or deleted in `txn`).

    A cascade can touch one router several times in one transaction (two interfaces on a
    network being deleted); each change must build on the previous, not on the store.
    """
    key = obj_key(kind, id_)
    if key in txn.deletes:
        return None
    stored = repo.get(kind, id_)
    pending = txn.puts.get(key)
    if pending is not None:
        return Stored(orjson.loads(pending), key, stored.mod_revision if stored else 0)
    return stored


def ip_in(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
    except ValueError:
        return False


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return na.version == nb.version and na.overlaps(nb)


def router_cidrs(obj: dict[str, Any], gateway: bool = True) -> list[dict[str, str]]:
    """Every {subnet_id, ip_address, cidr} the router has a leg on."""
    out = [ip for iface in obj.get("_interfaces", []) for ip in iface["fixed_ips"]]
    if gateway:
        out += list(obj.get("_gw_fixed_ips") or [])
    return out


class Routers(Resource):
    defn = DEFN

    def extra_routes(self) -> list[ApiRoute]:
        item = "/v2.0/routers/{id}"
        uuid = _UUID.json_schema()
        interface = {  # what _interface_info takes (other keys are ignored)
            "type": "object",
            "properties": {"port_id": uuid, "subnet_id": uuid},
            "anyOf": [{"required": ["port_id"]}, {"required": ["subnet_id"]}],
        }
        info = {
            "type": "object",
            "required": ["id", "port_id", "subnet_id", "subnet_ids", "network_id"],
            "properties": {
                k: {"type": "string"}
                for k in ("id", "tenant_id", "project_id", "port_id", "network_id", "subnet_id")
            }
            | {"subnet_ids": {"type": "array", "items": {"type": "string"}}},
        }
        routes_list = _ROUTES_ANY_ORDER.json_schema()
        routes = {  # what _change_routes takes
            "type": "object",
            "required": ["router"],
            "additionalProperties": False,
            "properties": {
                "router": {
                    "type": "object",
                    "required": ["routes"],
                    "additionalProperties": False,
                    "properties": {"routes": inline_refs(routes_list)},
                }
            },
        }
        router = openapi.item_schema(self.defn)
        return [
            ApiRoute(
                f"{item}/add_router_interface",
                "PUT",
                self.add_router_interface,
                interface,
                response=info,
            ),
            ApiRoute(
                f"{item}/remove_router_interface",
                "PUT",
                self.remove_router_interface,
                interface,
                response=info,
            ),
            ApiRoute(
                f"{item}/add_extraroutes", "PUT", self.add_extraroutes, routes, response=router
            ),
            ApiRoute(
                f"{item}/remove_extraroutes",
                "PUT",
                self.remove_extraroutes,
                routes,
                response=router,
            ),
        ]

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """Show the gateway port's addresses as they are now (a SLAAC subnet added to the
        external network later gives the port an address the router did not record), and
        availability_zones: the zone of the chassis hosting its gateway (agents.router_zones)."""
        found = agents.router_zones(self.repo.store, [str(o["id"]) for o in objs])
        for obj in objs:
            obj["availability_zones"] = found.get(str(obj["id"]), [])
        for obj in objs:
            gw = obj.get("external_gateway_info")
            if not gw or not obj.get("_gw_port_id"):
                continue
            port = self.repo.get("ports", obj["_gw_port_id"])
            if port is not None:
                gw["external_fixed_ips"] = [
                    {"subnet_id": ip["subnet_id"], "ip_address": ip["ip_address"]}
                    for ip in port.obj.get("fixed_ips") or []
                ]

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        _check_flags(attrs)
        agents.check_hints(self.repo.store, "router", attrs.get("availability_zone_hints") or [])

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        gw = attrs.pop("external_gateway_info", None)
        obj = self.new_object(attrs)
        obj.update(
            status="ACTIVE",
            external_gateway_info=None,
            routes=[],
            flavor_id=None,
            availability_zones=[],
            _interfaces=[],
            _gw_port_id=None,
            _gw_fixed_ips=[],
            _floatingips=[],
        )
        key = self._free_key(txn)
        txn.claim(uniq_key("netkey", key), obj["id"], None)
        obj["_key"] = key
        if gw:
            self._attach_gateway(ctx, txn, obj, gw)
        txn.create("routers", obj)
        return obj

    def _free_key(self, txn: Txn) -> int:
        """A datapath key shared with networks' keys: a router is a datapath too."""
        return free_key(
            self.repo,
            txn,
            "netkey",
            MAX_KEY,
            conflict("NoRouterKeyAvailable", "Unable to create the router: no key is free."),
        )

    # ---- gateway --------------------------------------------------------------------------
    def _attach_gateway(
        self, ctx: RequestContext, txn: Txn, obj: dict[str, Any], gw: dict[str, Any]
    ) -> None:
        """Create the gateway port on the external network and record it on the router."""
        net_id = gw["network_id"]
        net = network_or_404(self, ctx, net_id)
        if not (
            rbac.may_use(self.repo, ctx, net.obj, rbac.EXTERNAL)
            or rbac.may_use(self.repo, ctx, net.obj, rbac.SHARED)
        ):  # (its access being revoked: wyvern.api.rbac)
            raise not_found("network", net_id)
        if not net.obj.get("router:external"):
            raise bad_router(f"Network {net_id} is not an external network")
        ntype = net.obj.get("provider:network_type")
        if ntype not in ("flat", "vlan"):
            # No chassis could host it: a gateway reaches the outside through a gateway
            # chassis's bridge mapping of the network's physnet (wyvern.apps.gateway).
            raise bad_router(
                f"External network {net_id} is a {ntype} network; router gateways need a "
                "flat or vlan provider network, which gateway chassis reach through their "
                "bridge mappings"
            )
        txn.require(net)
        subnets = {s["id"]: s for s in self.repo.objects("subnets", net_id)}
        ext_ips = gw.get("external_fixed_ips")
        _check_not_subnet_gateways(ext_ips or [], subnets)
        attrs: dict[str, Any] = {
            "network_id": net_id,
            "device_owner": ROUTER_GW,
            "device_id": obj["id"],
            "project_id": "",
            "tenant_id": "",
            "name": "",
            "admin_state_up": True,
        }
        if ext_ips:
            attrs["fixed_ips"] = [dict(ip) for ip in ext_ips]
        port = ports_of(self).create_internal(ctx, txn, attrs)
        if not port.get("fixed_ips"):
            # No subnet to take an address from: a gateway without one could carry nothing.
            # Older Neutron refused it with this message; today's accepts it and shows empty
            # external_fixed_ips. Raising aborts `txn`, so the port is never written.
            raise bad_router(f"No IPs available for external network {net_id}")
        fixed = self._with_cidrs(port.get("fixed_ips") or [], subnets)
        self._check_overlap(obj, fixed)
        obj["_gw_port_id"] = port["id"]
        obj["_gw_fixed_ips"] = fixed
        obj["external_gateway_info"] = {
            "network_id": net_id,
            "enable_snat": gw.get("enable_snat", True),
            "external_fixed_ips": [
                {"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]} for f in fixed
            ],
        }

    def _with_cidrs(
        self, fixed_ips: list[dict[str, Any]], subnets: dict[str, dict[str, Any]] | None = None
    ) -> list[dict[str, str]]:
        out = []
        for ip in fixed_ips:
            sub = (subnets or {}).get(ip["subnet_id"])
            if sub is None:
                st = self.repo.get("subnets", ip["subnet_id"])
                sub = st.obj if st else {}
            out.append(
                {
                    "subnet_id": ip["subnet_id"],
                    "ip_address": ip["ip_address"],
                    "cidr": str(sub.get("cidr", f"{ip['ip_address']}/32")),
                }
            )
        return out

    def _detach_gateway(self, obj: dict[str, Any]) -> str | None:
        """Forget the gateway on the router object; returns the port to delete."""
        gw = obj.get("external_gateway_info")
        if gw and obj.get("_floatingips"):
            raise gateway_in_use_by_fip(obj["id"], gw["network_id"])
        port_id: str | None = obj.get("_gw_port_id")
        obj["external_gateway_info"] = None
        obj["_gw_port_id"] = None
        obj["_gw_fixed_ips"] = []
        return port_id

    def _delete_port(self, ctx: RequestContext, txn: Txn, port_id: str | None) -> None:
        if not port_id:
            return
        port = self.repo.get("ports", port_id)
        if port is not None and port.key not in txn.deletes:
            ports_of(self).delete_ops(ctx, port, txn, {"force": "True"})

    def _update_gateway(
        self,
        ctx: RequestContext,
        txn: Txn,
        stored: Stored,
        new: dict[str, Any] | None,
        doomed: list[str | None],
    ) -> None:
        obj = stored.obj
        old = obj.get("external_gateway_info")
        if new is None:
            if old:
                doomed.append(self._detach_gateway(obj))
            return
        if old and old["network_id"] == new["network_id"]:
            obj["external_gateway_info"] = dict(old, enable_snat=new.get("enable_snat", True))
            ext_ips = new.get("external_fixed_ips")
            if ext_ips and _ip_set(ext_ips) != _ip_set(old.get("external_fixed_ips") or []):
                self._change_gateway_ips(ctx, txn, obj, ext_ips)
            return
        if old:
            doomed.append(self._detach_gateway(obj))
        self._attach_gateway(ctx, txn, obj, new)

    def _change_gateway_ips(
        self, ctx: RequestContext, txn: Txn, obj: dict[str, Any], ext_ips: list[dict[str, Any]]
    ) -> None:
        """New external IPs on the same network: re-address the gateway port in place."""
        net_id = obj["external_gateway_info"]["network_id"]
        subnets = {s["id"]: s for s in self.repo.objects("subnets", net_id)}
        _check_not_subnet_gateways(ext_ips, subnets)
        port = self.repo.get("ports", obj["_gw_port_id"])
        if port is None:
            raise bad_router(f"Router {obj['id']} has lost its gateway port")
        ports_of(self).update_ops(ctx, port, {"fixed_ips": [dict(i) for i in ext_ips]}, txn)
        touch(port.obj)
        txn.update(port)
        fixed = self._with_cidrs(port.obj.get("fixed_ips") or [], subnets)
        obj["_gw_fixed_ips"] = []  # the old addresses are being replaced, not kept
        self._check_overlap(obj, fixed)
        obj["_gw_fixed_ips"] = fixed
        obj["external_gateway_info"]["external_fixed_ips"] = [
            {"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]} for f in fixed
        ]

    def add_gateway_subnet(self, subnet: dict[str, Any]) -> None:
        """A subnet just created on an external network: each router whose gateway is on
        that network gets an address on it unless its gateway already has a stateful
        address of that IP version (or two stateful ones), as Neutron's
        _update_router_gw_port does after a subnet create. A router this fails for (no
        free address, a clash with its interfaces) keeps its gateway as it was: the
        subnet exists either way."""
        net_id = subnet["network_id"]
        ctx = admin_context()
        routers = sorted(
            {p.obj["device_id"] for p in self.repo.scan("ports", net_id)
             if p.obj.get("device_owner") == ROUTER_GW}
        )  # fmt: skip
        for rid in routers:

            def attempt(rid: str = rid) -> None:
                stored = self.repo.get("routers", rid)
                gw = stored.obj.get("external_gateway_info") if stored is not None else None
                if stored is None or not gw or gw.get("network_id") != net_id:
                    return
                subnets = {s["id"]: s for s in self.repo.objects("subnets", net_id)}
                fixed = list(gw.get("external_fixed_ips") or [])
                stateful = [
                    f for f in fixed
                    if f["subnet_id"] in subnets and not is_auto_address(subnets[f["subnet_id"]])
                ]  # fmt: skip
                if any(f["subnet_id"] == subnet["id"] for f in fixed) or len(stateful) > 1:
                    return
                version = int(subnet["ip_version"])
                if stateful and ipaddress.ip_address(stateful[0]["ip_address"]).version == version:
                    return
                txn = self.repo.txn()
                self._change_gateway_ips(
                    ctx, txn, stored.obj, [*fixed, {"subnet_id": subnet["id"]}]
                )
                touch(stored.obj)
                txn.update(stored)
                txn.commit()

            try:
                with_retries(attempt)
            except NeutronError as exc:
                LOG.warning("router %s: no gateway address on new subnet %s: %s",
                            rid, subnet["id"], exc)  # fmt: skip

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        changes = dict(changes)  # the caller re-uses it when a lost race retries
        _check_flags(changes)
        doomed: list[str | None] = []
        if "external_gateway_info" in changes:
            new = changes.pop("external_gateway_info")
            self._update_gateway(ctx, txn, stored, new, doomed)
        if "routes" in changes:
            self._check_routes(stored.obj, changes["routes"])
        stored.obj.update(changes)
        # Write the router first: deleting the old gateway port calls back into
        # port_deleted_ops, which must find the router already without it.
        txn.update(stored)
        for port_id in doomed:
            self._delete_port(ctx, txn, port_id)

    def _check_routes(self, obj: dict[str, Any], routes: list[dict[str, Any]]) -> None:
        if len(routes) > MAX_ROUTES:
            raise bad_request(
                "RoutesExhausted",
                f"Unable to complete operation for {obj['id']}. The number of routes exceeds "
                f"the maximum {MAX_ROUTES}.",
            )
        legs = router_cidrs(obj)
        own_ips = {leg["ip_address"] for leg in legs}
        for r in routes:
            nexthop = r["nexthop"]
            if not any(ip_in(nexthop, leg["cidr"]) for leg in legs):
                raise invalid_routes(routes, "the nexthop is not connected with router")
            if nexthop in own_ips:
                raise invalid_routes(routes, "the nexthop is used by router")
            dest = ipaddress.ip_network(r["destination"])
            if dest.version != ipaddress.ip_address(nexthop).version:
                raise invalid_routes(routes, "the nexthop and destination IP versions differ")

    # ---- delete ---------------------------------------------------------------------------
    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        obj = stored.obj
        if obj.get("_interfaces"):
            raise router_in_use(obj["id"])
        gw_port = self._detach_gateway(obj)
        txn.delete("routers", stored)
        if obj.get("_key") is not None:
            txn.release(uniq_key("netkey", obj["_key"]))
        self._delete_port(ctx, txn, gw_port)

    def port_deleted_ops(self, ctx: RequestContext, txn: Txn, port_obj: dict[str, Any]) -> None:
        """A router's port went away (network cascade): forget it on the router, same txn."""
        owner = port_obj.get("device_owner")
        router_id = port_obj.get("device_id")
        if owner not in ROUTER_OWNERS or not router_id:
            return
        stored = read_through(self.repo, txn, "routers", router_id)
        if stored is None:
            return
        obj = stored.obj
        if owner == ROUTER_GW:
            if obj.get("_gw_port_id") != port_obj["id"]:
                return
            obj["external_gateway_info"] = None
            obj["_gw_port_id"] = None
            obj["_gw_fixed_ips"] = []
        else:
            kept = [i for i in obj.get("_interfaces", []) if i["port_id"] != port_obj["id"]]
            if len(kept) == len(obj.get("_interfaces", [])):
                return
            obj["_interfaces"] = kept
        # Routes through a leg that no longer exists would be unroutable: drop them.
        legs = router_cidrs(obj)
        obj["routes"] = [
            r
            for r in obj.get("routes", [])
            if any(ip_in(r["nexthop"], leg["cidr"]) for leg in legs)
        ]
        touch(obj)
        txn.update(stored)

    # ---- interfaces -----------------------------------------------------------------------
    def _load_for_action(self, ctx: RequestContext, id_: str, action: str) -> Stored:
        stored = self.load(ctx, id_)
        self.authorize(ctx, action, stored.obj)
        return stored

    def add_router_interface(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        port_id, subnet_id = _interface_info(body, removal=False)

        def attempt() -> dict[str, Any]:
            stored = self._load_for_action(ctx, params["id"], "add_router_interface")
            txn = self.repo.txn()
            if port_id:
                info = self._add_by_port(ctx, txn, stored, port_id)
            else:
                assert subnet_id is not None
                info = self._add_by_subnet(ctx, txn, stored, subnet_id)
            touch(stored.obj)
            txn.update(stored)
            txn.commit()
            return info

        return with_retries(attempt), 200

    def _check_overlap(self, obj: dict[str, Any], new: list[dict[str, str]]) -> None:
        """No two legs of a router on one subnet, nor on overlapping CIDRs."""
        new_ids = {n["subnet_id"] for n in new}
        for leg in router_cidrs(obj):
            if leg["subnet_id"] in new_ids:
                raise bad_router(f"Router already has a port on subnet {leg['subnet_id']}")
        # Interfaces are checked against interfaces, a gateway against the interfaces.
        for leg in router_cidrs(obj, gateway=False):
            for n in new:
                if overlaps(n["cidr"], leg["cidr"]):
                    raise bad_router(
                        f"Cidr {n['cidr']} of subnet {n['subnet_id']} overlaps with cidr "
                        f"{leg['cidr']} of subnet {leg['subnet_id']}"
                    )

    def _subnet(self, ctx: RequestContext, subnet_id: str) -> Stored:
        stored = self.repo.get("subnets", subnet_id)
        if stored is None:
            raise not_found("subnet", subnet_id)
        subnet_res = self.state.resources.get("subnet")
        if subnet_res is not None and not subnet_res.visible(ctx, stored.obj):
            raise not_found("subnet", subnet_id)
        return stored

    def _add_by_subnet(
        self, ctx: RequestContext, txn: Txn, stored: Stored, subnet_id: str
    ) -> dict[str, Any]:
        router = stored.obj
        sub_st = self._subnet(ctx, subnet_id)
        sub = sub_st.obj
        if not ctx.owns(sub):
            raise bad_router(
                f"Cannot add interface to router {router['id']}: subnet {subnet_id} belongs "
                "to another project"
            )
        if not sub.get("gateway_ip"):
            raise bad_router("Subnet for router interface must have a gateway IP")
        _check_ra_mode(sub)
        leg = {"subnet_id": sub["id"], "ip_address": sub["gateway_ip"], "cidr": sub["cidr"]}
        self._check_overlap(router, [leg])
        txn.require(sub_st)
        port = ports_of(self).create_internal(
            ctx,
            txn,
            {
                "network_id": sub["network_id"],
                "fixed_ips": [{"subnet_id": sub["id"], "ip_address": sub["gateway_ip"]}],
                "device_owner": ROUTER_INTF,
                "device_id": router["id"],
                "project_id": router["project_id"],
                "tenant_id": router["project_id"],
                "name": "",
                "admin_state_up": True,
            },
        )
        fixed = self._with_cidrs(port["fixed_ips"], {sub["id"]: sub})
        router["_interfaces"] = [
            *router.get("_interfaces", []),
            {"port_id": port["id"], "network_id": port["network_id"], "fixed_ips": fixed},
        ]
        return _interface_result(router["id"], port, [sub["id"]], sub["id"])

    def _add_by_port(
        self, ctx: RequestContext, txn: Txn, stored: Stored, port_id: str
    ) -> dict[str, Any]:
        router = stored.obj
        port_st = ports_of(self).load(ctx, port_id)
        port = port_st.obj
        device = port.get("device_id") or ""
        owner = port.get("device_owner") or ""
        if device or owner.startswith("network:"):
            raise conflict(
                "PortInUse",
                f"Unable to complete operation on port {port_id} for network "
                f"{port['network_id']}. Port already has an attached device {device or owner}.",
            )
        if not port.get("fixed_ips"):
            raise bad_router("Router port must have at least one fixed IP")
        subnets: dict[str, dict[str, Any]] = {}
        for ip in port["fixed_ips"]:
            sub_st = self.repo.get("subnets", ip["subnet_id"])
            if sub_st is None:
                raise not_found("subnet", ip["subnet_id"])
            _check_ra_mode(sub_st.obj)
            subnets[sub_st.obj["id"]] = sub_st.obj
        fixed = self._with_cidrs(port["fixed_ips"], subnets)
        if _has_v6(fixed):
            for iface in router.get("_interfaces", []):
                if iface["network_id"] == port["network_id"] and _has_v6(iface["fixed_ips"]):
                    raise bad_router(
                        "Cannot have multiple router ports with the same network id if both "
                        f"contain IPv6 subnets. Existing port {iface['port_id']} has IPv6 "
                        f"subnet(s) and network id {port['network_id']}"
                    )
        self._check_overlap(router, fixed)
        if len({f["subnet_id"] for f in fixed if ":" not in f["ip_address"]}) > 1:
            raise bad_router("Cannot have multiple IPv4 subnets on router port")
        port["device_id"] = router["id"]
        port["device_owner"] = ROUTER_INTF
        touch(port)
        txn.update(port_st)
        router["_interfaces"] = [
            *router.get("_interfaces", []),
            {"port_id": port["id"], "network_id": port["network_id"], "fixed_ips": fixed},
        ]
        ids = list(dict.fromkeys(f["subnet_id"] for f in fixed))
        return _interface_result(router["id"], port, ids, ids[-1])

    def remove_router_interface(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        port_id, subnet_id = _interface_info(body, removal=True)

        def attempt() -> dict[str, Any]:
            stored = self._load_for_action(ctx, params["id"], "remove_router_interface")
            router = stored.obj
            txn = self.repo.txn()
            ifaces: list[dict[str, Any]] = router.get("_interfaces", [])
            if port_id:
                iface = next((i for i in ifaces if i["port_id"] == port_id), None)
                if iface is None:
                    raise NotFound(
                        f"Router {router['id']} does not have an interface with id {port_id}",
                        type="RouterInterfaceNotFound",
                    )
                if subnet_id and subnet_id not in {f["subnet_id"] for f in iface["fixed_ips"]}:
                    raise bad_request(
                        "SubnetMismatchForPort",
                        f"Subnet on port {port_id} does not match the requested subnet "
                        f"{subnet_id}.",
                    )
                removed = list(iface["fixed_ips"])
            else:
                assert subnet_id is not None
                iface = next(
                    (i for i in ifaces if subnet_id in {f["subnet_id"] for f in i["fixed_ips"]}),
                    None,
                )
                if iface is None:
                    if self.repo.get("subnets", subnet_id) is None:
                        raise not_found("subnet", subnet_id)
                    raise NotFound(
                        f"Router {router['id']} has no interface on subnet {subnet_id}",
                        type="RouterInterfaceNotFoundForSubnet",
                    )
                removed = [f for f in iface["fixed_ips"] if f["subnet_id"] == subnet_id]
            for leg in removed:
                self._check_leg_unused(router, leg)
            port_st = self.repo.get("ports", iface["port_id"])
            kept = [f for f in iface["fixed_ips"] if f not in removed]
            if kept and port_st is not None:
                # A multi-subnet port loses one subnet: keep the port, drop that address.
                remaining = [
                    {"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]}
                    for f in port_st.obj.get("fixed_ips", [])
                    if f["subnet_id"] not in {r["subnet_id"] for r in removed}
                ]
                iface["fixed_ips"] = kept
                touch(router)
                txn.update(stored)
                ports_of(self).update_ops(ctx, port_st, {"fixed_ips": remaining}, txn)
                touch(port_st.obj)
                txn.update(port_st)
            else:
                router["_interfaces"] = [i for i in ifaces if i is not iface]
                touch(router)
                txn.update(stored)
                if port_st is not None:
                    ports_of(self).delete_ops(ctx, port_st, txn, {"force": "True"})
            txn.commit()
            port = port_st.obj if port_st else {"id": iface["port_id"]}
            port.setdefault("network_id", iface["network_id"])
            port.setdefault("project_id", router["project_id"])
            ids = [f["subnet_id"] for f in removed]
            return _interface_result(router["id"], port, ids, ids[0])

        return with_retries(attempt), 200

    def _check_leg_unused(self, router: dict[str, Any], leg: dict[str, str]) -> None:
        for r in router.get("routes", []):
            if ip_in(r["nexthop"], leg["cidr"]):
                raise conflict(
                    "RouterInterfaceInUseByRoute",
                    f"Router interface for subnet {leg['subnet_id']} on router {router['id']} "
                    "cannot be deleted, as it is required by one or more routes.",
                )
        for fip_id in router.get("_floatingips", []):
            fip = self.repo.get("floatingips", fip_id)
            fixed = [fip.obj.get("fixed_ip_address")] if fip else []
            # (and the internal addresses of its port forwardings)
            fixed += (
                [p["internal_ip_address"] for p in (fip.obj.get("_pfs") or {}).values()]
                if fip
                else []
            )
            if any(ip and ip_in(ip, leg["cidr"]) for ip in fixed):
                raise conflict(
                    "RouterInterfaceInUseByFloatingIP",
                    f"Router interface for subnet {leg['subnet_id']} on router {router['id']} "
                    "cannot be deleted, as it is required by one or more floating IPs.",
                )

    # ---- extra routes ---------------------------------------------------------------------
    def add_extraroutes(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        def merge(old: list[dict[str, Any]], given: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = list(old)
            for r in given:
                if r not in out:
                    out.append(r)
            return out

        return self._change_routes(ctx, params["id"], body, "add_extraroutes", merge)

    def remove_extraroutes(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        def drop(old: list[dict[str, Any]], given: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in old if r not in given]

        return self._change_routes(ctx, params["id"], body, "remove_extraroutes", drop)

    def _change_routes(
        self,
        ctx: RequestContext,
        id_: str,
        body: Any,
        action: str,
        combine: Callable[[list[dict[str, Any]], list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> tuple[Any, int]:
        """The extraroute-atomic actions: a read-modify-write of routes, retried on races."""
        if (
            not isinstance(body, dict)
            or set(body) != {"router"}
            or not isinstance(body["router"], dict)
            or set(body["router"]) != {"routes"}
        ):
            raise BadRequest('Expected a body of the form {"router": {"routes": [...]}}')
        try:
            given = [dict(r) for r in _ROUTES_ANY_ORDER.validate_python(body["router"]["routes"])]
        except ValidationError as exc:
            reason = "; ".join(str(e.get("msg")) for e in exc.errors())
            raise bad_request(
                "InvalidInput",
                f"Invalid input for operation: Invalid input for routes. Reason: {reason}.",
            ) from None

        def attempt() -> dict[str, Any]:
            stored = self._load_for_action(ctx, id_, action)
            routes = combine(list(stored.obj.get("routes", [])), given)
            if routes != stored.obj.get("routes", []):
                self._check_routes(stored.obj, routes)
                stored.obj["routes"] = routes
                touch(stored.obj)
                txn = self.repo.txn()
                txn.update(stored)
                txn.commit()
            return stored.obj

        obj = with_retries(attempt)
        return {"router": self.show(ctx, obj)}, 200


# ---- module helpers ----------------------------------------------------------------------
def _ip_set(ips: list[dict[str, Any]]) -> set[tuple[str | None, str | None]]:
    return {(i.get("subnet_id"), i.get("ip_address")) for i in ips}


def _check_not_subnet_gateways(
    ext_ips: list[dict[str, Any]], subnets: dict[str, dict[str, Any]]
) -> None:
    gateways = {s.get("gateway_ip") for s in subnets.values()} - {None}
    for ip in ext_ips:
        if ip.get("ip_address") in gateways:
            raise bad_router(f"External IP {ip['ip_address']} is the same as the gateway IP")


def _has_v6(fixed: list[dict[str, str]]) -> bool:
    return any(":" in f["ip_address"] for f in fixed)


def _check_ra_mode(sub: dict[str, Any]) -> None:
    if (
        sub.get("ip_version") == 6
        and sub.get("ipv6_ra_mode") is None
        and sub.get("ipv6_address_mode") is not None
    ):
        raise bad_router(
            f"IPv6 subnet {sub['id']} configured to receive RAs from an external router "
            "cannot be added to Neutron Router"
        )


def _check_flags(attrs: dict[str, Any]) -> None:
    """We only build distributed routers: refuse what we would silently not do."""
    if attrs.get("distributed") is False:
        raise bad_router("centralized routers are not supported: every router is distributed")
    if attrs.get("ha") is True:
        raise bad_router("HA routers are not supported: every router is distributed")


def _interface_info(body: Any, removal: bool) -> tuple[str | None, str | None]:
    """Neutron's _validate_interface_info: exactly one of port_id / subnet_id (add)."""
    if not isinstance(body, dict) or not ("port_id" in body or "subnet_id" in body):
        raise bad_router("Either subnet_id or port_id must be specified")
    out: dict[str, str | None] = {"port_id": None, "subnet_id": None}
    for key in ("port_id", "subnet_id"):
        if key in body:
            try:
                out[key] = _UUID.validate_python(body[key])
            except ValidationError:
                shown = str(body[key])[:100]
                raise bad_router(f"'{shown}' is not a valid UUID") from None
    if not removal and out["port_id"] and out["subnet_id"]:
        raise bad_router("Cannot specify both subnet-id and port-id")
    return out["port_id"], out["subnet_id"]


def _interface_result(
    router_id: str, port: dict[str, Any], subnet_ids: list[str], subnet_id: str
) -> dict[str, Any]:
    project = port.get("project_id", "")
    return {
        "id": router_id,
        "tenant_id": project,
        "project_id": project,
        "port_id": port["id"],
        "network_id": port.get("network_id"),
        "subnet_id": subnet_id,
        "subnet_ids": subnet_ids,
    }


RESOURCES: list[type[Resource]] = [Routers]
