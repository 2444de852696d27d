"""Floating IP port forwardings: /v2.0/floatingips/{floatingip_id}/port_forwardings.

Neutron's `floating-ip-port-forwarding` (with `-port-ranges` and `-description`): TCP or
UDP to the floating address on an external port (or range) is DNATed to a fixed IP of an
internal port, on that port (or the same offset in a range, or one port for a whole
external range: N-N or N-1, as Neutron allows). A floating IP associated with a port has
none, and one with forwardings cannot be associated.

Storage, so every change is one transaction and nothing is ever half-done:
- the floating IP's record holds its forwardings (`_pfs`, by id): two writers of one
  floating IP collide on its revision and retry, so external clashes are always seen;
- a claim per forwarding under its internal port (uniq pf-port/<port>/<forwarding> ->
  floating IP), and the internal port rewritten unchanged: two writers on one internal
  port collide too, so internal clashes are seen, and deleting the port finds them;
- the router the floating IP reaches the internal port through carries each forwarding
  (`_pfs`) and lists the floating IP in `_floatingips` (its gateway and the interface
  cannot go while it is used): the agents follow routers, not floating IPs.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import Field

if TYPE_CHECKING:
    from wyvern.api.resources.floatingips import FloatingIps

from wyvern.api.attributes import Attr, Description, ResourceDef, now, present, validate_update
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, Conflict, NotFound, bad_request, conflict
from wyvern.api.listing import ListQuery, filter_objects
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, check_revision
from wyvern.api.resources.routers import ports_of, read_through
from wyvern.api.types import IpAddress, Uuid
from wyvern.model.keys import uniq_key, uniq_prefix

# An internal range whose offset differs from the external one's is one flow per port
# (OpenFlow's NAT cannot shift a port): at most this many, else the request is refused.
MAX_SHIFTED_PORTS = 256
L4Port = Annotated[int, Field(ge=1, le=65535)]
PortRange = Annotated[str, Field(max_length=11, pattern=r"^[0-9]{1,5}(:[0-9]{1,5})?$")]

DEFN = ResourceDef(
    name="port_forwarding",
    collection="port_forwardings",
    path="floatingips/{floatingip_id}/port_forwardings",
    kind="port_forwardings",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("project_id", str, post=True, visible=False),
        Attr(
            "protocol",
            Literal["tcp", "udp"],
            post=True,
            put=True,
            required=True,
            filter=True,
            sort=True,
            doc="tcp or udp (what the dataplane forwards)",
        ),
        Attr("internal_ip_address", IpAddress | None, post=True, put=True, default=None),
        Attr("internal_port_id", Uuid, post=True, put=True, required=True, filter=True, sort=True),
        Attr("internal_port", L4Port | None, post=True, put=True, default=None),
        Attr(
            "external_port",
            L4Port | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("internal_port_range", PortRange | None, post=True, put=True, default=None),
        Attr(
            "external_port_range",
            PortRange | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("description", Description, post=True, put=True, default="", filter=True),
    ),
    parent_param="floatingip_id",
)


def bad_pf(msg: str) -> BadRequest:
    return bad_request("BadRequest", f"Bad port_forwarding request: {msg}.")


def pf_not_found(id_: str) -> NotFound:
    return NotFound(f"Port Forwarding {id_} could not be found.", type="PortForwardingNotFound")


def pf_port_key(port_id: str, pf_id: str) -> str:
    return uniq_key("pf-port", port_id, pf_id)


def _range(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.split(":")]
    lo, hi = parts[0], parts[-1]
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise bad_pf("Invalid port value, the port value must be a value between 1 and 65535")
    if lo > hi:
        raise bad_pf(f"Invalid port range {text}: the first port is above the last")
    return lo, hi


def _side(attrs: dict[str, Any], side: str) -> tuple[int, int] | None:
    """(first, last) port of one side from `<side>_port` or `<side>_port_range`."""
    port, rng = attrs.get(f"{side}_port"), attrs.get(f"{side}_port_range")
    if port is not None and rng is not None:
        raise bad_pf(f"{side}_port and {side}_port_range cannot be used in the same request")
    if port is not None:
        return int(port), int(port)
    if rng is not None:
        return _range(str(rng))
    return None


def check_ports(ext: tuple[int, int], int_: tuple[int, int]) -> None:
    """Neutron's N-N or N-1 relation, and what we can enforce exactly."""
    ext_n, int_n = ext[1] - ext[0], int_[1] - int_[0]
    if int_n > 0 and int_n != ext_n:
        raise bad_pf(
            "Invalid ranges of internal and/or external ports. The relation between "
            "internal and external ports must be N-N or 1-N"
        )
    if int_n > 0 and int_[0] != ext[0] and int_n + 1 > MAX_SHIFTED_PORTS:
        raise bad_pf(
            f"An internal port range shifted from the external one is forwarded port by "
            f"port: at most {MAX_SHIFTED_PORTS} ports, not {int_n + 1} (use the same ports "
            "on both sides, or one internal port)"
        )


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return max(a[0], b[0]) <= min(a[1], b[1])


def _text(r: tuple[int, int]) -> str:
    return f"{r[0]}:{r[1]}"


def shown(pf: dict[str, Any]) -> dict[str, Any]:
    """A stored forwarding as Neutron shows it: single ports also as `N:N` ranges."""
    ext, int_ = tuple(pf["ext"]), tuple(pf["int"])
    return {
        "id": pf["id"],
        "project_id": pf["project_id"],
        "protocol": pf["protocol"],
        "internal_ip_address": pf["internal_ip_address"],
        "internal_port_id": pf["internal_port_id"],
        "internal_port": int_[0] if int_[0] == int_[1] else None,
        "external_port": ext[0] if ext[0] == ext[1] else None,
        "internal_port_range": _text(cast(tuple[int, int], int_)),
        "external_port_range": _text(cast(tuple[int, int], ext)),
        "description": pf.get("description", ""),
        "revision_number": pf.get("revision_number", 0),
    }


def router_entry(fip: dict[str, Any], pf: dict[str, Any]) -> dict[str, Any]:
    """What the router carries of a forwarding (`_pfs`): all the agent needs."""
    return {
        "fip_id": fip["id"],
        "floating_ip_address": fip["floating_ip_address"],
        "protocol": pf["protocol"],
        "internal_ip_address": pf["internal_ip_address"],
        "internal_port_id": pf["internal_port_id"],
        "ext": list(pf["ext"]),
        "int": list(pf["int"]),
    }


class PortForwardings(Resource):
    defn = DEFN

    @property
    def fips(self) -> FloatingIps:
        return cast("FloatingIps", self.state.resources["floatingip"])

    # ---- reading --------------------------------------------------------------------------
    def _fip(self, ctx: RequestContext) -> Stored:
        """The parent floating IP (another project's is 404, as a missing one)."""
        try:
            uuid.UUID(ctx.parent)
        except ValueError:
            raise NotFound(
                f"Floating IP {ctx.parent} could not be found", type="FloatingIPNotFound"
            ) from None
        return self.fips.load(ctx, ctx.parent)

    def _objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        fip = self._fip(ctx).obj
        return [shown(p) for _, p in sorted((fip.get("_pfs") or {}).items())]

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return self._objects(ctx)

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        return filter_objects(self.defn, query, self._objects(ctx))

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        fip = self._fip(ctx)
        pf = (fip.obj.get("_pfs") or {}).get(id_)
        if pf is None:
            raise pf_not_found(id_)
        return Stored(shown(pf), fip.key, fip.mod_revision)

    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        return present(self.defn, ctx, obj, fields)

    # ---- writing --------------------------------------------------------------------------
    def _writable_fip(self, ctx: RequestContext, txn: Txn, action: str) -> Stored:
        parent = self._fip(ctx)  # (404 unless visible)
        # (Neutron's rules name it floatingip_port_forwarding)
        rule = f"{action}_floatingip_port_forwarding"
        self.authorize(ctx, rule, {"ext_parent:project_id": parent.obj.get("project_id")})
        fip = read_through(self.repo, txn, "floatingips", ctx.parent)
        if fip is None or fip.obj.get("_deleting"):
            raise NotFound(
                f"Floating IP {ctx.parent} could not be found", type="FloatingIPNotFound"
            )
        return fip

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        ext, int_ = _side(attrs, "external"), _side(attrs, "internal")
        if ext is None:
            raise bad_pf("external_port or external_port_range must be specified")
        if int_ is None:
            raise bad_pf("internal_port or internal_port_range must be specified")
        check_ports(ext, int_)

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        fip = self._writable_fip(ctx, txn, "create")
        ext, int_ = _side(attrs, "external"), _side(attrs, "internal")
        assert ext is not None and int_ is not None
        if fip.obj.get("port_id"):
            raise conflict(
                "FloatingIPPortAlreadyAssociated",
                f"Cannot associate floating IP {fip.obj['floating_ip_address']} "
                f"({fip.obj['id']}) with port {attrs['internal_port_id']} using fixed IP "
                f"{attrs.get('internal_ip_address')}, as that fixed IP already has a "
                f"floating IP on external network {fip.obj['floating_network_id']}.",
            )
        stamp = now()
        pf = {
            "id": str(uuid.uuid4()),
            "project_id": fip.obj["project_id"],
            "protocol": attrs["protocol"],
            "internal_ip_address": attrs.get("internal_ip_address"),
            "internal_port_id": attrs["internal_port_id"],
            "ext": list(ext),
            "int": list(int_),
            "description": attrs.get("description") or "",
            "created_at": stamp,
            "updated_at": stamp,
            "revision_number": 0,
        }
        self._place(ctx, txn, fip, pf, None)
        return shown(pf)

    def _place(
        self,
        ctx: RequestContext,
        txn: Txn,
        fip: Stored,
        pf: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> None:
        """Check PF (new, or replacing OLD) against Neutron's rules and write it."""
        port_st = ports_of(self).load(ctx, pf["internal_port_id"])
        port = port_st.obj
        v4 = [
            ip
            for ip in port.get("fixed_ips") or []
            if ipaddress.ip_address(ip["ip_address"]).version == 4
        ]
        if not v4:
            raise bad_pf(
                f"Requested internal port {port['id']} must allocate an IPv4 address at least"
            )
        if not pf["internal_ip_address"]:
            pf["internal_ip_address"] = v4[0]["ip_address"]
        match = next((ip for ip in v4 if ip["ip_address"] == pf["internal_ip_address"]), None)
        if match is None:
            raise bad_pf(
                f"Requested internal IP address {pf['internal_ip_address']} is not suitable "
                f"for internal neutron port {port['id']}, as its fixed_ips are {v4}"
            )
        for fid in set(self.repo.claims(uniq_prefix("fip-assoc", port["id"])).values()):
            other = self.repo.get("floatingips", fid)
            if other is not None and other.obj.get("port_id") == port["id"]:
                raise conflict(
                    "PortHasBindingFloatingIP",
                    f"Cannot create port forwarding to floating IP "
                    f"{other.obj['floating_ip_address']} ({fid}) with port {port['id']} using "
                    f"fixed IP {pf['internal_ip_address']}, as that port already has a "
                    "binding floating IP.",
                )
        net_id = fip.obj["floating_network_id"]
        try:
            router_id = self.fips._router_for(port, match["subnet_id"], net_id)
        except NotFound:
            raise bad_pf(
                f"External network {net_id} is not reachable from subnet "
                f"{match['subnet_id']}. Cannot set Port forwarding for port {port['id']} with "
                f"Floating IP {fip.obj['id']}"
            ) from None
        pfs = dict(fip.obj.get("_pfs") or {})
        others = {k: v for k, v in pfs.items() if old is None or k != old["id"]}
        current = fip.obj.get("router_id")
        if others and current and current != router_id:
            raise bad_pf(
                f"The Floating IP {fip.obj['id']} had been set on router {current}, the "
                f"internal Neutron port {port['id']} can not reach it"
            )
        ext, int_ = tuple(pf["ext"]), tuple(pf["int"])
        check_ports(cast(tuple[int, int], ext), cast(tuple[int, int], int_))
        for other in others.values():
            if other["protocol"] == pf["protocol"] and _overlap(ext, tuple(other["ext"])):
                raise bad_pf(
                    "There is a port collision with the external_port_range. The following "
                    f"ranges collide: {_text(tuple(other['ext']))} and {_text(ext)}"
                )
        self._internal_clash(txn, pf, fip.obj["id"])
        # Write: the floating IP, the router (old and new), the claim, the port (guard).
        if old is not None:
            self._unplace(txn, fip, old)
        pfs = dict(fip.obj.get("_pfs") or {})
        pfs[pf["id"]] = pf
        fip.obj["_pfs"] = pfs
        fip.obj["router_id"] = router_id
        txn.update(fip)
        router = read_through(self.repo, txn, "routers", router_id)
        if router is None:
            raise NotFound(f"Router {router_id} could not be found.", type="RouterNotFound")
        fids = [f for f in router.obj.get("_floatingips", []) if f != fip.obj["id"]]
        router.obj["_floatingips"] = [*fids, fip.obj["id"]]
        router.obj["_pfs"] = {**(router.obj.get("_pfs") or {}), pf["id"]: router_entry(fip.obj, pf)}
        txn.update(router)
        claim = pf_port_key(port["id"], pf["id"])
        if claim in txn.deletes:  # an update on the same port: keep the claim
            del txn.deletes[claim]
        else:
            txn.claim(claim, fip.obj["id"], None)
        if port_st.key not in txn.puts:
            txn.update(port_st)  # unchanged: a concurrent writer on this port retries

    def _internal_clash(self, txn: Txn, pf: dict[str, Any], fip_id: str) -> None:
        """Same internal port, IP and protocol with an overlapping internal range (on any
        floating IP: the claims under the port, and FIP_ID, which this txn may have
        changed already in a bulk create)."""
        port_id = pf["internal_port_id"]
        claims = self.repo.claims(uniq_prefix("pf-port", port_id))
        fip_ids = set(claims.values()) | {fip_id}
        int_ = tuple(pf["int"])
        for fid in sorted(fip_ids):
            other_fip = read_through(self.repo, txn, "floatingips", fid)
            if other_fip is None:
                continue
            for other in (other_fip.obj.get("_pfs") or {}).values():
                if other["id"] == pf["id"] or other["internal_port_id"] != port_id:
                    continue
                if (
                    other["protocol"] == pf["protocol"]
                    and other["internal_ip_address"] == pf["internal_ip_address"]
                    and _overlap(int_, tuple(other["int"]))
                ):
                    raise bad_pf(
                        "There is a port collision with the internal_port_range. The following "
                        f"ranges collide: {_text(tuple(other['int']))} and {_text(int_)}"
                    )

    def _unplace(self, txn: Txn, fip: Stored, pf: dict[str, Any]) -> None:
        """Remove PF from FIP's record (not written here), its router and its claim."""
        pfs = dict(fip.obj.get("_pfs") or {})
        pfs.pop(pf["id"], None)
        fip.obj["_pfs"] = pfs
        txn.release(pf_port_key(pf["internal_port_id"], pf["id"]))
        rid = fip.obj.get("router_id")
        router = read_through(self.repo, txn, "routers", rid) if rid else None
        if router is not None:
            rpfs = dict(router.obj.get("_pfs") or {})
            rpfs.pop(pf["id"], None)
            router.obj["_pfs"] = rpfs
            if not pfs:
                fids = router.obj.get("_floatingips", [])
                router.obj["_floatingips"] = [f for f in fids if f != fip.obj["id"]]
            txn.update(router)
        if not pfs and not fip.obj.get("port_id"):
            fip.obj["router_id"] = None

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        changes = validate_update(self.defn, ctx, body)
        for side in ("external", "internal"):
            if f"{side}_port" in changes and f"{side}_port_range" in changes:
                _side(changes, side)  # (refused)

        def attempt() -> dict[str, Any]:
            txn = self.repo.txn()
            fip = self._writable_fip(ctx, txn, "update")
            old = (fip.obj.get("_pfs") or {}).get(id_)
            if old is None:
                raise pf_not_found(id_)
            if if_match is not None:
                check_revision(Stored(old, fip.key, 0), if_match)
            pf = dict(old)
            for side, key in (("external", "ext"), ("internal", "int")):
                given = _side(changes, side)
                if given is not None:
                    pf[key] = list(given)
            for name in ("protocol", "internal_port_id", "description"):
                if name in changes:
                    pf[name] = changes[name]
            if "internal_ip_address" in changes:
                pf["internal_ip_address"] = changes["internal_ip_address"]
            elif (
                "internal_port_id" in changes
                and changes["internal_port_id"] != old["internal_port_id"]
            ):
                pf["internal_ip_address"] = None  # the new port's first IPv4 address
            pf["revision_number"] = int(old.get("revision_number", 0)) + 1
            pf["updated_at"] = now()
            self._place(ctx, txn, fip, pf, old)
            txn.commit()
            return shown(pf)

        return with_retries(attempt)

    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        def attempt() -> None:
            txn = self.repo.txn()
            fip = self._writable_fip(ctx, txn, "delete")
            pf = (fip.obj.get("_pfs") or {}).get(id_)
            if pf is None:
                raise pf_not_found(id_)
            if if_match is not None:
                check_revision(Stored(pf, fip.key, 0), if_match)
            self._unplace(txn, fip, pf)
            txn.update(fip)
            txn.commit()

        with_retries(attempt)

    # ---- cascades (called by floating IPs and ports) --------------------------------------
    def fip_deleted_ops(self, txn: Txn, fip: Stored) -> None:
        """FIP goes in `txn`: its forwardings go with it (their router entries, claims)."""
        for pf in list((fip.obj.get("_pfs") or {}).values()):
            self._unplace(txn, fip, pf)

    def port_deleted_ops(self, txn: Txn, port_obj: dict[str, Any]) -> None:
        """A port goes in `txn`: the forwardings to it go too (Neutron does)."""
        self._drop_for_port(txn, port_obj["id"], set())

    def port_ips_changed(self, txn: Txn, port_obj: dict[str, Any]) -> None:
        """A port's fixed IPs change in `txn` (PORT_OBJ as it will be): the forwardings
        to an address it no longer has go (Neutron does)."""
        kept = {ip["ip_address"] for ip in port_obj.get("fixed_ips") or []}
        self._drop_for_port(txn, port_obj["id"], kept)

    def _drop_for_port(self, txn: Txn, port_id: str, kept: set[str]) -> None:
        claims = self.repo.claims(uniq_prefix("pf-port", port_id))
        for fid in sorted(set(claims.values())):
            fip = read_through(self.repo, txn, "floatingips", fid)
            if fip is None:
                continue
            mine = [
                p
                for p in (fip.obj.get("_pfs") or {}).values()
                if p["internal_port_id"] == port_id and p["internal_ip_address"] not in kept
            ]
            for pf in mine:
                self._unplace(txn, fip, pf)
            if mine:
                txn.update(fip)


def fip_entries(fip: dict[str, Any]) -> list[dict[str, Any]]:
    """A floating IP's forwardings as Neutron lists them on it: Neutron's fields only, and
    `internal_port` / `external_port` only where that side is one port."""
    entries = []
    for _, pf in sorted((fip.get("_pfs") or {}).items()):
        entry = {
            "id": pf["id"],
            "internal_ip_address": pf["internal_ip_address"],
            "protocol": pf["protocol"],
            "internal_port_id": pf["internal_port_id"],
        }
        for side, key in (("internal", "int"), ("external", "ext")):
            first, last = pf[key]
            if first == last:
                entry[f"{side}_port"] = first
        entries.append(entry)
    return entries


def has_port_forwardings(fip: dict[str, Any]) -> bool:
    return bool(fip.get("_pfs"))


def in_use(fip_id: str) -> Conflict:
    return conflict(
        "FipInUseByPortForwarding", f"Floating IP {fip_id} in use by Port Forwarding resources."
    )


def port_has_pf(port_id: str) -> BadRequest:
    return bad_request(
        "PortHasPortForwarding",
        f"Cannot associate floating IP to port {port_id} because it already has a Port "
        "Forwarding binding.",
    )


RESOURCES: list[type[Resource]] = [PortForwardings]
