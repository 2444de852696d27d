"""Address groups: named CIDR sets that security group rules match as their remote.

Addresses change only through the `add_addresses` / `remove_addresses` actions (Neutron
refuses them on PUT). A group named by a rule cannot be deleted; rule creation `require`s
the group and deletion marks it first, so that check cannot race (see security_groups).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

from wyvern.api import openapi, rbac
from wyvern.api.attributes import Attr, ResourceDef, attr_schema, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, NotFound, bad_request, conflict, not_found
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, Route, delete_marked, touch
from wyvern.api.types import NoDuplicates


def _network(value: str) -> str:
    """Neutron stores each address as its network; a bare IP becomes a /32 or /128."""
    if "%" in value:
        raise ValueError("not a valid IP subnet")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("not a valid IP subnet") from None


def _subnet(value: str) -> str:
    """On create, neutron-lib's subnet_list: a prefix length is required."""
    if "/" not in value:
        raise ValueError("not a valid IP subnet: a prefix length is required")
    return _network(value)


# The actions take bare addresses too: Neutron's add/remove do not validate their body.
Address = Annotated[str, StringConstraints(max_length=64), AfterValidator(_network)]
Subnet = Annotated[str, StringConstraints(max_length=64), AfterValidator(_subnet)]

DEFN = ResourceDef(
    name="address_group",
    collection="address_groups",
    path="address-groups",
    kind="address_groups",
    attrs=(
        *standard_attrs(),
        Attr(
            "addresses",
            Annotated[list[Subnet], NoDuplicates],
            post=True,
            default_factory=list,
            doc="CIDRs (a host's with its /32 or /128), stored as their networks.",
        ),
    ),
)
ACTION_ADDRESSES = Attr("addresses", list[Address], doc="Addresses or CIDRs.")


def _unique(addresses: list[str]) -> list[str]:
    return list(dict.fromkeys(addresses))


class AddressGroups(Resource):
    defn = DEFN

    def all_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.repo.objects(self.defn.kind) if not o.get("_deleting")]

    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        """Its owner, and the projects an RBAC policy shares it with (wyvern.api.rbac)."""
        return rbac.visible(ctx, obj, (rbac.SHARED,))

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or stored.obj.get("_deleting") or not self.visible(ctx, stored.obj):
            raise not_found("address_group", id_[:64])
        return stored

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        attrs["addresses"] = _unique(attrs.get("addresses") or [])

    # ---- actions --------------------------------------------------------------------------
    def extra_routes(self) -> list[Route]:
        item = f"/v2.0/{self.defn.path}/{{id}}"
        body = {
            "type": "object",
            "required": ["addresses"],
            "additionalProperties": False,
            "properties": {"addresses": attr_schema(ACTION_ADDRESSES)},
        }
        out = openapi.item_schema(self.defn)
        return [
            Route(f"{item}/add_addresses", "PUT", self.add_addresses, body, response=out),
            Route(f"{item}/remove_addresses", "PUT", self.remove_addresses, body, response=out),
        ]

    def add_addresses(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        return self._change(ctx, params["id"], body, add=True)

    def remove_addresses(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        return self._change(ctx, params["id"], body, add=False)

    def _change(self, ctx: RequestContext, id_: str, body: Any, add: bool) -> tuple[Any, int]:
        """Neutron's add/remove: all or nothing, naming the offending addresses."""
        if not isinstance(body, dict) or set(body) != {"addresses"}:
            raise BadRequest('Invalid body: expected {"addresses": [...]}')
        requested = _unique(ACTION_ADDRESSES.convert(body["addresses"]))

        def attempt() -> dict[str, Any]:
            stored = self.load_for_write(ctx, id_, "add_addresses" if add else "remove_addresses")
            current: list[str] = stored.obj.get("addresses") or []
            if add:
                present = [a for a in requested if a in current]
                if present:
                    raise bad_request(
                        "AddressesAlreadyExist",
                        f"Addresses {present} already exist in the address group {id_}.",
                    )
                new = current + requested
            else:
                missing = [a for a in requested if a not in current]
                if missing:
                    raise NotFound(
                        f"Addresses {missing} not found in the address group {id_}.",
                        type="AddressesNotFound",
                    )
                new = [a for a in current if a not in requested]
            if new != current:
                stored.obj["addresses"] = new
                touch(stored.obj)
                txn = self.repo.txn()
                txn.update(stored)
                txn.commit()
            return stored.obj

        obj = with_retries(attempt)
        return {self.defn.name: self.show(ctx, obj)}, 200

    # ---- deleting -------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        delete_marked(self, ctx, id_, if_match, params, self.delete_checks)

    def delete_checks(self, ctx: RequestContext, stored: Stored) -> None:
        id_ = stored.obj["id"]
        if any(
            r.get("remote_address_group_id") == id_
            for r in self.repo.objects("security_group_rules")
        ):
            raise conflict(
                "AddressGroupInUse",
                f"Address group {id_} is in use on one or more security group rules.",
            )

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        self.delete_checks(ctx, stored)
        rbac.drop_all(self.repo, txn, stored.obj, "address_group")
        txn.delete(self.defn.kind, stored)


RESOURCES = [AddressGroups]
