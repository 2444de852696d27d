"""Floating IPs: an address on an external network, optionally mapped to a port's fixed IP.

The address is a real port on the external network (device_owner network:floatingip, no
project), so it is claimed by the same IPAM as every other port and can never collide.
An association is a claim on (port, fixed IP, external network), so two floating IPs can
never map the same fixed IP, however they race; it also rewrites the router that carries
it (its `_floatingips`) and the associated port (content unchanged), so a concurrent
interface removal, gateway change or port delete retries and sees the association.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, cast

import orjson

from wyvern.api.attributes import Attr, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    InvalidInput,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from wyvern.api.repo import Stored, Txn
from wyvern.api.resource import Resource, touch
from wyvern.api.resources.networks import ROUTER_INTERFACE_OWNERS
from wyvern.api.resources.port_forwardings import fip_entries, has_port_forwardings
from wyvern.api.resources.port_forwardings import in_use as pf_in_use
from wyvern.api.resources.routers import FLOATINGIP_OWNER, ROUTER_GW, ports_of, read_through
from wyvern.api.types import IpAddress, Uuid
from wyvern.model import dns
from wyvern.model.keys import STATUS_FIPS, fip_status_key, uniq_key, uniq_prefix

if TYPE_CHECKING:
    from wyvern.api.resources.port_forwardings import PortForwardings

DEFN = ResourceDef(
    name="floatingip",
    collection="floatingips",
    path="floatingips",
    kind="floatingips",
    quota="floatingip",
    attrs=(
        *(a for a in standard_attrs() if a.name != "name"),  # floating IPs have no name
        Attr("floating_network_id", Uuid, post=True, required=True, filter=True, sort=True),
        Attr(
            "floating_ip_address",
            IpAddress | None,
            post=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("subnet_id", Uuid | None, post=True, default=None, visible=False),
        Attr("port_id", Uuid | None, post=True, put=True, default=None, filter=True, sort=True),
        Attr(
            "fixed_ip_address",
            IpAddress | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("router_id", str | None, filter=True, sort=True),
        Attr("status", str, filter=True, sort=True),
        Attr("qos_policy_id", str | None),
        Attr("port_details", dict[str, Any] | None),
        Attr(
            "port_forwardings",
            list[dict[str, Any]],
            doc="Its port forwardings (expose-port-forwarding-in-fip, with -detail's id and "
            "internal_port_id; a port only where a side is a single port, as Neutron).",
        ),
        Attr(
            "dns_name",
            str,
            post=True,
            default="",
            filter=True,
            doc="A relative name, kept for an external DNS service (none is published to).",
        ),
        Attr("dns_domain", str, post=True, default="", filter=True, doc="An FQDN, likewise."),
    ),
)
PORT_DETAILS = (
    "name",
    "network_id",
    "mac_address",
    "admin_state_up",
    "status",
    "device_id",
    "device_owner",
)


def bad_fip(msg: str) -> BadRequest:
    return bad_request("BadRequest", f"Bad floatingip request: {msg}.")


def assoc_key(port_id: str, fixed_ip: str, network_id: str) -> str:
    return uniq_key("fip-assoc", port_id, fixed_ip, network_id)


def _v4(ip: str) -> bool:
    return ipaddress.ip_address(ip).version == 4


class FloatingIps(Resource):
    defn = DEFN

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get("floatingips", id_)
        if stored is None or not self.visible(ctx, stored.obj):
            raise NotFound(f"Floating IP {id_} could not be found", type="FloatingIPNotFound")
        return stored

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """port_details: the associated port's summary, as Neutron's fip-port-details;
        port_forwardings: what expose-port-forwarding-in-fip shows of each."""
        for obj in objs:
            details = None
            if obj.get("port_id"):
                port = self.repo.get("ports", obj["port_id"])
                if port is not None:
                    details = {k: port.obj.get(k) for k in PORT_DETAILS}
            obj["port_details"] = details
            obj["port_forwardings"] = fip_entries(obj)
        if len(objs) == 1:  # show, create, update (lists were merged by all_objects)
            merge_status(objs, self._statuses(objs))

    # ---- create ---------------------------------------------------------------------------
    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        return super().show(ctx, {"dns_name": "", "dns_domain": "", **obj}, fields)

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        for attr, check in (
            ("dns_name", dns.fip_dns_name_error),
            ("dns_domain", dns.dns_domain_error),
        ):
            if attr in attrs:
                attrs[attr] = value = str(attrs[attr]).lower()
                error = check(value)
                if error:
                    raise InvalidInput(f"Invalid input for {attr}. Reason: {error}.")
        if attrs.get("fixed_ip_address") and not attrs.get("port_id"):
            raise bad_fip("fixed_ip_address cannot be specified without a port_id")
        fip = attrs.get("floating_ip_address")
        if fip and not _v4(fip):
            raise bad_fip(f"Floating IP address {fip} is not an IPv4 address")

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        net_id = attrs["floating_network_id"]
        net = self.repo.get("networks", net_id)
        if net is not None and not self.state.resources["network"].visible(ctx, net.obj):
            raise not_found("network", net_id)  # (an RBAC policy makes it visible)
        if net is None or net.obj.get("_deleting") or not net.obj.get("router:external"):
            raise bad_fip(f"Network {net_id} is not a valid external network")
        txn.require(net)
        subnets = self.repo.objects("subnets", net_id)
        if not any(s.get("ip_version") == 4 for s in subnets):
            raise bad_fip(f"Network {net_id} does not contain any IPv4 subnet")
        fixed: dict[str, Any] = {}
        if attrs.get("subnet_id"):
            sub = next((s for s in subnets if s["id"] == attrs["subnet_id"]), None)
            if sub is None:
                if self.repo.get("subnets", attrs["subnet_id"]) is None:
                    raise not_found("subnet", attrs["subnet_id"])
                raise bad_fip(f"Subnet {attrs['subnet_id']} is not on network {net_id}")
            if sub.get("ip_version") != 4:
                raise bad_fip(f"Subnet {sub['id']} is not an IPv4 subnet")
            fixed["subnet_id"] = sub["id"]
        if attrs.get("floating_ip_address"):
            fixed["ip_address"] = attrs["floating_ip_address"]
        obj = self.new_object(attrs)
        port_attrs: dict[str, Any] = {
            "network_id": net_id,
            "device_owner": FLOATINGIP_OWNER,
            "device_id": obj["id"],
            "project_id": "",
            "tenant_id": "",
            "name": "",
            "admin_state_up": True,
        }
        if fixed:
            port_attrs["fixed_ips"] = [fixed]
        try:
            port = ports_of(self).create_internal(ctx, txn, port_attrs)
        except NeutronError as exc:
            if exc.type == "IpAddressGenerationFailure":
                raise _exhausted(net_id) from None
            raise
        v4 = [ip for ip in port.get("fixed_ips") or [] if _v4(ip["ip_address"])]
        if not v4:
            raise _exhausted(net_id)
        obj.update(
            floating_ip_address=v4[0]["ip_address"],
            subnet_id=v4[0]["subnet_id"],
            port_id=None,
            fixed_ip_address=None,
            router_id=None,
            status="DOWN",
            qos_policy_id=None,
            port_details=None,
            _port_id=port["id"],
            _port_mac=port["mac_address"],
            _port_key=port["_key"],
        )
        if attrs.get("port_id"):
            self._associate(ctx, txn, obj, attrs["port_id"], attrs.get("fixed_ip_address"))
        txn.create("floatingips", obj)
        return obj

    def all_objects(self) -> list[dict[str, Any]]:
        # Status merged before filtering, so `?status=ACTIVE` sees what the agents wrote.
        objs = super().all_objects()
        merge_status(objs, self._statuses(objs))
        return objs

    def _statuses(self, objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not objs:
            return {}
        if len(objs) == 1:
            kv = self.repo.store.get(fip_status_key(str(objs[0]["id"])))
            return {str(objs[0]["id"]): orjson.loads(kv.value)} if kv else {}
        return {
            kv.key[len(STATUS_FIPS) :]: orjson.loads(kv.value)
            for kv in self.repo.store.list(STATUS_FIPS).items
        }

    # ---- association ----------------------------------------------------------------------
    def _target(
        self, ctx: RequestContext, obj: dict[str, Any], port_id: str, fixed_ip: str | None
    ) -> tuple[Stored, str, str]:
        """(port, fixed IP, subnet) the floating IP would map to, as Neutron checks them."""
        port_st = ports_of(self).load(ctx, port_id)
        port = port_st.obj
        if port.get("project_id") != obj["project_id"] and not ctx.is_admin:
            raise bad_fip(
                f"Cannot process floating IP association with Port {port_id}, since that port "
                "is owned by a different tenant"
            )
        owner = port.get("device_owner") or ""
        if owner in ROUTER_INTERFACE_OWNERS or owner in (ROUTER_GW, FLOATINGIP_OWNER):
            raise bad_fip(f"Port {port_id} has owner {owner} and cannot have a floating IP")
        ips = port.get("fixed_ips") or []
        if fixed_ip:
            if not _v4(fixed_ip):
                raise bad_fip(
                    f"Cannot process floating IP association with {fixed_ip}, since that is "
                    "not an IPv4 address"
                )
            match = next((ip for ip in ips if ip["ip_address"] == fixed_ip), None)
            if match is None:
                raise bad_fip(f"Port {port_id} does not have fixed ip {fixed_ip}")
            return port_st, fixed_ip, match["subnet_id"]
        v4 = [ip for ip in ips if _v4(ip["ip_address"])]
        if not v4:
            raise bad_fip(
                f"Cannot add floating IP to port {port_id} that has no fixed IPv4 addresses"
            )
        if len(v4) > 1:
            raise bad_fip(
                f"Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific "
                "IPv4 address when assigning a floating IP"
            )
        return port_st, v4[0]["ip_address"], v4[0]["subnet_id"]

    def _router_for(self, port: dict[str, Any], subnet_id: str, net_id: str) -> str:
        """A router with a gateway on `net_id` and an interface on `subnet_id`; the one whose
        interface holds the subnet's gateway IP wins, as in Neutron."""
        sub = self.repo.get("subnets", subnet_id)
        gateway_ip = sub.obj.get("gateway_ip") if sub else None
        first: str | None = None
        for router in self.repo.objects("routers"):
            gw = router.get("external_gateway_info")
            if not gw or gw.get("network_id") != net_id:
                continue
            for iface in router.get("_interfaces", []):
                for leg in iface["fixed_ips"]:
                    if leg["subnet_id"] != subnet_id:
                        continue
                    if leg["ip_address"] == gateway_ip:
                        return str(router["id"])
                    first = first or str(router["id"])
        if first is None:
            raise NotFound(
                f"External network {net_id} is not reachable from subnet {subnet_id}.  "
                f"Therefore, cannot associate Port {port['id']} with a Floating IP.",
                type="ExternalGatewayForFloatingIPNotFound",
            )
        return first

    def _associate(
        self,
        ctx: RequestContext,
        txn: Txn,
        obj: dict[str, Any],
        port_id: str,
        fixed_ip: str | None,
    ) -> None:
        if obj.get("_pfs"):  # (Neutron's order: the floating IP's own use first)
            raise conflict(
                "FipInUseByPortForwarding",
                f"Floating IP {obj['id']} in use by Port Forwarding resources.",
            )
        if self.repo.claims(uniq_prefix("pf-port", port_id)):
            raise bad_request(
                "PortHasPortForwarding",
                f"Cannot associate floating IP to port {port_id} because it already has a "
                "Port Forwarding binding.",
            )
        port_st, ip, subnet_id = self._target(ctx, obj, port_id, fixed_ip)
        net_id = obj["floating_network_id"]
        if obj.get("port_id") == port_id and obj.get("fixed_ip_address") == ip:
            return  # unchanged
        router_id = self._router_for(port_st.obj, subnet_id, net_id)
        self._disassociate(txn, obj)
        txn.claim(
            assoc_key(port_id, ip, net_id),
            obj["id"],
            conflict(
                "FloatingIPPortAlreadyAssociated",
                f"Cannot associate floating IP {obj['floating_ip_address']} ({obj['id']}) "
                f"with port {port_id} using fixed IP {ip}, as that fixed IP already has a "
                f"floating IP on external network {net_id}.",
            ),
        )
        router = read_through(self.repo, txn, "routers", router_id)
        if router is None:
            raise not_found("router", router_id)
        fips = [f for f in router.obj.get("_floatingips", []) if f != obj["id"]]
        router.obj["_floatingips"] = [*fips, obj["id"]]
        mac, key = self._own_port(txn, obj)
        router.obj["_fips"] = {
            **(router.obj.get("_fips") or {}),
            obj["id"]: {
                "floating_ip_address": obj["floating_ip_address"],
                "fixed_ip_address": ip,
                "port_id": port_id,
                "mac": mac,
                "key": key,
            },
        }
        txn.update(router)
        # Rewrite the port unchanged: a concurrent delete of it must retry and see us.
        txn.update(port_st)
        # Stored DOWN: what the API shows is ACTIVE only while the agent that NATs it
        # says its flows are installed (merge_status).
        obj.update(port_id=port_id, fixed_ip_address=ip, router_id=router_id, status="DOWN")

    def _own_port(self, txn: Txn, obj: dict[str, Any]) -> tuple[str, int]:
        """(MAC, key) of the floating IP's own port on the external network: what the
        agent that NATs it answers ARP with (the router carries them, in `_fips`)."""
        if obj.get("_port_mac") and obj.get("_port_key") is not None:
            return str(obj["_port_mac"]), int(obj["_port_key"])
        port = self.repo.get("ports", obj.get("_port_id") or "")
        if port is None:
            raise not_found("port", obj.get("_port_id") or "")
        obj.update(_port_mac=port.obj["mac_address"], _port_key=port.obj["_key"])
        return str(port.obj["mac_address"]), int(port.obj["_key"])

    def _disassociate(self, txn: Txn, obj: dict[str, Any]) -> None:
        if not obj.get("port_id"):
            return
        txn.release(assoc_key(obj["port_id"], obj["fixed_ip_address"], obj["floating_network_id"]))
        if obj.get("router_id"):
            router = read_through(self.repo, txn, "routers", obj["router_id"])
            if router is not None:
                fips = router.obj.get("_floatingips", [])
                router.obj["_floatingips"] = [f for f in fips if f != obj["id"]]
                details = dict(router.obj.get("_fips") or {})
                details.pop(obj["id"], None)
                router.obj["_fips"] = details
                txn.update(router)
        obj.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        changes = dict(changes)  # the caller re-uses it when a lost race retries
        if not changes:  # Neutron's oldest contract: an empty update body disassociates
            changes["port_id"] = None
        if "port_id" in changes or "fixed_ip_address" in changes:
            port_id = changes.pop("port_id", obj.get("port_id"))
            fixed_ip = changes.pop("fixed_ip_address", None)
            if fixed_ip and not port_id:
                raise bad_fip("fixed_ip_address cannot be specified without a port_id")
            if port_id is None:
                self._disassociate(txn, obj)
            else:
                self._associate(ctx, txn, obj, port_id, fixed_ip)
        obj.update(changes)

    # ---- delete ---------------------------------------------------------------------------
    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        if has_port_forwardings(stored.obj):  # Neutron: its forwardings must go first
            raise pf_in_use(stored.obj["id"])
        self._disassociate(txn, stored.obj)
        txn.delete("floatingips", stored)
        port = self.repo.get("ports", stored.obj.get("_port_id") or "")
        if port is not None and port.key not in txn.deletes:
            ports_of(self).delete_ops(ctx, port, txn, {"force": "True"})

    def port_deleted_ops(self, ctx: RequestContext, txn: Txn, port_obj: dict[str, Any]) -> None:
        """A port is going away in `txn`: its floating IPs are disassociated, and if it is a
        floating IP's own address port (network cascade), that floating IP goes too."""
        if port_obj.get("device_owner") == FLOATINGIP_OWNER and port_obj.get("device_id"):
            own = read_through(self.repo, txn, "floatingips", port_obj["device_id"])
            if own is not None and own.obj.get("_port_id") == port_obj["id"]:
                self._disassociate(txn, own.obj)
                _forwardings(self).fip_deleted_ops(txn, own)
                txn.delete("floatingips", own)
            return
        for fip_id in set(self.repo.claims(uniq_prefix("fip-assoc", port_obj["id"])).values()):
            fip = read_through(self.repo, txn, "floatingips", fip_id)
            if fip is None or fip.obj.get("port_id") != port_obj["id"]:
                continue
            self._disassociate(txn, fip.obj)
            touch(fip.obj)
            txn.update(fip)


def merge_status(objs: list[dict[str, Any]], statuses: dict[str, dict[str, Any]]) -> None:
    """ACTIVE only while the agent that NATs an associated floating IP (or one with port
    forwardings) says its flows are installed (wyvern.controller.bindings.FipStatusWriter);
    DOWN otherwise."""
    for obj in objs:
        st = statuses.get(str(obj.get("id"))) or {}
        active = st.get("status") == "ACTIVE" and (obj.get("port_id") or obj.get("_pfs"))
        obj["status"] = "ACTIVE" if active else "DOWN"


def _forwardings(res: Resource) -> PortForwardings:
    return cast("PortForwardings", res.state.resources["port_forwarding"])


def _exhausted(net_id: str) -> BadRequest:
    return bad_request(
        "ExternalIpAddressExhausted",
        f"Unable to find any IP address on external network {net_id}.",
    )


RESOURCES: list[type[Resource]] = [FloatingIps]
