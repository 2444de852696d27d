"""auth_strategy=keystone: tokens validated by keystonemiddleware's auth_token.

auth_token is WSGI middleware and our API is ASGI, so it is not wrapped around the app:
each /v2.0 request's headers are replayed through it in a worker thread (its Keystone
calls block) as a body-less WSGI request whose inner app only records what auth_token
put in the environment. The caller's identity is then taken from those headers
(X-Project-Id, X-Roles, X-User-Id, X-Service-Roles, X-Is-Admin-Project), never from the
client's own: auth_token strips client-supplied ones before it sets its own. Its 401
(WWW-Authenticate: Keystone uri=...) and 503 (Keystone unreachable) are answered with
Neutron's error body, keeping its headers. Token caching is auth_token's own.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from wyvern.api.errors import NeutronError, NotAuthorized, ServiceUnavailable
from wyvern.config import KeystoneAuthtoken

LOG = logging.getLogger(__name__)
SCOPE_KEY = "wyvern.identity"
# Where auth applies: Neutron's api-paste serves the version list (`/`) unauthenticated.
PROTECTED_PREFIX = "/v2.0"
METRICS_PATH = "/metrics"  # (wyvern.api.metering_metrics: the metering counters)
# Threads validating at once (anyio's default pool is shared with the store calls).
VALIDATORS = 32

StartResponse = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Identity:
    """What auth_token confirmed about the caller."""

    project_id: str
    user_id: str
    roles: frozenset[str]
    service_roles: frozenset[str]
    is_admin_project: bool


def authtoken_conf(opts: KeystoneAuthtoken) -> dict[str, str]:
    """Our settings as auth_token's paste-style options (strings, lists comma-joined)."""
    conf: dict[str, str] = {"delay_auth_decision": "false", "log_name": "wyvern.keystone"}
    for name, value in vars(opts).items():
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        if value == "" or value is None:
            continue
        conf[name] = str(value)
    return conf


def _roles(raw: str | None) -> frozenset[str]:
    return frozenset(r.strip().lower() for r in (raw or "").split(",") if r.strip())


def identity_from_environ(environ: dict[str, Any]) -> Identity | None:
    if environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
        return None
    project = environ.get("HTTP_X_PROJECT_ID") or ""
    if not project:  # a domain- or system-scoped token: no project to act in
        return None
    return Identity(
        project_id=project,
        user_id=environ.get("HTTP_X_USER_ID") or "",
        roles=_roles(environ.get("HTTP_X_ROLES")),
        service_roles=_roles(environ.get("HTTP_X_SERVICE_ROLES")),
        is_admin_project=environ.get("HTTP_X_IS_ADMIN_PROJECT", "True") == "True",
    )


def _passed(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The app behind auth_token: reached only with a valid token; records what it set."""
    environ["wyvern.seen"].append(dict(environ))
    start_response("204 No Content", [])
    return [b""]


class KeystoneAuth:
    """ASGI middleware: /v2.0 requests need a Keystone token; the identity goes in scope."""

    def __init__(self, app: ASGIApp, opts: KeystoneAuthtoken) -> None:
        from keystonemiddleware import auth_token  # (only this strategy needs it)

        self.app = app
        self.protocol = auth_token.AuthProtocol(_passed, authtoken_conf(opts))
        self.limiter = anyio.CapacityLimiter(VALIDATORS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (
            scope["path"].startswith(PROTECTED_PREFIX) or scope["path"] == METRICS_PATH
        ):
            await self.app(scope, receive, send)
            return
        identity, refusal = await anyio.to_thread.run_sync(
            self.validate, scope, limiter=self.limiter
        )
        if refusal is not None:
            await _send_error(send, refusal)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = identity
        await self.app(scope, receive, send)

    def validate(self, scope: Scope) -> tuple[Identity | None, NeutronError | None]:
        """Run auth_token on the request's headers (blocking: a worker thread)."""
        environ = _environ(scope)
        seen: list[dict[str, Any]] = []
        environ["wyvern.seen"] = seen
        status: list[str] = []
        headers: list[tuple[str, str]] = []

        def start_response(st: str, hdrs: list[tuple[str, str]], exc: Any = None) -> None:
            status.append(st)
            headers.extend(hdrs)

        try:
            body = b"".join(self.protocol(environ, start_response))
        except Exception:  # auth_token failed in a way it does not map itself
            LOG.exception("keystone token validation failed")
            return None, ServiceUnavailable("Authentication service failed; please retry.")
        if seen:
            identity = identity_from_environ(seen[0])
            if identity is None:
                return None, NotAuthorized("A project-scoped token is required")
            return identity, None
        code = int(status[0].split()[0]) if status else 500
        return None, _refusal(code, headers, body)


def _refusal(code: int, headers: list[tuple[str, str]], body: bytes) -> NeutronError:
    err: NeutronError
    if code == 401:
        err = NotAuthorized("The request you have made requires authentication.")
        auth = [v for k, v in headers if k.lower() == "www-authenticate"]
        err.headers = {"WWW-Authenticate": auth[0]} if auth else {}
    elif code == 503:
        err = ServiceUnavailable("The Keystone service is temporarily unavailable.")
    else:
        LOG.warning("auth_token answered %s: %s", code, body[:200])
        err = NeutronError(
            f"Authentication failed ({code})", type="HTTPError", status=code if code >= 400 else 500
        )
    return err


def _environ(scope: Scope) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": "0",
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            continue
        key = f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


async def _send_error(send: Send, err: NeutronError) -> None:
    body = orjson.dumps(err.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
