"""Quotas: Neutron's per-project limits, defaults from settings, enforced on create (409)."""

from __future__ import annotations

from typing import Any

import orjson

from wyvern.api.attributes import Attr, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, InvalidInput, PolicyNotAuthorized, not_found
from wyvern.api.repo import with_retries
from wyvern.api.resource import QuotaReader
from wyvern.model.keys import QUOTAS_PREFIX, quota_key
from wyvern.nb.store import Delete, Put

# quota name -> store kind counted for usage
QUOTA_KINDS = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "router": "routers",
    "floatingip": "floatingips",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
}

DEFN = ResourceDef(
    name="quota",
    collection="quotas",
    path="",  # custom routes only
    kind="quotas",
    owned=False,
    attrs=tuple(Attr(q, int, put=True) for q in QUOTA_KINDS),
)


def _key(project: str) -> str:
    return quota_key(project)


class Quotas(QuotaReader):
    defn = DEFN

    def defaults(self) -> dict[str, int]:
        q = self.settings.quotas
        return {name: int(getattr(q, name)) for name in QUOTA_KINDS}

    def overrides(self, project: str) -> dict[str, int]:
        kv = self.repo.store.get(_key(project))
        return dict(orjson.loads(kv.value)) if kv else {}

    def effective(self, project: str) -> dict[str, int]:
        out = self.defaults()
        out.update(self.overrides(project))
        return out

    def limit(self, project: str, resource: str) -> int:
        return self.effective(project).get(resource, -1)

    def _check_read(self, ctx: RequestContext, project: str) -> None:
        if not ctx.is_admin and project != ctx.project_id:
            raise not_found("quota", project)

    def extra_routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("/v2.0/quotas", "GET", self.list_quotas),
            ("/v2.0/quotas/{project}", "GET", self.show_quota),
            ("/v2.0/quotas/{project}", "PUT", self.update_quota),
            ("/v2.0/quotas/{project}", "DELETE", self.reset_quota),
            ("/v2.0/quotas/{project}/default", "GET", self.show_default),
            ("/v2.0/quotas/{project}/details", "GET", self.show_details),
        ]

    def list_quotas(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not ctx.is_admin:
            raise PolicyNotAuthorized("get_quota")
        out = []
        for kv in self.repo.store.list(QUOTAS_PREFIX).items:
            project = kv.key.rsplit("/", 1)[1]
            q = self.effective(project)
            q["project_id"] = q["tenant_id"] = project  # type: ignore[assignment]
            out.append(q)
        return {"quotas": out}, 200

    def show_quota(self, ctx: RequestContext, params: dict[str, str], body: Any) -> tuple[Any, int]:
        project = params["project"]
        self._check_read(ctx, project)
        return {"quota": self.effective(project)}, 200

    def show_default(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        self._check_read(ctx, params["project"])
        return {"quota": self.defaults()}, 200

    def show_details(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        project = params["project"]
        self._check_read(ctx, project)
        limits = self.effective(project)
        details = {
            name: {
                "limit": limits[name],
                "used": self.repo.count_owned(project, kind),
                "reserved": 0,
            }
            for name, kind in QUOTA_KINDS.items()
        }
        return {"quota": details}, 200

    def update_quota(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not ctx.is_admin:
            raise PolicyNotAuthorized("update_quota")
        project = params["project"]
        if not isinstance(body, dict) or not isinstance(body.get("quota"), dict) or len(body) != 1:
            raise BadRequest("Resource body required: expected a single 'quota' object")
        changes: dict[str, int] = {}
        for name, value in body["quota"].items():
            if name not in QUOTA_KINDS:
                raise BadRequest(f"Unrecognized attribute(s) '{name}'")
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise InvalidInput(f"'{value}' is not an integer")
            try:
                n = int(value)
            except ValueError:
                raise InvalidInput(f"'{value}' is not an integer") from None
            if n < -1:
                raise InvalidInput(f"'{n}' should be greater than or equal to -1")
            changes[name] = n

        def attempt() -> dict[str, int]:
            from wyvern.nb.store import unchanged

            kv = self.repo.store.get(_key(project))
            current = dict(orjson.loads(kv.value)) if kv else {}
            current.update(changes)
            guard = unchanged(_key(project), kv.mod_revision if kv else 0)
            result = self.repo.store.txn([guard], [Put(_key(project), orjson.dumps(current))])
            if not result.succeeded:
                from wyvern.api.errors import RetryRequest

                raise RetryRequest()
            return current

        with_retries(attempt)
        return {"quota": self.effective(project)}, 200

    def reset_quota(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not ctx.is_admin:
            raise PolicyNotAuthorized("delete_quota")
        self.repo.store.txn([], [], [Delete(_key(params["project"]))])
        return None, 204


RESOURCES = [Quotas]
