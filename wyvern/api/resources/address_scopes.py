"""Address scopes: the pools of one scope never overlap, and routers route between
subnets only within a scope (Neutron's address-scope extension).

Neutron's address scope carries no standard attributes (no description, tags, timestamps
or revision number), so neither does ours. Each scope gets a small integer key (claimed
`uniq/scopekey/<n>`, like a network's tunnel key) that the API copies onto the networks
whose subnets come from the scope's pools (`_scope_key4`/`_scope_key6`): the agents match
it in a register (wyvern.apps.l3) and never follow scopes or pools themselves.

A subnet pool associated with a scope writes the scope's record in its transaction
(`claim_for_pool`), so two pools joining one scope at once are serialized and their
prefixes checked against each other, and a delete racing an association fails its guard.
"""

from __future__ import annotations

from typing import Any

from wyvern.api import rbac
from wyvern.api.attributes import Attr, Name, ProjectId, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import bad_request, conflict, not_found
from wyvern.api.repo import Stored, Txn
from wyvern.api.resource import Resource, SharedByRbac, free_key
from wyvern.api.resources.subnets import IpVersion
from wyvern.api.types import Bool
from wyvern.model.keys import uniq_key

MAX_SCOPE_KEY = 2**24 - 2  # (the register's all-ones value means "NATed": wyvern.apps.l3)

DEFN = ResourceDef(
    name="address_scope",
    collection="address_scopes",
    path="address-scopes",
    kind="address_scopes",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("name", Name, post=True, put=True, default="", filter=True, sort=True),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
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
        Attr("ip_version", IpVersion, post=True, required=True, filter=True, sort=True),
    ),
)


def scope_in_use(scope_id: str) -> Exception:
    return conflict(
        "AddressScopeInUse",
        f"Unable to complete operation on address scope {scope_id}. There are one or more "
        "subnet pools in use on the address scope.",
    )


class AddressScopes(SharedByRbac):
    defn = DEFN

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        key = self._free_key(txn)
        txn.claim(uniq_key("scopekey", key), obj["id"], None)
        obj["_key"] = key
        if obj.pop("shared", False):  # shared: the wildcard policy, as Neutron
            rbac.wildcard(txn, obj, "address_scope")
        rbac.sync_flags(obj)
        txn.create(self.defn.kind, obj)
        return obj

    def _free_key(self, txn: Txn) -> int:
        return free_key(
            self.repo,
            txn,
            "scopekey",
            MAX_SCOPE_KEY,
            conflict("AddressScopeKeysExhausted", "No address scope key is available."),
        )

    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        if stored.obj.get("shared") and changes.get("shared") is False:
            raise bad_request(
                "AddressScopeUpdateError",
                f"Unable to update address scope {stored.obj['id']} : Shared address scope "
                "can't be unshared.",
            )
        changes = dict(changes)
        if changes.pop("shared", None) and rbac.WILDCARD not in rbac.targets(
            stored.obj, rbac.SHARED
        ):
            rbac.wildcard(txn, stored.obj, "address_scope")
        stored.obj.update(changes)

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        scope_id = stored.obj["id"]
        if any(p.get("address_scope_id") == scope_id for p in self.repo.objects("subnetpools")):
            raise scope_in_use(scope_id)
        key = stored.obj.get("_key")
        if key is not None:
            txn.release(uniq_key("scopekey", key))
        rbac.drop_all(self.repo, txn, stored.obj, "address_scope")
        txn.delete(self.defn.kind, stored)

    # ---- for subnet pools -------------------------------------------------------------------
    def for_pool(self, ctx: RequestContext, scope_id: str) -> Stored:
        """The scope a pool names: 404 when the caller cannot see it."""
        stored = self.repo.get(self.defn.kind, scope_id)
        if stored is None or not self.visible(ctx, stored.obj):
            raise not_found("address_scope", scope_id)
        return stored


RESOURCES: list[type[Resource]] = [AddressScopes]
