"""Who is calling: project and roles, from noauth, a bearer token, or Keystone."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wyvern.api.errors import BadRequest, NotAuthorized, shorten

if TYPE_CHECKING:
    from wyvern.api.keystone import Identity

ROLES = ("admin", "member", "reader")


@dataclass(frozen=True, slots=True)
class RequestContext:
    project_id: str
    roles: frozenset[str]
    user_id: str = ""
    # A sub-resource request's parent id (/floatingips/{floatingip_id}/port_forwardings):
    # the routes put it here so the resource's hooks keep their signatures.
    parent: str = ""
    # Keystone's X-Service-Roles and X-Is-Admin-Project (what Neutron's policies read).
    service_roles: frozenset[str] = frozenset()
    is_admin_project: bool = True

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def owns(self, obj: dict[str, Any]) -> bool:
        return self.is_admin or obj.get("project_id") == self.project_id


def admin_context(project_id: str = "admin") -> RequestContext:
    return RequestContext(project_id, frozenset({"admin", "member", "reader"}))


@dataclass(frozen=True, slots=True)
class TokenEntry:
    project_id: str
    roles: frozenset[str]
    user_id: str


def load_tokens(path: Path) -> dict[str, TokenEntry]:
    """Tokens file (TOML)::

    [tokens.s3cret-admin]
    project_id = "p-admin"
    roles = ["admin"]
    """
    data = tomllib.loads(path.read_text())
    out: dict[str, TokenEntry] = {}
    for token, entry in data.get("tokens", {}).items():
        roles = frozenset(entry.get("roles", ["member"]))
        bad = roles - set(ROLES)
        if bad:
            raise ValueError(f"tokens file {path}: unknown roles {sorted(bad)}")
        # admin implies member implies reader, as in Keystone's implied roles.
        if "admin" in roles:
            roles |= {"member", "reader"}
        if "member" in roles:
            roles |= {"reader"}
        out[token] = TokenEntry(
            str(entry["project_id"]), frozenset(roles), str(entry.get("user_id", token[:8]))
        )
    return out


MAX_PROJECT_ID = 255  # attributes.ProjectId: what objects store and show


class Authenticator:
    def __init__(
        self,
        strategy: str,
        default_project: str,
        tokens: dict[str, TokenEntry] | None = None,
        trust_headers: bool = False,
    ) -> None:
        self.strategy = strategy
        self.default_project = default_project
        self.tokens = tokens or {}
        self.trust_headers = trust_headers

    def context(self, headers: dict[str, str], identity: Identity | None = None) -> RequestContext:
        if self.strategy == "keystone":
            # wyvern.api.keystone.KeystoneAuth validated the token before routing; a
            # request it did not see (none should reach here) is refused.
            if identity is None:
                raise NotAuthorized("Authentication required")
            return RequestContext(
                identity.project_id,
                identity.roles,
                identity.user_id,
                service_roles=identity.service_roles,
                is_admin_project=identity.is_admin_project,
            )
        if self.strategy == "noauth":
            # Admin of the default project. Any X-Auth-Token (openstacksdk sends "notused")
            # is ignored. Only with noauth_trust_headers (development, unsafe), as
            # Neutron's noauth: an X-Project-Id / X-Roles naming who to act as.
            project = headers.get("x-project-id") or headers.get("x-tenant-id")
            if not self.trust_headers:
                if project is not None or "x-roles" in headers:
                    raise BadRequest(
                        "X-Project-Id / X-Roles are honoured only with "
                        "noauth_trust_headers = true (development only, unsafe)"
                    )
                return admin_context(self.default_project)
            if project is not None and len(project) > MAX_PROJECT_ID:  # as a body's is
                raise BadRequest(
                    f"X-Project-Id '{shorten(project)}' is longer than {MAX_PROJECT_ID}"
                )
            if project is not None and "/" in project:  # (attributes.PROJECT_ID_PATTERN)
                raise BadRequest(f"X-Project-Id '{shorten(project)}' contains '/'")
            roles_hdr = headers.get("x-roles")
            if project is None and roles_hdr is None:
                return admin_context(self.default_project)
            roles = frozenset(
                r.strip().lower() for r in (roles_hdr or "admin").split(",") if r.strip()
            )
            if "admin" in roles:
                roles |= {"member", "reader"}
            if "member" in roles:
                roles |= {"reader"}
            return RequestContext(project or self.default_project, roles)
        token = headers.get("x-auth-token")
        if not token:
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
        entry = self.tokens.get(token or "")
        if entry is None:
            raise NotAuthorized("Authentication required" if not token else "Invalid token")
        return RequestContext(entry.project_id, entry.roles, entry.user_id)
