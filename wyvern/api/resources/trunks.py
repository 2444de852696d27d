"""Trunks (`trunk`, `trunk-details`): one VIF, many networks, told apart by VLAN.

Neutron's trunk service plugin, as data in the store. A trunk names a parent port and
subports, each with a segmentation type (`vlan`, or `inherit`: the subport's network's own
provider VLAN) and id. Everything a trunk changes is written in one transaction with the
trunk: the parent port gets `_trunk` ({"id", "subports": [[port id, vlan], ...]}), which
is all its agent needs to plug the subports (wyvern.controller.trunks), and each subport
gets `_subport` ({"trunk_id", "parent_id", "vlan"}) and device_owner `trunk:subport`.
Claims keep a port in at most one trunk (`trunk_port/<port>`, parent or subport) and a
VLAN once per trunk (`trunk_seg/<trunk>/vlan/<id>`), so concurrent requests cannot race
past the checks.

Like Neutron's Linux bridge and (old) OVS drivers, Wyvern does not trunk or untrunk a
bound parent: a trunk is created before the parent is plugged, and deleted after it is
unplugged (ParentPortInUse, TrunkInUse). Subports come and go at any time.

Status, as Neutron defines it, is derived from the agents' port status records: DOWN while
the parent is not ACTIVE; ACTIVE when the parent and every subport are (a subport is ACTIVE
only once its flows are installed); BUILD while some subport is still being wired on the
parent's host; DEGRADED when a subport is bound elsewhere than its parent.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

import orjson

from wyvern.api import openapi
from wyvern.api.attributes import Attr, ResourceDef, standard_attrs
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    InvalidInput,
    NeutronError,
    NotFound,
    conflict,
    not_found,
)
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, Route, touch
from wyvern.api.types import Bool, Uuid
from wyvern.model.keys import status_key, uniq_key

if TYPE_CHECKING:
    from wyvern.api.resources.ports import Ports

SUBPORT_OWNER = "trunk:subport"
SEGMENTATION_TYPES = ("vlan",)  # what the dataplane demultiplexes (inherit resolves to one)
INHERIT = "inherit"
MIN_VLAN, MAX_VLAN = 1, 4094

DEFN = ResourceDef(
    name="trunk",
    collection="trunks",
    path="trunks",
    kind="trunks",
    attrs=(
        *standard_attrs(),
        Attr("admin_state_up", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr("port_id", Uuid, post=True, required=True, filter=True, sort=True),
        Attr("status", str, filter=True, sort=True),
        Attr(
            "sub_ports",
            Any,
            post=True,
            default_factory=list,
            doc="[{port_id, segmentation_type (vlan | inherit), segmentation_id}]",
        ),
    ),
)


# ---- Neutron's errors ------------------------------------------------------------------------
def trunk_port_in_use(port_id: str) -> NeutronError:
    return conflict("TrunkPortInUse", f"Port {port_id} is in use by another trunk.")


def parent_port_in_use(port_id: str) -> NeutronError:
    return conflict(
        "ParentPortInUse",
        f"Port {port_id} is currently in use and is not eligible for use as a parent port.",
    )


def duplicate_subport(seg_type: str, seg_id: int, trunk_id: str) -> NeutronError:
    return conflict(
        "DuplicateSubPort",
        f"segmentation_type {seg_type} and segmentation_id {seg_id} already in use on "
        f"trunk {trunk_id}.",
    )


def trunk_disabled(trunk_id: str) -> NeutronError:
    return conflict("TrunkDisabled", f"Trunk {trunk_id} is currently disabled.")


def port_in_use_as_subport(port_id: str, trunk_id: str) -> NeutronError:
    return conflict(
        "PortInUseAsSubPort", f"Port {port_id} is currently a subport for trunk {trunk_id}."
    )


def port_in_use_as_parent(port_id: str, trunk_id: str) -> NeutronError:
    return conflict(
        "PortInUseAsTrunkParent",
        f"Port {port_id} is currently a parent port for trunk {trunk_id}.",
    )


def check_subports_shape(data: Any) -> list[dict[str, Any]]:
    """neutron-lib's validate_subports: a list of dicts, each with a unique valid port
    UUID and both segmentation details (or `inherit`), no segmentation id twice."""
    if not isinstance(data, list):
        raise InvalidInput(f"Invalid data format for subports: '{data}' is not a list")
    ids: set[str] = set()
    segs: dict[Any, set[Any]] = {}
    for sub in data:
        if not isinstance(sub, dict):
            raise InvalidInput(f"Invalid data format for subport: '{sub}' is not a dict")
        unknown = sorted(set(sub) - {"port_id", "segmentation_type", "segmentation_id"})
        if unknown:
            raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        port_id = sub.get("port_id")
        if port_id is None:
            raise InvalidInput("A valid port UUID must be specified")
        try:
            if not isinstance(port_id, str) or str(uuid.UUID(port_id)) != port_id.lower():
                raise ValueError
        except ValueError:
            raise InvalidInput(f"Invalid UUID for subport: '{port_id}'") from None
        if port_id in ids:
            raise InvalidInput(f"Non unique UUID for subport: '{port_id}'")
        ids.add(port_id)
        seg_type = sub.get("segmentation_type")
        if seg_type == INHERIT:
            continue
        seg_id = sub.get("segmentation_id")
        if (not seg_type or seg_id is None) and len(sub) > 1:
            raise InvalidInput(
                f"Invalid subport details '{sub}': missing segmentation information. Must "
                "specify both segmentation_id and segmentation_type"
            )
        if seg_id in segs.get(seg_type, set()):
            raise InvalidInput(f"Segmentation ID '{seg_id}' for '{port_id}' is not unique")
        if seg_id is not None:
            segs.setdefault(seg_type, set()).add(seg_id)
    return [dict(s) for s in data]


def trunk_status(
    parent: dict[str, Any] | None,
    statuses: dict[str, dict[str, Any]],
    subport_ids: list[str],
) -> str:
    """Neutron's trunk status from what the agents report of the parent and subports."""
    if parent is None:
        return "DOWN"
    top = statuses.get(str(parent["id"])) or {}
    if top.get("status") != "ACTIVE":
        return "DOWN"
    host = top.get("host")
    status = "ACTIVE"
    for sub_id in subport_ids:
        st = statuses.get(sub_id) or {}
        if st.get("host") and st.get("host") != host:
            return "DEGRADED"
        if st.get("status") != "ACTIVE":
            status = "BUILD"
    return status


class Trunks(Resource):
    defn = DEFN
    create_errors = (404, 409)

    @property
    def _ports(self) -> Ports:
        return cast("Ports", self.state.resources["port"])

    # ---- reading ---------------------------------------------------------------------------
    def all_objects(self) -> list[dict[str, Any]]:
        objs = super().all_objects()
        self._with_status(objs)  # (before filtering: ?status=ACTIVE)
        return objs

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        if len(objs) == 1:
            self._with_status(objs)

    def _with_status(self, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            parent = self.repo.get("ports", str(obj.get("port_id")))
            ids = [str(s["port_id"]) for s in obj.get("sub_ports") or []]
            wanted = [parent.obj] if parent is not None else []
            for sub_id in ids:
                sub = self.repo.get("ports", sub_id)
                if sub is not None:
                    wanted.append(sub.obj)
            statuses: dict[str, dict[str, Any]] = {}
            for port in wanted:
                kv = self.repo.store.get(status_key(str(port["network_id"]), str(port["id"])))
                if kv is not None:
                    statuses[str(port["id"])] = orjson.loads(kv.value)
            obj["status"] = trunk_status(parent.obj if parent is not None else None, statuses, ids)

    # ---- ports as a trunk sees them -----------------------------------------------------------
    def _port(self, ctx: RequestContext, port_id: str) -> Stored:
        stored = self.repo.get("ports", port_id)
        if stored is None or not self._ports.readable(ctx, stored.obj):
            raise not_found("port", port_id)
        return stored

    def _bound(self, port: dict[str, Any]) -> bool:
        """Neutron's is_bound: the port has a host (its own, or its agent's report)."""
        if port.get("binding:host_id"):
            return True
        kv = self.repo.store.get(status_key(str(port["network_id"]), str(port["id"])))
        return kv is not None and bool(orjson.loads(kv.value).get("host"))

    def _network(self, port: dict[str, Any]) -> dict[str, Any]:
        net = self.repo.get("networks", str(port["network_id"]))
        if net is None:
            raise not_found("network", str(port["network_id"]))
        return net.obj

    def _check_parent(self, ctx: RequestContext, port_id: str) -> Stored:
        parent = self._port(ctx, port_id)
        if parent.obj.get("_subport"):
            raise trunk_port_in_use(port_id)
        if parent.obj.get("_trunk") or self._bound(parent.obj):
            raise parent_port_in_use(port_id)
        return parent

    def _subports(
        self, ctx: RequestContext, trunk_id: str, parent: dict[str, Any], subs: list[dict[str, Any]]
    ) -> list[tuple[Stored, dict[str, Any]]]:
        """Neutron's SubPortsValidator: each subport checked and resolved (inherit), with
        the port it names."""
        parent_mtu = self._network(parent).get("mtu")
        out = []
        for sub in subs:
            port_id = str(sub["port_id"])
            if port_id == parent["id"]:
                raise parent_port_in_use(port_id)
            stored = self._port(ctx, port_id)
            net = self._network(stored.obj)
            mtu = net.get("mtu")
            if parent_mtu and mtu and mtu > parent_mtu:
                raise conflict(
                    "SubPortMtuGreaterThanTrunkPortMtu",
                    f"MTU {mtu} of subport {port_id} cannot be greater than MTU {parent_mtu} "
                    f"of trunk {trunk_id}.",
                )
            seg_type = sub.get("segmentation_type")
            seg_id: Any = sub.get("segmentation_id")
            if seg_type == INHERIT:
                seg_type = net.get("provider:network_type")
                seg_id = net.get("provider:segmentation_id")
            if seg_type is None or seg_id is None:
                raise InvalidInput(
                    f"Invalid subport details '{sub}': missing segmentation information. "
                    "Must specify both segmentation_id and segmentation_type"
                )
            if isinstance(seg_id, bool):
                seg_id = str(seg_id)
            try:
                seg_id = int(seg_id)
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"Invalid subport details: segmentation_id '{seg_id}' is not an integer"
                ) from None
            if seg_type not in SEGMENTATION_TYPES:
                raise InvalidInput(f"Unknown segmentation_type '{seg_type}'")
            if not MIN_VLAN <= seg_id <= MAX_VLAN:
                raise InvalidInput(f"Segmentation ID '{seg_id}' is not in range")
            if stored.obj.get("_subport"):
                raise trunk_port_in_use(port_id)
            if stored.obj.get("_trunk"):
                raise parent_port_in_use(port_id)
            if stored.obj.get("device_id"):
                raise conflict(
                    "PortInUse",
                    f"Unable to complete operation on port {port_id} for network "
                    f"{stored.obj['network_id']}. Port already has an attached device "
                    f"{stored.obj['device_id']}.",
                )
            resolved = {
                "port_id": port_id,
                "segmentation_type": seg_type,
                "segmentation_id": seg_id,
            }
            out.append((stored, resolved))
        return out

    def _attach(
        self,
        txn: Txn,
        trunk_id: str,
        parent: dict[str, Any],
        subs: list[tuple[Stored, dict[str, Any]]],
    ) -> None:
        for stored, sub in subs:
            seg_type, seg_id = sub["segmentation_type"], sub["segmentation_id"]
            txn.claim(
                uniq_key("trunk_seg", trunk_id, seg_type, seg_id),
                trunk_id,
                duplicate_subport(seg_type, seg_id, trunk_id),
            )
            txn.claim(uniq_key("trunk_port", stored.obj["id"]), trunk_id, None)
            stored.obj["_subport"] = {
                "trunk_id": trunk_id,
                "parent_id": parent["id"],
                "vlan": seg_id,
            }
            stored.obj["device_owner"] = SUBPORT_OWNER
            touch(stored.obj)
            txn.update(stored)

    @staticmethod
    def _parent_record(trunk: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": trunk["id"],
            "subports": [[s["port_id"], s["segmentation_id"]] for s in trunk["sub_ports"]],
        }

    # ---- create ---------------------------------------------------------------------------
    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        attrs["sub_ports"] = check_subports_shape(attrs.get("sub_ports") or [])

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        parent = self._check_parent(ctx, obj["port_id"])
        subs = self._subports(ctx, obj["id"], parent.obj, obj["sub_ports"])
        obj["sub_ports"] = [s for _, s in subs]
        obj["status"] = "DOWN"
        txn.claim(uniq_key("trunk_port", parent.obj["id"]), obj["id"], None)
        self._attach(txn, obj["id"], parent.obj, subs)
        parent.obj["_trunk"] = self._parent_record(obj)
        touch(parent.obj)
        txn.update(parent)
        txn.create(self.defn.kind, obj)
        return obj

    # ---- update ---------------------------------------------------------------------------
    # (name, description and admin_state_up: the generic update)

    # ---- subports -------------------------------------------------------------------------
    def extra_routes(self) -> list[Route]:
        item = f"/v2.0/{self.defn.path}/{{id}}"
        body = {
            "type": "object",
            "required": ["sub_ports"],
            "properties": {"sub_ports": {"type": "array", "items": {"type": "object"}}},
        }
        out = openapi.object_schema(self.defn)  # (Neutron answers the bare trunk)
        subs = {"type": "object", "properties": {"sub_ports": {"type": "array"}}}
        return [
            Route(f"{item}/add_subports", "PUT", self.add_subports, body, response=out),
            Route(f"{item}/remove_subports", "PUT", self.remove_subports, body, response=out),
            Route(f"{item}/get_subports", "GET", self.get_subports, None, response=subs),
        ]

    def get_subports(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        stored = self.load(ctx, params["id"])
        self.authorize(ctx, "get_subports", stored.obj)
        return {"sub_ports": stored.obj.get("sub_ports") or []}, 200

    @staticmethod
    def _sub_ports_body(body: Any) -> Any:
        if not isinstance(body, dict) or "sub_ports" not in body:
            raise BadRequest('Invalid body: expected {"sub_ports": [...]}')
        unknown = sorted(set(body) - {"sub_ports"})
        if unknown:
            raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        return body["sub_ports"]

    def add_subports(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        requested = check_subports_shape(self._sub_ports_body(body))
        id_ = params["id"]

        def attempt() -> dict[str, Any]:
            stored = self.load_for_write(ctx, id_, "add_subports")
            trunk = stored.obj
            if not trunk.get("admin_state_up", True):
                raise trunk_disabled(id_)
            parent = self.repo.get("ports", trunk["port_id"])
            if parent is None:
                raise not_found("port", trunk["port_id"])
            subs = self._subports(ctx, id_, parent.obj, requested)
            txn = self.repo.txn()
            self._attach(txn, id_, parent.obj, subs)
            trunk["sub_ports"] = [*(trunk.get("sub_ports") or []), *(s for _, s in subs)]
            parent.obj["_trunk"] = self._parent_record(trunk)
            touch(parent.obj)
            txn.update(parent)
            touch(trunk)
            txn.update(stored)
            txn.commit()
            return trunk

        obj = with_retries(attempt)
        self.extend(ctx, [obj])
        return self.show(ctx, obj), 200  # the trunk itself, unwrapped, as Neutron answers

    def remove_subports(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        requested = self._sub_ports_body(body)
        if not isinstance(requested, list) or not all(
            isinstance(s, dict) and isinstance(s.get("port_id"), str) for s in requested
        ):
            raise InvalidInput(f"Invalid data format for subports: '{requested}'")
        ids = list(dict.fromkeys(str(s["port_id"]) for s in requested))
        id_ = params["id"]

        def attempt() -> dict[str, Any]:
            stored = self.load_for_write(ctx, id_, "remove_subports")
            trunk = stored.obj
            if not trunk.get("admin_state_up", True):
                raise trunk_disabled(id_)
            current = {str(s["port_id"]): s for s in trunk.get("sub_ports") or []}
            for port_id in ids:
                if port_id not in current:
                    raise NotFound(
                        f"SubPort {port_id} on trunk {id_} could not be found.",
                        type="SubPortNotFound",
                    )
            txn = self.repo.txn()
            for port_id in ids:
                self.detach_ops(txn, trunk, port_id)
            parent = self.repo.get("ports", trunk["port_id"])
            if parent is not None:
                parent.obj["_trunk"] = self._parent_record(trunk)
                touch(parent.obj)
                txn.update(parent)
            touch(trunk)
            txn.update(stored)
            txn.commit()
            return trunk

        obj = with_retries(attempt)
        self.extend(ctx, [obj])
        return self.show(ctx, obj), 200  # the trunk itself, unwrapped, as Neutron answers

    def detach_ops(
        self, txn: Txn, trunk: dict[str, Any], port_id: str, *, port_deleted: bool = False
    ) -> None:
        """Take one subport out of TRUNK (its record, claims, and the port unless it is
        being deleted in the same transaction); the caller writes the trunk and parent."""
        sub = next(s for s in trunk["sub_ports"] if s["port_id"] == port_id)
        trunk["sub_ports"] = [s for s in trunk["sub_ports"] if s["port_id"] != port_id]
        txn.release(
            uniq_key("trunk_seg", trunk["id"], sub["segmentation_type"], sub["segmentation_id"])
        )
        txn.release(uniq_key("trunk_port", port_id))
        if port_deleted:
            return
        stored = self.repo.get("ports", port_id)
        if stored is not None:
            stored.obj.pop("_subport", None)
            if stored.obj.get("device_owner") == SUBPORT_OWNER:
                stored.obj["device_owner"] = ""
            touch(stored.obj)
            txn.update(stored)

    def subport_deleted_ops(self, txn: Txn, port: dict[str, Any]) -> None:
        """A subport deleted with force (or by a cascade): out of its trunk in the port
        delete's own transaction."""
        trunk_id = str(port["_subport"]["trunk_id"])
        stored = _as_written(txn, self.repo.get(self.defn.kind, trunk_id))
        if stored is None:
            return
        trunk = stored.obj
        if not any(s["port_id"] == port["id"] for s in trunk.get("sub_ports") or []):
            return
        self.detach_ops(txn, trunk, str(port["id"]), port_deleted=True)
        parent = _as_written(txn, self.repo.get("ports", trunk["port_id"]))
        if parent is not None:
            parent.obj["_trunk"] = self._parent_record(trunk)
            touch(parent.obj)
            txn.update(parent)
        touch(trunk)
        txn.update(stored)

    # ---- delete ---------------------------------------------------------------------------
    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        trunk = stored.obj
        if not trunk.get("admin_state_up", True):
            raise trunk_disabled(trunk["id"])
        parent = self.repo.get("ports", trunk["port_id"])
        if parent is not None and self._bound(parent.obj):
            raise conflict("TrunkInUse", f"Trunk {trunk['id']} is currently in use.")
        for sub in list(trunk.get("sub_ports") or []):
            self.detach_ops(txn, trunk, str(sub["port_id"]))
        if parent is not None:
            parent.obj.pop("_trunk", None)
            touch(parent.obj)
            txn.update(parent)
        txn.release(uniq_key("trunk_port", trunk["port_id"]))
        txn.delete(self.defn.kind, stored)


def _as_written(txn: Txn, stored: Stored | None) -> Stored | None:
    """STORED as TXN already writes it (a cascade deleting two subports of one trunk in
    one transaction updates the trunk and its parent twice: the second builds on the
    first), guarded by the revision it was read at."""
    if stored is None or stored.key not in txn.puts:
        return stored
    return Stored(orjson.loads(txn.puts[stored.key]), stored.key, stored.mod_revision)


def trunk_details(repo_get: Any, port: dict[str, Any]) -> dict[str, Any] | None:
    """`trunk-details` of a parent port: the trunk and its subports with their MACs."""
    record = port.get("_trunk")
    if not record:
        return None
    trunk = repo_get("trunks", str(record["id"]))
    if trunk is None:
        return None
    subs = []
    for sub in trunk.obj.get("sub_ports") or []:
        entry = dict(sub)
        sub_port = repo_get("ports", str(sub["port_id"]))
        if sub_port is not None:
            entry["mac_address"] = sub_port.obj.get("mac_address")
        subs.append(entry)
    return {"trunk_id": trunk.obj["id"], "sub_ports": subs}


RESOURCES: list[type[Resource]] = [Trunks]
