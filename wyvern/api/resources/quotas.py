"""Quotas: Neutron's per-project limits, defaults from settings, enforced on create (409)."""

from __future__ import annotations

from typing import Any

import orjson

from wyvern.api.attributes import Attr, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, InvalidInput, PolicyNotAuthorized, not_found
from wyvern.api.repo import with_retries
from wyvern.api.resource import QuotaReader, Route
from wyvern.model.keys import QUOTAS_PREFIX, quota_key
from wyvern.nb.store import Delete, Put

# quota name -> store kind counted for usage
QUOTA_KINDS = {
    "network": "networks",
    "subnet": "subnets",
    "subnetpool": "subnetpools",
    "port": "ports",
    "router": "routers",
    "floatingip": "floatingips",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
    "rbac_policy": "rbac_policies",
}

DEFN = ResourceDef(
    name="quota",
    collection="quotas",
    path="",  # custom routes only
    kind="quotas",
    owned=False,
    attrs=tuple(Attr(q, int, put=True) for q in QUOTA_KINDS),
)


STR: dict[str, Any] = {"type": "string"}
NONNEG: dict[str, Any] = {"type": "integer", "minimum": 0}
MAX_LIMIT = 2**31 - 1  # Neutron's DB_INTEGER_MAX_VALUE


def _envelope(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: schema}}


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
        # One's own quotas are always readable (as Neutron: get_quota is checked only
        # for another project's); others' without get_quota look absent.
        if project != ctx.project_id and not self.allowed(
            ctx, "get_quota", {"project_id": project}
        ):
            raise not_found("quota", project)

    def extra_routes(self) -> list[Route]:
        limit = {"type": "integer", "minimum": -1, "maximum": MAX_LIMIT}  # -1: unlimited
        props: dict[str, Any] = dict.fromkeys(QUOTA_KINDS, limit)
        limits = {"type": "object", "properties": props}
        quota = _envelope("quota", {**limits, "required": list(QUOTA_KINDS)})
        listed = {"type": "object", "properties": {**props, "project_id": STR, "tenant_id": STR}}
        usage = {
            "type": "object",
            "required": ["limit", "used", "reserved"],
            "properties": {"limit": limit, "used": NONNEG, "reserved": NONNEG},
        }
        details = {"type": "object", "properties": dict.fromkeys(QUOTA_KINDS, usage)}
        change_props: dict[str, Any] = {**props, "force": {}, "check_limit": {}}
        change = _envelope(
            "quota", {"type": "object", "properties": change_props, "additionalProperties": False}
        )
        project = {"project": STR}
        item = "/v2.0/quotas/{project}"
        return [
            Route(
                "/v2.0/quotas",
                "GET",
                self.list_quotas,
                response=_envelope("quotas", {"type": "array", "items": listed}),
            ),
            Route(item, "GET", self.show_quota, response=quota, path_params=project),
            Route(item, "PUT", self.update_quota, change, response=quota, path_params=project),
            Route(item, "DELETE", self.reset_quota, status=204, path_params=project),
            Route(f"{item}/default", "GET", self.show_default, response=quota, path_params=project),
            Route(
                f"{item}/details",
                "GET",
                self.show_details,
                response=_envelope("quota", details),
                path_params=project,
            ),
        ]

    def list_quotas(
        self, ctx: RequestContext, params: dict[str, str], body: Any
    ) -> tuple[Any, int]:
        if not self.allowed(ctx, "get_quota", {"project_id": params.get("project", "")}):
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
        if not self.allowed(ctx, "update_quota", {"project_id": params.get("project", "")}):
            raise PolicyNotAuthorized("update_quota")
        project = params["project"]
        if not isinstance(body, dict) or not isinstance(body.get("quota"), dict) or len(body) != 1:
            raise BadRequest("Resource body required: expected a single 'quota' object")
        requested = dict(body["quota"])
        # quota-check-limit(-default): a limit below what is used is refused unless
        # `force` is exactly true; `check_limit` is Neutron's older spelling of the default.
        force = requested.pop("force", None)
        requested.pop("check_limit", None)
        changes: dict[str, int] = {}
        for name, value in requested.items():
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
            if n > MAX_LIMIT:  # neutron-lib's range: what its database column holds
                raise InvalidInput(f"'{n}' is too large - must be no larger than '{MAX_LIMIT}'")
            changes[name] = n
        if force is not True:
            for name, n in changes.items():
                used = self.repo.count_owned(project, QUOTA_KINDS[name])
                if n != -1 and used > n:
                    raise BadRequest(
                        f"Quota limit {n} for {name} must be greater than or equal to "
                        f"already used {used}"
                    )

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
        if not self.allowed(ctx, "delete_quota", {"project_id": params.get("project", "")}):
            raise PolicyNotAuthorized("delete_quota")
        self.repo.store.txn([], [], [Delete(_key(params["project"]))])
        return None, 204


RESOURCES = [Quotas]
