"""A small stand-in for Nova's compute API, as neutron-server's Nova notifier meets it:
`POST /v2.1/os-server-external-events`, and nothing else.

It checks what Nova checks: the caller's X-Auth-Token is validated against the real
Keystone (else 401), and its roles must include admin or service (Nova's policy for
`os_compute_api:os-server-external-events:create`, else 403); the body must match Nova's
schema (`events`, each with a uuid `server_uuid`, a known `name`, an optional `status` of
completed/failed/in-progress and a `tag` of at most 255 characters, nothing else: else
400). It answers as Nova does: 200 with each event's `code` 200 and status completed; a
server it does not know gets code 404 (207 if some were known, 404 if none).

Every accepted request is recorded (`requests`: events, roles, microversion headers).
`fail_with = 503` makes it answer that until reset (Nova down, as a load balancer says).

    with NovaApi(token_roles=validator) as nova:
        register_compute(keystone, nova.endpoint)    # the catalog's `compute` service
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.keystone import KeystoneServer

EVENT_NAMES = ("network-changed", "network-vif-plugged", "network-vif-unplugged",
               "network-vif-deleted")  # fmt: skip
EVENT_STATUSES = ("failed", "completed", "in-progress")
POLICY_ROLES = frozenset({"admin", "service"})

# A token's roles, or None when Keystone does not accept it.
TokenRoles = Callable[[str], frozenset[str] | None]


@dataclass
class Received:
    events: list[dict[str, Any]]
    roles: frozenset[str]
    microversion: str | None
    openstack_api_version: str | None
    token: str


@dataclass
class NovaState:
    token_roles: TokenRoles
    servers: set[str] | None = None  # None: every server exists
    fail_with: int | None = None
    requests: list[Received] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [ev for r in self.requests for ev in r.events]


def _schema_error(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) != {"events"}:
        return "body must be {'events': [...]}"
    events = body["events"]
    if not isinstance(events, list) or not events:
        return "events must be a non-empty list"
    for ev in events:
        if not isinstance(ev, dict) or not {"server_uuid", "name"} <= set(ev):
            return f"event needs server_uuid and name: {ev}"
        if set(ev) - {"server_uuid", "name", "status", "tag"}:
            return f"unexpected property in {ev}"
        try:
            uuid.UUID(str(ev["server_uuid"]))
        except ValueError:
            return f"server_uuid is not a uuid: {ev}"
        if ev["name"] not in EVENT_NAMES:
            return f"unknown event name: {ev}"
        if "status" in ev and ev["status"] not in EVENT_STATUSES:
            return f"unknown status: {ev}"
        if "tag" in ev and (not isinstance(ev["tag"], str) or len(ev["tag"]) > 255):
            return f"bad tag: {ev}"
    return None


def _handler(state: NovaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if state.fail_with is not None:
                return self._refuse(state.fail_with, "Nova is down")
            if self.path.split("?")[0].rstrip("/") != "/v2.1/os-server-external-events":
                return self._refuse(404, f"no route {self.path}")
            roles = state.token_roles(self.headers.get("X-Auth-Token") or "")
            if roles is None:
                return self._refuse(401, "The request you have made requires authentication.")
            if not roles & POLICY_ROLES:
                return self._refuse(403, "Policy doesn't allow os-server-external-events")
            try:
                body = json.loads(raw)
            except ValueError:
                return self._refuse(400, "malformed JSON")
            error = _schema_error(body)
            if error is not None:
                return self._refuse(400, error)
            out = []
            known = 0
            for ev in body["events"]:
                ev = dict(ev)
                if state.servers is None or ev["server_uuid"] in state.servers:
                    ev.update(code=200, status="completed")
                    known += 1
                else:
                    ev.update(code=404, status="failed")
                out.append(ev)
            with state.lock:
                state.requests.append(
                    Received(
                        body["events"],
                        roles,
                        self.headers.get("X-OpenStack-Nova-API-Version"),
                        self.headers.get("OpenStack-API-Version"),
                        self.headers.get("X-Auth-Token") or "",
                    )
                )
            if not known:
                msg = "No instances found for any event"
                return self._send(404, {"itemNotFound": {"code": 404, "message": msg}})
            self._send(200 if known == len(out) else 207, {"events": out})

        def _refuse(self, status: int, message: str) -> None:
            with state.lock:
                state.refused.append((status, message))
            self._send(status, {"error": {"code": status, "message": message}})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # (no getfqdn: it can hang without DNS)
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class NovaApi:
    """In-process: `with NovaApi(token_roles) as nova: nova.endpoint, nova.state`."""

    def __init__(self, token_roles: TokenRoles, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = NovaState(token_roles)
        self.host = host
        self.server = _Server((host, port), _handler(self.state))
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/v2.1"

    def __enter__(self) -> NovaApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def keystone_validator(keystone: KeystoneServer) -> TokenRoles:
    """Validate tokens as Nova's auth_token does: Keystone's GET /v3/auth/tokens, here with
    the admin's session; the token's roles, or None if Keystone refuses it."""
    from keystoneauth1 import exceptions as ks_exc

    def roles(token: str) -> frozenset[str] | None:
        if not token:
            return None
        try:
            access = keystone.admin.tokens.validate(token)
        except (ks_exc.NotFound, ks_exc.Unauthorized):
            return None
        return frozenset(r.lower() for r in access.role_names)

    return roles


def register_compute(keystone: KeystoneServer, url: str) -> None:
    """The catalog's `compute` service (nova) at URL, replacing any earlier one."""
    admin = keystone.admin
    for old in admin.services.list(type="compute"):
        admin.services.delete(old)
    svc = admin.services.create(name="nova", type="compute")
    for interface in ("public", "internal", "admin"):
        admin.endpoints.create(svc, url, interface=interface, region="RegionOne")


def nova_env(options: dict[str, str], interval: float = 0.5) -> dict[str, str]:
    """[nova] options as the WYVERN_* environment of a `wyvern api` process."""
    env = {f"WYVERN_NOVA__{k.upper()}": v for k, v in options.items()}
    env["WYVERN_SEND_EVENTS_INTERVAL"] = str(interval)
    return env


def nova_options(service: dict[str, str]) -> dict[str, str]:
    """A service user's options (KeystoneServer.service_user()) as [nova] options."""
    keep = ("auth_url", "auth_type", "username", "password", "project_name",
            "user_domain_name", "project_domain_name", "region_name")  # fmt: skip
    opts = {k: service[k] for k in keep if k in service}
    opts["endpoint_type"] = "public"
    return opts
