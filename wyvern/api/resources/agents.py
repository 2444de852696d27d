"""Agents: the chassis registered in the store, shown in Neutron's agent shape (read-only).

Each wyvern agent puts /wyvern/chassis/<name> with a store lease it keeps alive, and a
registry record /wyvern/agents/<name> without one (wyvern/controller/chassis.py). An
agent is listed while its registry record exists (Neutron keeps dead agents too), alive
while its chassis record does: the store deletes that when the lease runs out. Neutron's
policy makes agents admin-only (`get_agent`): other callers get an empty list, and 403
for one.

`GET /v2.0/routers/<id>/l3-agents` (what `openstack network agent list --router R
[--long]` asks) lists the chassis that may host the router's gateway: gateway chassis
(gateway_priority > 0) mapping its external network's physnet, best first. The one whose
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

from wyvern.api.attributes import Attr, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import PolicyNotAuthorized, bad_request, not_found
from wyvern.api.resource import Resource, Route
from wyvern.model.keys import AGENTS_PREFIX, CHASSIS_PREFIX, gateway_status_key

AGENT_TYPE = "Wyvern agent"
BINARY = "wyvern-agent"
# Stable agent ids: derived from the chassis name (a re-registered chassis keeps its id).
_NAMESPACE = uuid.UUID("6f2b9c1e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")
FILTERS = ("id", "agent_type", "binary", "host", "topic", "alive", "admin_state_up")

DEFN = ResourceDef(
    name="agent",
    collection="agents",
    path="",  # custom, read-only routes
    kind="chassis",
    owned=False,
    attrs=tuple(Attr(a) for a in FILTERS),
)


def agent_id(chassis_name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, chassis_name))


def agent_view(chassis: dict[str, Any], alive: bool) -> dict[str, Any]:
    name = str(chassis.get("name"))
    return {
        "id": agent_id(name),
        "agent_type": AGENT_TYPE,
        "binary": BINARY,
        "host": chassis.get("hostname") or name,
        "availability_zone": None,
        "alive": alive,
        "admin_state_up": True,
        "topic": "N/A",
        "description": None,
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
        """Every registered chassis record, and whether it is alive."""
        store = self.repo.store
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
        ranked = sorted(
            (
                (-int(ch.get("gateway_priority") or 0), str(ch["name"]), ch, alive)
                for ch, alive in self._registry()
                if int(ch.get("gateway_priority") or 0) > 0
                and physnet in dict(ch.get("bridge_mappings") or {})
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


RESOURCES: list[type[Resource]] = [Agents]
