"""Subnet pools: prefixes subnets are allocated from (Neutron's subnet_allocation and
default-subnetpools extensions), and the allocation itself.

Allocation is Neutron's (subnet_alloc): the pool's prefixes minus its subnets, as the
fewest CIDRs, smallest blocks first; the first block that holds the requested size gives
its first subnet of that size. A subnet created from a pool writes the pool's record in
its transaction (`_serial`, internal), as Neutron bumps the pool's hash: two allocations
from one pool cannot both commit, the loser retries and sees the winner's subnet, so
subnets of a pool never overlap whatever the API processes. A pool delete or update
guards the same record, so none can slip past a concurrent allocation either.

One default pool per IP version: a claim `uniq/default_subnetpool/<version>`.
Pools of one address scope never overlap: associating a pool writes the scope's record
(wyvern.api.resources.address_scopes), so two associations are serialized.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import Field, PlainSerializer, StringConstraints

from wyvern.api import rbac
from wyvern.api.attributes import Attr, Name, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
)
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, Route, SharedByRbac, touch
from wyvern.api.types import Bool, Uuid

if TYPE_CHECKING:
    from wyvern.api.resources.networks import Networks
from wyvern.model.keys import uniq_key

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Neutron's SubnetPoolHelper: per IP version, the widest allowed prefix length by
# default (min), the narrowest (max), and the quota unit (addresses for IPv4, /64s).
DEFAULT_MIN = {4: 8, 6: 64}
MAX_BITS = {4: 32, 6: 128}
QUOTA_UNIT = {4: 32, 6: 64}

NonNegative = Annotated[int, Field(ge=0, le=2**63 - 1)]
# Neutron shows a pool's prefix lengths as strings (its _make_subnetpool_dict), and clients
# (Tempest) compare them so; they are integers in, and stored as integers.
PrefixLen = Annotated[NonNegative, PlainSerializer(str, return_type=str)]
PREFIXLENS = ("default_prefixlen", "min_prefixlen", "max_prefixlen")
Prefix = Annotated[str, StringConstraints(max_length=64)]
Prefixes = Annotated[list[Prefix], Field(max_length=1024)]

DEFN = ResourceDef(
    name="subnetpool",
    collection="subnetpools",
    path="subnetpools",
    kind="subnetpools",
    quota="subnetpool",
    attrs=(
        *(a for a in standard_attrs() if a.name != "name"),
        Attr("name", Name, post=True, put=True, required=True, filter=True, sort=True),
        Attr(
            "prefixes",
            Prefixes,
            post=True,
            put=True,
            required=True,
            filter=True,
            doc="CIDRs of one IP version; merged. An update may only add to them.",
        ),
        Attr("ip_version", int, filter=True, sort=True, doc="Derived from the prefixes."),
        Attr("default_prefixlen", PrefixLen, post=True, put=True, filter=True, sort=True),
        Attr("min_prefixlen", PrefixLen, post=True, put=True, filter=True, sort=True),
        Attr("max_prefixlen", PrefixLen, post=True, put=True, filter=True, sort=True),
        Attr(
            "default_quota",
            NonNegative | None,
            post=True,
            put=True,
            default=None,
            filter=True,
            sort=True,
            doc="Per project: addresses (IPv4) or /64s (IPv6) it may allocate; 0 or null: none.",
        ),
        Attr(
            "shared",
            Bool,
            post=True,
            default=False,
            filter=True,
            sort=True,
            default_passes_policy=True,
        ),
        Attr(
            "is_default",
            Bool,
            post=True,
            put=True,
            default=False,
            filter=True,
            sort=True,
            default_passes_policy=True,
        ),
        Attr("address_scope_id", Uuid | None, post=True, put=True, default=None, filter=True),
    ),
)


# ---- prefix arithmetic ---------------------------------------------------------------------
def _canonical(prefix: str) -> IpNetwork:
    """Neutron's validate_subnet (a prefix length is required); host bits are cleared,
    as Neutron's IPSet compaction of the pool's prefixes does."""
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        raise InvalidInput(
            f"Invalid input for prefixes. Reason: '{prefix}' is not a valid IP subnet."
        ) from None
    if "/" not in prefix:
        raise InvalidInput(
            f"Invalid input for prefixes. Reason: '{prefix}' isn't a recognized IP subnet "
            f"cidr, '{net}' is recommended."
        )
    return net


def compact(nets: Iterable[IpNetwork]) -> list[IpNetwork]:
    """The fewest CIDRs covering NETS (one IP version)."""
    return list(ipaddress.collapse_addresses(cast("Iterable[Any]", list(nets))))


def subtract(blocks: list[IpNetwork], taken: Iterable[IpNetwork]) -> list[IpNetwork]:
    """BLOCKS minus TAKEN, as CIDRs."""
    free = list(blocks)
    for t in taken:
        out: list[IpNetwork] = []
        for b in free:
            if b.version != t.version or not b.overlaps(t):
                out.append(b)
            elif t.subnet_of(b):  # type: ignore[arg-type]
                out.extend(b.address_exclude(t))  # type: ignore[arg-type]
            # else b lies inside t: gone
        free = out
    return compact(free) if free else []


def available(prefixes: list[IpNetwork], allocated: Iterable[IpNetwork]) -> list[IpNetwork]:
    """Neutron's _get_available_prefix_list: smallest blocks first, then by address."""
    free = subtract(compact(prefixes), allocated)
    return sorted(free, key=lambda n: (-n.prefixlen, int(n.network_address)))


def overlaps(a: list[IpNetwork], b: list[IpNetwork]) -> bool:
    return any(x.version == y.version and x.overlaps(y) for x in a for y in b)


def quota_units(prefixlen: int, version: int) -> int:
    """Addresses (IPv4) or /64s (IPv6) in a prefix of this length (Neutron's units;
    a prefix longer than /64 counts as 2^-n, which we round up to stay exact)."""
    return int(2 ** max(0, QUOTA_UNIT[version] - prefixlen))


def allocation_error(reason: str) -> NeutronError:
    """Neutron raises SubnetAllocationError as a bare NeutronException, which its API
    maps to 500 with this body: clients match the type, so we answer the same."""
    return NeutronError(f"Failed to allocate subnet: {reason}.", type="SubnetAllocationError")


def _bounds_error(kind: str, value: int, base_kind: str, base: int) -> BadRequest:
    return bad_request(
        "IllegalSubnetPoolPrefixBounds",
        f"Illegal prefix bounds: {kind}={value}, {base_kind}={base}.",
    )


def check_pool(attrs: dict[str, Any]) -> None:
    """SubnetPoolReader: prefixes (merged, one version), the bounds and their defaults."""
    raw = attrs["prefixes"]
    if not raw:
        raise bad_request("EmptySubnetPoolPrefixList", "Empty subnet pool prefix list.")
    nets = [_canonical(p) for p in raw]
    versions = {n.version for n in nets}
    if len(versions) > 1:
        raise bad_request(
            "PrefixVersionMismatch", "Cannot mix IPv4 and IPv6 prefixes in a subnet pool."
        )
    version = nets[0].version
    attrs["ip_version"] = version
    attrs["prefixes"] = [str(n) for n in compact(nets)]
    lo = attrs.get("min_prefixlen")
    hi = attrs.get("max_prefixlen")
    lo = DEFAULT_MIN[version] if lo is None else lo
    hi = MAX_BITS[version] if hi is None else hi
    default = attrs.get("default_prefixlen")
    default = lo if default is None else default
    if lo > hi:
        raise _bounds_error("min_prefixlen", lo, "max_prefixlen", hi)
    if hi > MAX_BITS[version]:
        raise _bounds_error("max_prefixlen", hi, "ip_version_max", MAX_BITS[version])
    if default < lo:
        raise _bounds_error("default_prefixlen", default, "min_prefixlen", lo)
    if default > hi:
        raise _bounds_error("default_prefixlen", default, "max_prefixlen", hi)
    attrs["min_prefixlen"], attrs["max_prefixlen"], attrs["default_prefixlen"] = lo, hi, default


def nets_of(pool: dict[str, Any]) -> list[IpNetwork]:
    return [ipaddress.ip_network(p) for p in pool.get("prefixes") or []]


class SubnetPools(SharedByRbac):
    defn = DEFN

    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        out = super().show(ctx, obj, fields)
        for name in PREFIXLENS:
            if out.get(name) is not None:
                out[name] = str(out[name])
        return out

    @property
    def scopes(self) -> Any:
        return self.state.resources["address_scope"]

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        check_pool(attrs)

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        if obj.get("is_default"):
            self._claim_default(txn, obj)
        if obj.get("address_scope_id"):
            self._join_scope(ctx, txn, obj)
        obj["_serial"] = 0
        if obj.pop("shared", False):  # shared: the wildcard policy, as Neutron
            rbac.wildcard(txn, obj, "subnetpool")
        rbac.sync_flags(obj)
        txn.create(self.defn.kind, obj)
        return obj

    def _claim_default(self, txn: Txn, obj: dict[str, Any]) -> None:
        txn.claim(
            uniq_key("default_subnetpool", obj["ip_version"]),
            obj["id"],
            InvalidInput(
                "A default subnetpool for this IP family has already been set. Only one "
                "default may exist per IP family"
            ),
        )

    def _join_scope(self, ctx: RequestContext, txn: Txn, pool: dict[str, Any]) -> None:
        """Neutron's _validate_address_scope_id: the caller owns the scope, is admin or
        has it shared by an RBAC policy (not one being revoked: the scope's record is
        written below, so a revocation's mark retries this), the versions match, and no
        other pool of the scope overlaps this one."""
        scope_id = pool["address_scope_id"]
        scope = self.scopes.for_pool(ctx, scope_id)
        if not rbac.may_use(self.repo, ctx, scope.obj, rbac.SHARED):
            raise bad_request(
                "IllegalSubnetPoolAssociationToAddressScope",
                f"Illegal subnetpool association: subnetpool {pool['id']} cannot be "
                f"associated with address scope {scope_id}.",
            )
        if scope.obj["ip_version"] != pool["ip_version"]:
            raise bad_request(
                "IllegalSubnetPoolIpVersionAssociationToAddressScope",
                f"Illegal subnetpool association: subnetpool {pool['id']} cannot associate "
                f"with address scope {scope_id} because subnetpool ip_version is not "
                f"{scope.obj['ip_version']}.",
            )
        mine = nets_of(pool)
        for other in self.repo.objects(self.defn.kind):
            same = other["id"] != pool["id"] and other.get("address_scope_id") == scope_id
            if same and overlaps(mine, nets_of(other)):
                raise conflict(
                    "AddressScopePrefixConflict",
                    "Failed to associate address scope: subnetpools within an address "
                    "scope must have unique prefixes.",
                )
        seen: set[str] = txn.__dict__.setdefault("_wyvern_scopes", set())
        if scope.key not in seen:  # (serializes associations with this scope)
            seen.add(scope.key)
            txn.update(scope)

    # ---- update ---------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        old_scope = obj.get("address_scope_id")
        if old_scope and not ctx.is_admin:
            scope = self.repo.get("address_scopes", old_scope)
            if scope is not None and scope.obj.get("project_id") != ctx.project_id:
                raise bad_request(
                    "IllegalSubnetPoolUpdate",
                    f"Illegal subnetpool update : subnetpool {obj['id']} cannot be updated "
                    f"when associated with shared address scope {old_scope}.",
                )
        merged = {**obj, **changes}
        if "prefixes" in changes:
            new = [_canonical(p) for p in changes["prefixes"]]
            old = nets_of(obj)
            if subtract(old, new):
                raise bad_request(
                    "IllegalSubnetPoolPrefixUpdate",
                    "Illegal update to prefixes: Existing prefixes must be a subset of the "
                    "new prefixes.",
                )
            merged["prefixes"] = [str(n) for n in new]
        check_pool(merged)
        if merged["ip_version"] != obj["ip_version"]:
            raise bad_request(
                "PrefixVersionMismatch", "Cannot mix IPv4 and IPv6 prefixes in a subnet pool."
            )
        if merged.get("is_default") and not obj.get("is_default"):
            self._claim_default(txn, merged)
        elif obj.get("is_default") and not merged.get("is_default"):
            txn.release(uniq_key("default_subnetpool", obj["ip_version"]))
        new_scope = merged.get("address_scope_id")
        if new_scope:
            self._join_scope(ctx, txn, merged)
        if new_scope != old_scope:
            self._check_network_affinity(obj)
        obj.update(
            {k: merged[k] for k in (*changes, "prefixes", "ip_version", *_BOUNDS) if k in merged}
        )
        if new_scope != old_scope:
            self._rescope_networks(txn, obj)

    def _check_network_affinity(self, pool: dict[str, Any]) -> None:
        """Neutron's _check_subnetpool_address_scope_network_affinity: re-scoping a pool
        must not leave a network with subnets of its version in two scopes."""
        subnets = self.repo.objects("subnets")
        nets = {s["network_id"] for s in subnets if s.get("subnetpool_id") == pool["id"]}
        for s in subnets:
            if (
                s["network_id"] in nets
                and s.get("ip_version") == pool["ip_version"]
                and s.get("subnetpool_id") != pool["id"]
            ):
                raise bad_request(
                    "NetworkAddressScopeAffinityError",
                    "Subnets of an IP version on a network must share the same address scope.",
                )

    def _rescope_networks(self, txn: Txn, pool: dict[str, Any]) -> None:
        """The networks with subnets from this pool now lie in its new scope (or none)."""
        networks = cast("Networks", self.state.resources["network"])
        done: set[str] = set()
        for sub in self.repo.objects("subnets"):
            if sub.get("subnetpool_id") != pool["id"] or sub["network_id"] in done:
                continue
            done.add(sub["network_id"])
            net = self.repo.get("networks", sub["network_id"])
            if net is not None:
                networks.set_scope(net, pool["ip_version"], self.scope_of(pool))
                touch(net.obj)
                txn.update(net)

    def scope_of(self, pool: dict[str, Any]) -> tuple[str, int] | None:
        """(scope id, scope key) of POOL's address scope, None without one."""
        scope_id = pool.get("address_scope_id")
        if not scope_id:
            return None
        scope = self.repo.get("address_scopes", scope_id)
        if scope is None:
            return None
        return scope_id, int(scope.obj["_key"])

    # ---- subnetpool-prefix-ops ---------------------------------------------------------------
    def extra_routes(self) -> list[Route]:
        item = f"/v2.0/{self.defn.path}/{{id}}"
        prefixes = {"type": "array", "items": {"type": "string", "maxLength": 64}}
        body = {
            "type": "object",
            "required": ["prefixes"],
            "additionalProperties": False,
            "properties": {"prefixes": prefixes},
        }
        out = {"type": "object", "required": ["prefixes"], "properties": {"prefixes": prefixes}}
        return [
            Route(f"{item}/add_prefixes", "PUT", self.add_prefixes, body, response=out),
            Route(f"{item}/remove_prefixes", "PUT", self.remove_prefixes, body, response=out),
        ]

    def add_prefixes(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        return self._prefix_op(ctx, params["id"], body, add=True), 200

    def remove_prefixes(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        return self._prefix_op(ctx, params["id"], body, add=False), 200

    def _prefix_op(self, ctx: RequestContext, id_: str, body: Any, add: bool) -> dict[str, Any]:
        """Neutron's add_prefixes (an update to the prefixes plus these) and
        remove_prefixes (refused while a subnet of the pool lies in what goes)."""
        if not isinstance(body, dict) or set(body) != {"prefixes"}:
            raise BadRequest('Invalid body: expected {"prefixes": [...]}')
        raw = self.defn.by_name["prefixes"].convert(body["prefixes"])
        requested = [_canonical(p) for p in raw]
        action = "add_prefixes" if add else "remove_prefixes"

        def attempt() -> dict[str, Any]:
            stored = self.load_for_write(ctx, id_, action)
            current = list(stored.obj.get("prefixes") or [])
            if not requested:
                return {"prefixes": current}
            txn = self.repo.txn()
            if add:
                self.update_ops(
                    ctx, stored, {"prefixes": current + [str(n) for n in requested]}, txn
                )
            else:
                nets = nets_of(stored.obj)
                if not overlaps(nets, requested):
                    return {"prefixes": current}
                allocated = [
                    ipaddress.ip_network(s["cidr"])
                    for s in self.repo.objects("subnets")
                    if s.get("subnetpool_id") == id_
                ]
                if overlaps(allocated, requested):
                    raise bad_request(
                        "IllegalSubnetPoolPrefixUpdate",
                        "Illegal update to prefixes: One or more the prefixes to be removed "
                        "is in use by a subnet.",
                    )
                stored.obj["prefixes"] = [str(n) for n in subtract(nets, requested)]
            touch(stored.obj)
            txn.update(stored)
            txn.commit()
            return {"prefixes": stored.obj["prefixes"]}

        return with_retries(attempt)

    # ---- delete ---------------------------------------------------------------------------
    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        pool_id = stored.obj["id"]
        if any(s.get("subnetpool_id") == pool_id for s in self.repo.objects("subnets")):
            raise bad_request(
                "SubnetPoolDeleteError",
                "Unable to delete subnet pool: Subnet pool has existing allocations.",
            )
        if stored.obj.get("is_default"):
            txn.release(uniq_key("default_subnetpool", stored.obj["ip_version"]))
        rbac.drop_all(self.repo, txn, stored.obj, "subnetpool")
        txn.delete(self.defn.kind, stored)

    # ---- allocation (for subnets) -----------------------------------------------------------
    def for_subnet(self, ctx: RequestContext, pool_id: str) -> Stored:
        return self.load(ctx, pool_id)

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or not self.visible(ctx, stored.obj):
            raise NotFound(f"Subnet pool {id_} could not be found.", type="SubnetPoolNotFound")
        return stored

    def default_pool(self, ctx: RequestContext, version: int) -> str:
        for pool in self.repo.objects(self.defn.kind):
            if (
                pool.get("is_default")
                and pool.get("ip_version") == version
                and self.visible(ctx, pool)
            ):
                return str(pool["id"])
        raise bad_request(
            "BadRequest", f"Bad subnets request: No default subnetpool found for IPv{version}."
        )

    def allocate_for(
        self,
        ctx: RequestContext,
        txn: Txn,
        pool_id: str,
        project: str,
        cidr: str | None,
        prefixlen: int | None,
        version: int,
    ) -> tuple[dict[str, Any], str]:
        """The pool (as read) and a CIDR from it for a new subnet, in TXN: the pool's
        record is written once per transaction (bulk creates share it and see what the
        earlier subnets took)."""
        cache: dict[str, tuple[Stored, list[IpNetwork]]] = txn.__dict__.setdefault(
            "_wyvern_pools", {}
        )
        entry = cache.get(pool_id)
        if entry is None:
            pool = self.for_subnet(ctx, pool_id)
            pool.obj["_serial"] = int(pool.obj.get("_serial") or 0) + 1
            txn.update(pool)
            entry = cache[pool_id] = (pool, [])
        pool, taken = entry
        if int(pool.obj["ip_version"]) != version:
            raise bad_request(
                "BadRequest",
                f"Bad subnets request: Cannot allocate IPv{version} subnet from "
                f"IPv{pool.obj['ip_version']} subnet pool.",
            )
        return pool.obj, self.allocate(pool, project, cidr, prefixlen, taken)

    def allocate(
        self,
        pool: Stored,
        project: str,
        cidr: str | None,
        prefixlen: int | None,
        taken_here: list[IpNetwork],
    ) -> str:
        """A CIDR for a new subnet of PROJECT from POOL (Neutron's SubnetAllocator):
        CIDR itself if it lies in the free space, else the first free block of PREFIXLEN
        (the pool's default). TAKEN_HERE: what earlier subnets of this transaction took.
        The caller writes the pool (see the module docstring)."""
        p = pool.obj
        version = int(p["ip_version"])
        if cidr is not None:
            want: IpNetwork | None = ipaddress.ip_network(cidr)
            assert want is not None
            length = want.prefixlen
        else:
            want = None
            length = int(p["default_prefixlen"]) if prefixlen is None else prefixlen
        if length > int(p["max_prefixlen"]):
            raise bad_request(
                "MaxPrefixSubnetAllocationError",
                f"Unable to allocate subnet with prefix length {length}, maximum allowed "
                f"prefix is {p['max_prefixlen']}.",
            )
        if length < int(p["min_prefixlen"]):
            raise bad_request(
                "MinPrefixSubnetAllocationError",
                f"Unable to allocate subnet with prefix length {length}, minimum allowed "
                f"prefix is {p['min_prefixlen']}.",
            )
        subs = [s for s in self.repo.objects("subnets") if s.get("subnetpool_id") == p["id"]]
        quota = p.get("default_quota")
        if quota:  # (Neutron: 0 or none is no limit)
            used = sum(
                quota_units(ipaddress.ip_network(s["cidr"]).prefixlen, version)
                for s in subs
                if s.get("project_id") == project
            )
            used += sum(quota_units(n.prefixlen, version) for n in taken_here)
            if used + quota_units(length, version) > int(quota):
                raise Conflict(
                    "Per-tenant subnet pool prefix quota exceeded.",
                    type="SubnetPoolQuotaExceeded",
                )
        allocated = [ipaddress.ip_network(s["cidr"]) for s in subs] + taken_here
        free = available(nets_of(p), allocated)
        if want is not None:
            if not any(want.subnet_of(b) for b in free):  # type: ignore[arg-type]
                raise allocation_error(
                    "Cannot allocate requested subnet from the available set of prefixes"
                )
            result: IpNetwork = want
        else:
            fits = [b for b in free if b.prefixlen <= length]
            if not fits:
                raise allocation_error(
                    f"Insufficient prefix space to allocate subnet size /{length}"
                )
            result = cast("IpNetwork", next(fits[0].subnets(new_prefix=length)))
        taken_here.append(result)
        return str(result)


_BOUNDS = ("min_prefixlen", "max_prefixlen", "default_prefixlen")

RESOURCES: list[type[Resource]] = [SubnetPools]
