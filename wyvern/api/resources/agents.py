"""Agents: the chassis registered in the store, shown in Neutron's agent shape; and the
availability zones of the chassis.

Each wyvern agent puts /wyvern/chassis/<name> with a store lease it keeps alive, and a
registry record /wyvern/agents/<name> without one (wyvern/controller/chassis.py). An
agent is listed while its registry record exists (Neutron keeps dead agents too), alive
while its chassis record does: the store deletes that when the lease runs out. Neutron's
policy makes agents admin-only (`get_agent`): other callers get an empty list, and 403
for one.

Admins may disable an agent (admin_state_up: its chassis then hosts no router gateway)
and delete one (update_agent, delete_agent).

`GET /v2.0/routers/<id>/l3-agents` (what `openstack network agent list --router R
[--long]` asks) lists the chassis that may host the router's gateway: enabled gateway
chassis (gateway_priority > 0) of the router's hinted zones mapping its external
network's physnet, best first. The one whose
agent reports the gateway's flows installed (/wyvern/status/gateways/<router>, written by
wyvern.controller.bindings.GatewayStatusWriter) has `ha_state` "active", the others
"standby", as Neutron shows an HA router. Neutron's extension (`l3_agent_scheduler`) is
not advertised: its add/remove calls schedule by hand, and Wyvern schedules by priority
(they are refused with a 400 that says so).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from wyvern.api.attributes import (
    Attr,
    Description,
    ResourceDef,
    openapi_schema,
    validate_update,
)
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    NotFound,
    PolicyNotAuthorized,
    RetryRequest,
    bad_request,
    not_found,
)
from wyvern.api.repo import with_retries
from wyvern.api.resource import Resource, Route
from wyvern.api.types import Bool
from wyvern.model.keys import (
    AGENTS_PREFIX,
    CHASSIS_PREFIX,
    STATUS_PORTS,
    chassis_key,
    gateway_status_key,
    registry_key,
    status_prefix,
)
from wyvern.nb.store import Compare, Delete, KeyValue, Put, Store, StoreError

AGENT_TYPE = "Wyvern agent"
DEFAULT_ZONE = "nova"  # (Neutron's default availability zone)
BINARY = "wyvern-agent"
# Stable agent ids: derived from the chassis name (a re-registered chassis keeps its id).
_NAMESPACE = uuid.UUID("6f2b9c1e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")
FILTERS = (
    "id", "agent_type", "binary", "host", "topic", "alive", "admin_state_up", "availability_zone",
)  # fmt: skip

DEFN = ResourceDef(
    name="agent",
    collection="agents",
    path="",  # custom routes
    kind="chassis",
    owned=False,
    attrs=(
        *(Attr(a) for a in FILTERS if a != "admin_state_up"),
        Attr("admin_state_up", Bool, put=True),
        Attr("description", Description | None, put=True),
    ),
)
ZONE_FILTERS = ("name", "resource", "state")
ZONES_DEFN = ResourceDef(
    name="availability_zone",
    collection="availability_zones",
    path="",  # custom, read-only route
    kind="chassis",
    owned=False,
    attrs=tuple(Attr(a) for a in ZONE_FILTERS),
)


def agent_id(chassis_name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, chassis_name))


def registry(store: Store) -> list[tuple[dict[str, Any], bool]]:
    """Every registered chassis record, and whether it is alive (its chassis record, with
    its lease, exists)."""
    live = {kv.key[len(CHASSIS_PREFIX) :] for kv in store.list(CHASSIS_PREFIX, True).items}
    out = []
    for kv in store.list(AGENTS_PREFIX).items:
        try:
            chassis = orjson.loads(kv.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chassis, dict) and chassis.get("name"):
            out.append((chassis, str(chassis["name"]) in live))
    return out


def zone_of(chassis: dict[str, Any]) -> str:
    return str(chassis.get("availability_zone") or DEFAULT_ZONE)


def enabled(chassis: dict[str, Any]) -> bool:
    return chassis.get("admin_state_up") is not False


def agent_view(chassis: dict[str, Any], alive: bool) -> dict[str, Any]:
    name = str(chassis.get("name"))
    return {
        "id": agent_id(name),
        "agent_type": AGENT_TYPE,
        "binary": BINARY,
        "host": chassis.get("hostname") or name,
        "availability_zone": zone_of(chassis),
        "alive": alive,
        "admin_state_up": enabled(chassis),
        "topic": "N/A",
        "description": chassis.get("description"),
        "resources_synced": None,
        "configurations": {
            "chassis_name": name,
            "tunnel_ip": chassis.get("tunnel_ip"),
            "tunnel_types": list(chassis.get("encaps") or []),
            "bridge_mappings": dict(chassis.get("bridge_mappings") or {}),
            "integration_bridge": chassis.get("bridge"),
            "gateway_priority": int(chassis.get("gateway_priority") or 0),
        },
        "heartbeat_timestamp": chassis.get("heartbeat_timestamp"),
        "created_at": chassis.get("created_at"),
        "started_at": chassis.get("started_at"),
    }


def _matches(agent: dict[str, Any], params: dict[str, str]) -> bool:
    for name in FILTERS:
        want = params.get(f"query:{name}")
        if want is None:
            continue
        have = agent[name]
        text = str(have).lower() if isinstance(have, bool) else str(have)
        if text != (want.lower() if isinstance(have, bool) else want):
            return False
    return True


def _envelope(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: schema}}


class Agents(Resource):
    defn = DEFN

    def extra_routes(self) -> list[Route]:
        agent = {"type": "object"}
        filters = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in FILTERS
        ]
        return [
            Route(
                "/v2.0/agents",
                "GET",
                self.list_agents,
                response=_envelope("agents", {"type": "array", "items": agent}),
                query=filters,
            ),
            Route(
                "/v2.0/agents/{id}",
                "GET",
                self.show_agent,
                response=_envelope("agent", agent),
                path_params={"id": {"type": "string"}},  # an id or a chassis name
            ),
            Route(
                "/v2.0/agents/{id}",
                "PUT",
                self.update_agent,
                openapi_schema(self.defn, "put"),
                response=_envelope("agent", agent),
                path_params={"id": {"type": "string"}},
            ),
            Route(
                "/v2.0/agents/{id}",
                "DELETE",
                self.delete_agent,
                status=204,
                path_params={"id": {"type": "string"}},
            ),
            Route(
                "/v2.0/routers/{id}/l3-agents",
                "GET",
                self.router_l3_agents,
                response=_envelope("agents", {"type": "array", "items": agent}),
                path_params={"id": {"type": "string"}},
            ),
            Route(
                "/v2.0/agents/{id}/l3-routers",
                "POST",
                self.schedule_router,
                {"type": "object"},
                path_params={"id": {"type": "string"}},
            ),
            Route(
                "/v2.0/agents/{id}/l3-routers/{router_id}",
                "DELETE",
                self.schedule_router,
                path_params={"id": {"type": "string"}, "router_id": {"type": "string"}},
            ),
        ]

    def agents(self) -> list[dict[str, Any]]:
        return [agent_view(chassis, alive) for chassis, alive in self._registry()]

    def _registry(self) -> list[tuple[dict[str, Any], bool]]:
        return registry(self.repo.store)

    def router_l3_agents(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not self.allowed(ctx, "get_l3-agents", {}):
            raise PolicyNotAuthorized("get_l3-agents")
        router = self.repo.get("routers", params["id"])
        if router is None:
            raise not_found("router", params["id"])
        gw = router.obj.get("external_gateway_info") or {}
        net = self.repo.get("networks", str(gw.get("network_id") or ""))
        physnet = net.obj.get("provider:physical_network") if net is not None else None
        if not physnet:
            return {"agents": []}, 200
        kv = self.repo.store.get(gateway_status_key(params["id"]))
        active = None
        if kv is not None:
            try:
                active = orjson.loads(kv.value).get("chassis")
            except (orjson.JSONDecodeError, AttributeError):
                active = None
        hints = set(router.obj.get("availability_zone_hints") or ())
        ranked = sorted(
            (
                (-int(ch.get("gateway_priority") or 0), str(ch["name"]), ch, alive)
                for ch, alive in self._registry()
                if int(ch.get("gateway_priority") or 0) > 0
                and physnet in dict(ch.get("bridge_mappings") or {})
                and enabled(ch)
                and (not hints or zone_of(ch) in hints)
            ),
            key=lambda r: (r[1] != active, r[0], r[1]),
        )
        agents = []
        for _, name, ch, alive in ranked:
            view = agent_view(ch, alive)
            view["ha_state"] = "active" if name == active else "standby"
            agents.append(view)
        return {"agents": agents}, 200

    def schedule_router(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not self.allowed(ctx, "create_l3-router", {}):
            raise PolicyNotAuthorized("create_l3-router")
        raise bad_request(
            "RouterSchedulingNotSupported",
            "Wyvern schedules router gateways by each chassis's gateway_priority "
            "(the agent option gateway_priority); routers cannot be added to or removed "
            "from an agent by hand.",
        )

    def list_agents(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not self.allowed(ctx, "get_agent", {}):
            return {"agents": []}, 200
        return {"agents": [a for a in self.agents() if _matches(a, params)]}, 200

    def show_agent(self, ctx: RequestContext, params: dict[str, str], body: Any) -> tuple[Any, int]:
        if not self.allowed(ctx, "get_agent", {}):
            raise PolicyNotAuthorized("get_agent")
        id_ = params["id"]
        for agent in self.agents():
            if id_ in (agent["id"], agent["configurations"]["chassis_name"]):
                return {"agent": agent}, 200
        raise not_found("agent", id_)

    def _find(self, id_: str) -> tuple[str, KeyValue]:
        """The chassis name and registry record of agent ID_ (an id or a chassis name)."""
        for chassis, _ in self._registry():
            name = str(chassis["name"])
            if id_ in (agent_id(name), name):
                kv = self.repo.store.get(registry_key(name))
                if kv is not None:
                    return name, kv
        raise not_found("agent", id_)

    def update_agent(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        """admin_state_up and description (Neutron's writable agent attributes), into the
        registry record and, while the agent is alive, its chassis record (same lease):
        that is what other agents follow (wyvern.apps.gateway skips a disabled chassis).
        The agent keeps them when it re-registers (wyvern.controller.chassis)."""
        if not ctx.is_admin:
            raise PolicyNotAuthorized("update_agent")
        inner = body.get("agent") if isinstance(body, dict) else None
        if not isinstance(inner, dict) or len(body) != 1:
            raise BadRequest("Unable to find 'agent' in request body")
        changes = validate_update(self.defn, ctx, inner)
        store = self.repo.store

        def attempt() -> dict[str, Any]:
            name, reg = self._find(params["id"])
            live = store.get(chassis_key(name))
            obj = orjson.loads(reg.value)
            obj.update(changes)
            guards = [
                Compare(reg.key, "mod", "==", reg.mod_revision),
                Compare(chassis_key(name), "mod", "==", live.mod_revision if live else 0),
            ]
            puts = [Put(reg.key, orjson.dumps(obj))]
            if live is not None and "admin_state_up" in changes:
                record = orjson.loads(live.value)
                record["admin_state_up"] = changes["admin_state_up"]
                puts.append(Put(live.key, orjson.dumps(record), lease=live.lease))
            try:
                done = store.txn(guards, puts).succeeded
            except StoreError:  # (its lease ran out meanwhile: the record is gone)
                if live is None or store.get(live.key) is not None:
                    raise
                done = False
            if not done:
                raise RetryRequest()
            return agent_view(obj, live is not None)

        return {"agent": with_retries(attempt)}, 200

    def delete_agent(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        """Forget an agent (its registry record), as Neutron deletes any agent: an agent
        still alive registers again within its lease TTL, as a new agent (enabled,
        created then), as Neutron's agent does on its next report."""
        if not ctx.is_admin:
            raise PolicyNotAuthorized("delete_agent")
        store = self.repo.store

        def attempt() -> None:
            _, reg = self._find(params["id"])
            guard = Compare(reg.key, "mod", "==", reg.mod_revision)
            if not store.txn([guard], [], [Delete(reg.key)]).succeeded:
                raise RetryRequest()

        with_retries(attempt)
        return None, 204


def zones(store: Store) -> dict[tuple[str, str], bool]:
    """(zone, resource) -> available, as Neutron lists them from its agents: every
    chassis serves DHCP for its ports (resource "network"), gateway chassis host router
    gateways (resource "router"); a zone is available while one of them is enabled."""
    out: dict[tuple[str, str], bool] = {}
    for chassis, _ in registry(store):
        kinds = ["network"]
        if int(chassis.get("gateway_priority") or 0) > 0:
            kinds.append("router")
        for kind in kinds:
            key = (zone_of(chassis), kind)
            out[key] = out.get(key, False) or enabled(chassis)
    return out


def check_hints(store: Store, resource: str, hints: list[str]) -> None:
    """Neutron's validate_availability_zones: every hint names a zone of that resource."""
    if not hints:
        return
    known = {name for name, kind in zones(store) if kind == resource}
    for hint in hints:
        if hint not in known:
            raise NotFound(
                f"AvailabilityZone {hint} could not be found.", type="AvailabilityZoneNotFound"
            )


def chassis_zones(store: Store) -> dict[str, str]:
    """Chassis name -> its zone, for the registered chassis."""
    return {str(ch["name"]): zone_of(ch) for ch, _ in registry(store)}


def network_zones(store: Store, network_ids: list[str]) -> dict[str, list[str]]:
    """Network id -> the zones it spans: those of the chassis its ports are bound to
    (their binding status keys), which serve its DHCP (distributed, as its dataplane)."""
    if not network_ids:
        return {}
    where = chassis_zones(store)
    prefixes = [status_prefix(n) for n in network_ids] if len(network_ids) == 1 else [STATUS_PORTS]
    found: dict[str, set[str]] = {n: set() for n in network_ids}
    for prefix in prefixes:
        for kv in store.list(prefix).items:
            net = kv.key[len(STATUS_PORTS) :].split("/", 1)[0]
            if net not in found:
                continue
            try:
                chassis = orjson.loads(kv.value).get("chassis")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if chassis in where:
                found[net].add(where[chassis])
    return {n: sorted(z) for n, z in found.items()}


def router_zones(store: Store, router_ids: list[str]) -> dict[str, list[str]]:
    """Router id -> the zone of the chassis that reports hosting its gateway ([]: none)."""
    where = chassis_zones(store) if router_ids else {}
    out: dict[str, list[str]] = {}
    for rid in router_ids:
        kv = store.get(gateway_status_key(rid))
        chassis = None
        if kv is not None:
            try:
                chassis = orjson.loads(kv.value).get("chassis")
            except (orjson.JSONDecodeError, AttributeError):
                chassis = None
        out[rid] = [where[chassis]] if chassis in where else []
    return out


class AvailabilityZones(Resource):
    defn = ZONES_DEFN

    def extra_routes(self) -> list[Route]:
        zone = {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "resource": {"type": "string", "enum": ["network", "router"]},
                "state": {"type": "string", "enum": ["available", "unavailable"]},
            },
        }
        filters = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in ZONE_FILTERS
        ]
        return [
            Route(
                "/v2.0/availability_zones",
                "GET",
                self.list_zones,
                response=_envelope("availability_zones", {"type": "array", "items": zone}),
                query=filters,
            )
        ]

    def list_zones(self, ctx: RequestContext, params: dict[str, str], body: Any) -> tuple[Any, int]:
        listed = [
            {"name": name, "resource": kind, "state": "available" if up else "unavailable"}
            for (name, kind), up in sorted(zones(self.repo.store).items())
        ]
        for key in ZONE_FILTERS:
            want = params.get(f"query:{key}")
            if want is not None:
                listed = [z for z in listed if z[key] == want]
        return {"availability_zones": listed}, 200


RESOURCES: list[type[Resource]] = [Agents, AvailabilityZones]
