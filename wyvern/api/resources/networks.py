"""Networks: provider attributes, tunnel keys, MTU, and the delete/cascade rules."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Literal

from wyvern.api import rbac
from wyvern.api.attributes import Attr, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import Conflict, InvalidInput, NeutronError, conflict, not_found
from wyvern.api.repo import Stored, Txn
from wyvern.api.resource import Resource, delete_marked, free_key, touch
from wyvern.api.resources import agents
from wyvern.api.types import Bool, NonNegInt, ShortStr, Uuid
from wyvern.model import dns
from wyvern.model.keys import uniq_key, uniq_prefix

if TYPE_CHECKING:
    from wyvern.api.resources.qos import QosPolicies

NetworkType = Literal["flat", "vlan", "vxlan", "geneve"]
OVERLAYS = ("geneve", "vxlan")
MAX_VNI = 2**24 - 1
# Bytes of encapsulation on an IPv4 underlay: outer IPv4 20 + UDP 8 + the tunnel header
# (VXLAN 8; Geneve 8 + Wyvern's 8-byte option with its 4-byte header) + inner Ethernet 14.
# Neutron's 58 for Geneve assumes OVN's 4-byte option; ours carries both port keys.
OVERHEAD = {"geneve": 62, "vxlan": 50, "vlan": 0, "flat": 0}
# Ports that go away with their network (Neutron's AUTO_DELETE_PORT_OWNERS).
NO_NETWORK = conflict(
    "NoNetworkAvailable",
    "Unable to create the network. No tenant network is available for allocation.",
)
AUTO_DELETE_OWNERS = {"network:dhcp"}
FLOATINGIP_OWNER = "network:floatingip"
ROUTER_INTERFACE_OWNERS = {
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
}

DEFN = ResourceDef(
    name="network",
    collection="networks",
    path="networks",
    kind="networks",
    quota="network",
    attrs=(
        *standard_attrs(),
        Attr("admin_state_up", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr("status", str, filter=True, sort=True),
        Attr("subnets", list[str], filter=True),
        Attr(
            "shared",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            sort=True,
            default_passes_policy=True,
        ),
        Attr(
            "router:external",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            default_passes_policy=True,
        ),
        Attr(
            "provider:network_type",
            NetworkType | None,
            post=True,
            filter=True,
            default=None,
        ),
        Attr(
            "provider:physical_network",
            ShortStr | None,
            post=True,
            filter=True,
            default=None,
        ),
        Attr(
            "provider:segmentation_id",
            int | None,
            post=True,
            filter=True,
            default=None,
        ),
        Attr(
            "mtu",
            NonNegInt | None,
            post=True,
            put=True,
            filter=True,
            sort=True,
            default=None,
            doc="0 or none: the largest the network type allows. Below 68 (IPv4's minimum) "
            "the network can have no subnet, below 1280 no IPv6 subnet, as in Neutron.",
        ),
        Attr("port_security_enabled", Bool, post=True, put=True, default=True, filter=True),
        Attr("availability_zone_hints", list[ShortStr], post=True, default_factory=list),
        Attr("availability_zones", list[str]),
        Attr(
            "dns_domain",
            str,
            post=True,
            put=True,
            default="",
            filter=True,
            doc="An FQDN (lower-cased): the domain DHCP gives the network's ports (else the "
            "dns_domain setting).",
        ),
        Attr("ipv4_address_scope", str | None, doc="The address scope of its IPv4 subnets."),
        Attr("ipv6_address_scope", str | None, doc="The address scope of its IPv6 subnets."),
        Attr(
            "qos_policy_id",
            Uuid | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            doc="The QoS policy of its ports (a port's own overrides it); by default the "
            "project's default policy (qos-default).",
        ),
    ),
)


def check_dns_domain(attrs: dict[str, Any]) -> None:
    """A network's dns_domain: lower-cased, an FQDN (Neutron's validate_dns_domain)."""
    if "dns_domain" in attrs:
        attrs["dns_domain"] = domain = str(attrs["dns_domain"]).lower()
        error = dns.dns_domain_error(domain)
        if error:
            raise InvalidInput(f"Invalid input for dns_domain. Reason: {error}.")


def max_mtu(settings_mtu: int, network_type: str) -> int:
    return settings_mtu - OVERHEAD.get(network_type, 0)


IPV4_MIN_MTU = 68
IPV6_MIN_MTU = 1280


def checked_mtu(mtu: int | None, limit: int) -> int:
    """Neutron's: 0 or none is the largest the network type allows; a smaller one is
    taken, even below what IP needs (its subnets are then refused: `subnet_mtu_error`)."""
    if not mtu:
        return limit
    if mtu > limit:
        raise InvalidInput(f"Requested MTU is too big, maximum is {limit}")
    return mtu


def subnet_mtu_error(network: dict[str, Any], ip_version: int | None) -> Conflict | None:
    """Neutron's NetworkMTUSubnetConflict: a network below IPv4's minimum MTU has no
    subnets, one below IPv6's no IPv6 subnets (IP_VERSION None: any subnet there)."""
    mtu = network.get("mtu")
    if not mtu or mtu >= IPV6_MIN_MTU:
        return None
    minimum = IPV4_MIN_MTU if mtu < IPV4_MIN_MTU else IPV6_MIN_MTU
    if minimum == IPV6_MIN_MTU and ip_version == 4:
        return None
    return conflict(
        "NetworkMTUSubnetConflict",
        f"MTU of {network['id']} is not valid, subnet requires a minimum of {minimum}",
    )


class Networks(Resource):
    defn = DEFN
    delete_query = frozenset({"cascade"})

    def delete_query_doc(self) -> list[dict[str, Any]]:
        cascade = "delete the network's ports too (else 409 NetworkInUse while it has any)"
        return [
            {
                "name": "cascade",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean"},
                "description": cascade,
            }
        ]

    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        """Its owner, and the projects an RBAC policy shares it with (or makes it external
        to): wyvern.api.rbac."""
        return rbac.visible(ctx, obj, (rbac.SHARED, rbac.EXTERNAL))

    def all_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.repo.objects("networks") if not o.get("_deleting")]

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        objs = super().visible_objects(ctx)
        self._shared_as_seen(ctx, objs)  # before filters: ?shared=true means "to me"
        return objs

    @staticmethod
    def _shared_as_seen(ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """Neutron's `shared`: true when a policy shares the network with the caller's
        project or with everyone (so it differs per caller; the stored flag is the
        wildcard's)."""
        rbac.show_shared(ctx, objs)

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = super().load(ctx, id_)
        if stored.obj.get("_deleting"):
            raise not_found("network", id_)
        return stored

    # ---- create ---------------------------------------------------------------------------
    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        return super().show(ctx, {"dns_domain": "", **obj}, fields)

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """`shared` as the caller sees it; availability_zones: where the network's ports
        are bound (agents.network_zones)."""
        self._shared_as_seen(ctx, objs)
        found = agents.network_zones(self.repo.store, [str(o["id"]) for o in objs])
        for obj in objs:
            obj["availability_zones"] = found.get(str(obj["id"]), [])

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        check_dns_domain(attrs)
        agents.check_hints(self.repo.store, "network", attrs.get("availability_zone_hints") or [])
        s = self.settings
        ntype = attrs.get("provider:network_type") or s.default_network_type
        physnet = attrs.get("provider:physical_network")
        seg = attrs.get("provider:segmentation_id")
        if ntype in OVERLAYS:
            if physnet:
                raise InvalidInput(f"provider:physical_network specified for {ntype} network")
            if seg is not None and not 1 <= seg <= MAX_VNI:
                raise InvalidInput(
                    f"provider:segmentation_id {seg} out of range (1 through {MAX_VNI})"
                )
        else:
            if physnet is None:
                if not s.physical_networks:
                    raise InvalidInput(f"provider:physical_network required for {ntype} network")
                physnet = s.physical_networks[0]
            elif physnet not in s.physical_networks:
                raise InvalidInput(
                    f"physical_network '{physnet}' unknown for {ntype} provider network"
                )
            if ntype == "flat" and seg is not None:
                raise InvalidInput("provider:segmentation_id specified for flat network")
            if ntype == "vlan" and seg is not None and not 1 <= seg <= 4094:
                raise InvalidInput(f"provider:segmentation_id {seg} out of range (1 through 4094)")
        attrs["provider:network_type"] = ntype
        attrs["provider:physical_network"] = physnet
        attrs["mtu"] = checked_mtu(attrs.get("mtu"), max_mtu(s.global_physnet_mtu, ntype))

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        qos = qos_of(self)
        if obj.get("qos_policy_id") is None:  # (Neutron's qos-default)
            obj["qos_policy_id"] = qos.default_for(obj["project_id"])
        if obj["qos_policy_id"] is not None:
            qos.for_attach(ctx, txn, obj["qos_policy_id"])
        obj["status"] = "ACTIVE"
        obj["subnets"] = []
        obj["availability_zones"] = []
        ntype = obj["provider:network_type"]
        physnet = obj["provider:physical_network"]
        seg = obj["provider:segmentation_id"]
        if ntype in OVERLAYS and seg is not None:
            key = seg
            txn.claim(
                uniq_key("netkey", key),
                obj["id"],
                conflict(
                    "TunnelIdInUse", f"Unable to create the network. The tunnel ID {seg} is in use."
                ),
            )
        else:
            key = self._free_key(txn)
            txn.claim(uniq_key("netkey", key), obj["id"], None)
            if ntype in OVERLAYS:
                obj["provider:segmentation_id"] = key
        if ntype == "vlan":
            if seg is None:
                seg = self._free_vlan(physnet, txn)
                obj["provider:segmentation_id"] = seg
                error = None
            else:
                error = conflict(
                    "VlanIdInUse",
                    f"Unable to create the network. The VLAN {seg} on physical network "
                    f"{physnet} is in use.",
                )
            txn.claim(uniq_key("vlan", physnet, seg), obj["id"], error)
        elif ntype == "flat":
            txn.claim(
                uniq_key("flat", physnet),
                obj["id"],
                conflict(
                    "FlatNetworkInUse",
                    f"Unable to create the flat network. Physical network {physnet} is in use.",
                ),
            )
        obj["_key"] = key
        # shared / router:external are wildcard policies, as Neutron creates them.
        if obj.pop("shared", False):
            self._wildcard(txn, obj, rbac.SHARED)
        if obj.get("router:external"):
            self._wildcard(txn, obj, rbac.EXTERNAL)
        rbac.sync_flags(obj)
        txn.create("networks", obj)
        return obj

    @staticmethod
    def _wildcard(txn: Txn, obj: dict[str, Any], action: str) -> None:
        rbac.wildcard(txn, obj, "network", action)

    def _free_key(self, txn: Txn) -> int:
        return free_key(
            self.repo,
            txn,
            "netkey",
            MAX_VNI,
            conflict(
                "NoNetworkAvailable",
                "Unable to create the network. No tenant network is available for allocation.",
            ),
        )

    def _free_vlan(self, physnet: str, txn: Txn) -> int:
        lo, hi = self.settings.vlan_ranges.get(physnet, (1, 4094))
        used = {int(k) for k in self.repo.claims(uniq_prefix("vlan", physnet))}
        free = [
            v
            for v in range(lo, hi + 1)
            if v not in used and uniq_key("vlan", physnet, v) not in txn.claimed
        ]
        if not free:
            raise conflict(
                "NoNetworkAvailable",
                "Unable to create the network. No tenant network is available for allocation.",
            )
        return random.choice(free[:8])

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        check_dns_domain(changes)
        if "mtu" in changes:
            ntype = stored.obj["provider:network_type"]
            limit = max_mtu(self.settings.global_physnet_mtu, ntype)
            changes["mtu"] = checked_mtu(changes["mtu"], limit)
            versions = {
                int(sub["ip_version"])
                for sub in self.repo.objects("subnets", stored.obj["id"])
                if sub["id"] in (stored.obj.get("subnets") or [])
            }
            for version in sorted(versions):
                error = subnet_mtu_error({**stored.obj, "mtu": changes["mtu"]}, version)
                if error is not None:
                    raise error
        obj = stored.obj
        changes = dict(changes)
        if changes.get("qos_policy_id") not in (None, obj.get("qos_policy_id")):
            qos_of(self).for_attach(ctx, txn, changes["qos_policy_id"])
        shared = changes.pop("shared", None)
        if shared and rbac.WILDCARD not in rbac.targets(obj, rbac.SHARED):
            self._wildcard(txn, obj, rbac.SHARED)
        # (unsharing is Networks.update's: a revocation, in two steps)
        external = changes.pop("router:external", None)
        if external and not obj.get("router:external"):
            obj["router:external"] = True
            if rbac.WILDCARD not in rbac.targets(obj, rbac.EXTERNAL):
                self._wildcard(txn, obj, rbac.EXTERNAL)
        elif external is False and obj.get("router:external"):
            # Neutron: no gateway may be left on it; its access_as_external policies go.
            if any(
                p.get("device_owner") == "network:router_gateway"
                for p in self.repo.objects("ports", obj["id"])
            ):
                raise conflict(
                    "ExternalNetworkInUse",
                    f"External network {obj['id']} cannot be updated to be non-external, "
                    "since it has existing gateway ports.",
                )
            for pid, (action, _) in rbac.entries(obj).items():
                policy = self.repo.get(rbac.KIND, pid)
                if action == rbac.EXTERNAL and policy is not None:
                    rbac.drop_entry(txn, obj, policy.obj)
                    txn.delete(rbac.KIND, policy)
            obj["router:external"] = False
        obj.update(changes)

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        """`shared: false` is a revocation (rbac_policies.unshare)."""
        from wyvern.api.resources.rbac_policies import unshare

        def unshared(object_id: str, details: str) -> NeutronError:
            return conflict(
                "InvalidSharedSetting",
                f"Unable to reconfigure sharing settings for network {object_id}. Multiple "
                "tenants are using it.",
            )

        obj = unshare(self, ctx, id_, body, if_match, in_use=unshared)
        return obj if obj is not None else super().update(ctx, id_, body, if_match)

    # ---- delete ---------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        """Two steps (see delete_marked), so no port or subnet can slip in."""
        cascade = params.get("cascade", "false").lower() in ("true", "1", "yes")
        delete_marked(self, ctx, id_, if_match, {"cascade": str(cascade)})

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        net = stored.obj
        cascade = params.get("cascade", "False") == "True"
        ports = self.repo.scan("ports", net["id"])
        blocking = [
            p
            for p in ports
            if p.obj.get("device_owner") not in AUTO_DELETE_OWNERS
            and not self._unassociated_fip_port(p.obj)
        ]
        if blocking and not cascade:
            raise conflict(
                "NetworkInUse",
                f"Unable to complete operation on network {net['id']}. There are one or more "
                "ports still in use on the network.",
            )
        limit = self.repo.store.max_txn_ops
        if limit is not None and ports and not self._fits(ctx, stored, txn, ports, limit):
            self._drain_ports(ctx, ports, limit)
            ports = []
        self._final_ops(ctx, stored, txn, ports)

    def _unassociated_fip_port(self, port: dict[str, Any]) -> bool:
        """A floating IP's own address port whose floating IP is not associated: Neutron
        deletes such floating IPs with their external network (an associated one blocks);
        deleting the port takes its floating IP along (FloatingIps.port_deleted_ops)."""
        if port.get("device_owner") != FLOATINGIP_OWNER:
            return False
        fip = self.repo.get("floatingips", str(port.get("device_id") or ""))
        return fip is not None and not fip.obj.get("port_id")

    def _final_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, ports: list[Stored]
    ) -> None:
        """The network, its subnets, its claims and `ports`, in one transaction."""
        net = stored.obj
        port_res = self.state.resources["port"]
        for p in ports:
            port_res.delete_ops(ctx, p, txn, {"force": "True"})
        subnet_res = self.state.resources["subnet"]
        for s in self.repo.scan("subnets", net["id"]):
            subnet_res.delete_ops(ctx, s, txn, {"force": "True", "network_gone": "True"})
        for binding in self.repo.scan("mac_bindings", net["id"]):  # learned by agents
            txn.delete("mac_bindings", binding, owned=False)
        key = net.get("_key")
        if key is not None:
            txn.release(uniq_key("netkey", key))
        ntype = net.get("provider:network_type")
        if ntype == "vlan":
            txn.release(
                uniq_key("vlan", net["provider:physical_network"], net["provider:segmentation_id"])
            )
        elif ntype == "flat":
            txn.release(uniq_key("flat", net["provider:physical_network"]))
        rbac.drop_all(self.repo, txn, net, "network")
        txn.delete("networks", stored)

    def _fits(
        self, ctx: RequestContext, stored: Stored, txn: Txn, ports: list[Stored], limit: int
    ) -> bool:
        """Whether the whole delete fits in one transaction of at most `limit` operations,
        with what `txn` already holds (the intent it releases). Each port deletes at least
        its object and its id index: past that, no need to build the trial (each port's
        hooks read the store)."""
        if 2 * len(ports) > limit:
            return False
        trial = txn.fork()
        self._final_ops(ctx, stored, trial, ports)
        return trial.size() <= limit

    def _drain_ports(self, ctx: RequestContext, ports: list[Stored], limit: int) -> None:
        """Delete the ports of a network too big for one store transaction (etcd's
        --max-txn-ops), in transactions that fit, before the network's own.

        Safe to split: the network is marked deleting, so no port can join it; each
        chunk is all or nothing and guarded by its ports' revisions (a port changed
        meanwhile fails the chunk with RetryRequest, and the caller re-runs the delete
        from a fresh scan); and whatever stops it midway (an error, a crash) leaves a
        consistent store: the ports deleted so far are gone with all they claimed, the
        rest and the network are whole, and deleting the network again finishes it."""
        port_res = self.state.resources["port"]
        probe = self.repo.txn()
        port_res.delete_ops(ctx, ports[0], probe, {"force": "True"})
        per_chunk = max(1, limit // max(1, probe.size()))
        i = 0
        while i < len(ports):
            chunk = ports[i : i + per_chunk]
            txn = self.repo.txn()
            for p in chunk:
                port_res.delete_ops(ctx, p, txn, {"force": "True"})
            if txn.size() > limit and per_chunk > 1:  # bigger ports than the first one
                per_chunk //= 2
                continue
            txn.commit()
            i += len(chunk)

    @staticmethod
    def set_scope(network: Stored, version: int, scope: tuple[str, int] | None) -> None:
        """The address scope of the network's subnets of VERSION (Neutron derives it from
        their pools; all of them share one): shown as ipv{4,6}_address_scope, and its key
        (`_scope_key4`/`_scope_key6`) is what the agents route by (wyvern.apps.l3). The
        caller writes the network (txn.update or add_subnet)."""
        obj = network.obj
        obj[f"ipv{version}_address_scope"] = scope[0] if scope else None
        if scope:
            obj[f"_scope_key{version}"] = scope[1]
        else:
            obj.pop(f"_scope_key{version}", None)

    def add_subnet(self, txn: Txn, network: Stored, subnet_id: str, add: bool) -> None:
        """Subnets are listed on their network; changing the list bumps its revision."""
        subnets = [s for s in network.obj.get("subnets", []) if s != subnet_id]
        if add:
            subnets.append(subnet_id)
        network.obj["subnets"] = subnets
        touch(network.obj)
        txn.update(network)


def network_or_404(res: Resource, ctx: RequestContext, network_id: str) -> Stored:
    """The network a child names; hidden, missing or being deleted networks are 404."""
    stored = res.repo.get("networks", network_id)
    if stored is None or stored.obj.get("_deleting"):
        raise not_found("network", network_id)
    net_res = res.state.resources["network"]
    if not net_res.visible(ctx, stored.obj):
        raise not_found("network", network_id)
    return stored


RESOURCES = [Networks]


def qos_of(res: Resource) -> QosPolicies:
    """The QoS policies resource (what networks and ports attach)."""
    from wyvern.api.resources.qos import QosPolicies

    found = res.state.resources["policy"]
    assert isinstance(found, QosPolicies)
    return found
