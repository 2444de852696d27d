"""`/v2.0/service-providers` (Neutron's service-type extension): the drivers behind the
services we serve, read-only. Wyvern itself is the one L3 provider (routers are always
distributed and ours); the roadmap services are not listed until they exist."""

from __future__ import annotations

from typing import Any

from wyvern.api.attributes import Attr, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, PolicyNotAuthorized
from wyvern.api.resource import Resource, Route

FIELDS = ("service_type", "name", "default")
PROVIDERS: tuple[dict[str, Any], ...] = (
    {"service_type": "L3_ROUTER_NAT", "name": "wyvern", "default": True},
)

DEFN = ResourceDef(
    name="service_provider",
    collection="service_providers",
    path="",  # custom, read-only route
    kind="service_providers",
    owned=False,
    attrs=tuple(Attr(a) for a in FIELDS),
)


class ServiceProviders(Resource):
    defn = DEFN

    def extra_routes(self) -> list[Route]:
        item = {
            "type": "object",
            "properties": {
                "service_type": {"type": "string"},
                "name": {"type": "string"},
                "default": {"type": "boolean"},
            },
        }
        query = [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
            for n in (*FIELDS, "fields")
        ]
        listing = {
            "type": "object",
            "required": ["service_providers"],
            "properties": {"service_providers": {"type": "array", "items": item}},
        }
        return [
            Route(
                "/v2.0/service-providers", "GET", self.list_providers, response=listing, query=query
            )
        ]

    def list_providers(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not self.allowed(ctx, "get_service_provider", {}):
            raise PolicyNotAuthorized("get_service_provider")
        listed = [dict(p) for p in PROVIDERS]
        for key, value in params.items():
            if not key.startswith("query:"):
                continue
            name = key.removeprefix("query:")
            if name == "fields":
                continue
            if name not in FIELDS:
                raise BadRequest(f"[{name}] is invalid attribute for filtering")
            listed = [p for p in listed if str(p[name]).lower() == value.lower()]
        fields = params.get("query:fields")
        if fields:
            listed = [{k: v for k, v in p.items() if k == fields} for p in listed]
        return {"service_providers": listed}, 200


RESOURCES: list[type[Resource]] = [ServiceProviders]
