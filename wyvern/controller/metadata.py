"""The metadata proxy: what a VM asks 169.254.169.254 (or fe80::a9fe:a9fe) for goes to
Nova's metadata API, signed as Neutron's metadata agent signs it.

The metadata app (wyvern.apps.metadata) source-NATs each local port's connection to an
address derived from its OpenFlow port, so the peer address of a connection the proxy
accepts names the port it came in on (wyvern.ir.metadata.ofport_of), and the agent's
view names the instance behind it. Nothing the VM sends identifies it: the request to
Nova carries only these headers, built here (Neutron's metadata agent does the same):

    X-Instance-ID: the port's device_id
    X-Tenant-ID: the port's project
    X-Forwarded-For: the VM's address (its IPv4 fixed IP, or for IPv6 the link-local
                     address it necessarily sent from)
    X-Instance-ID-Signature: hex HMAC-SHA256 of the instance id, keyed with
                     metadata_proxy_shared_secret

and the method, path, query and body. Nova's answer comes back as it is for 200, 400,
403, 404, 409 and 500 (Neutron maps those one to one); anything else, or no answer
within the timeout, is a 500, never a hang. Without a configured Nova
(nova_metadata_host empty) every request gets a 404 JSON saying so; a port with no
device_id (no instance) gets a 404 too.

Served by uvicorn on the listening sockets the agent made in the metadata namespace
(wyvern.southbound.metadata.listen), on an asyncio loop of its own thread; each forward
runs in a worker thread (requests), from the agent's own namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlunsplit

import orjson

from wyvern.apps.port_security import eui64_link_local
from wyvern.ir.metadata import ofport_of

LOG = logging.getLogger(__name__)

# Nova's status codes Neutron's metadata agent passes on (each as its own status).
PASSED_ON = frozenset({200, 400, 403, 404, 409, 500})
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class MetadataSettings:
    """Where Nova's metadata API is (Neutron's option names), and the shared secret."""

    nova_metadata_host: str = ""
    nova_metadata_port: int = 8775
    nova_metadata_protocol: str = "http"
    metadata_proxy_shared_secret: str = ""
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT

    @property
    def configured(self) -> bool:
        return bool(self.nova_metadata_host)

    def url(self, path: str, query: str) -> str:
        host = self.nova_metadata_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        netloc = f"{host}:{self.nova_metadata_port}"
        return urlunsplit((self.nova_metadata_protocol, netloc, path, query, ""))


@dataclass(frozen=True, slots=True)
class Instance:
    """What the agent's view says about the port behind a connection."""

    port_id: str
    device_id: str
    project_id: str
    mac: str
    ipv4: str | None  # its first IPv4 fixed address


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    body: bytes
    peer: str  # the connection's peer address (a per-port address)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def sign_instance_id(secret: str, instance_id: str) -> str:
    """Neutron's X-Instance-ID-Signature: hex HMAC-SHA256 of the id with the secret."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def _error(status: int, kind: str, message: str) -> Response:
    body = orjson.dumps({"error": {"type": kind, "message": message}})
    return Response(status, body)


NOT_CONFIGURED = _error(
    404,
    "MetadataNotConfigured",
    "The metadata service is not configured on this chassis: set nova_metadata_host "
    "(and metadata_proxy_shared_secret) in the agent's configuration.",
)


class MetadataProxy:
    """Request handling (`handle`, a plain function of the request) and its server."""

    def __init__(
        self, settings: MetadataSettings, lookup: Callable[[int], Instance | None]
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- request handling -----------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        if not self.settings.configured:
            return NOT_CONFIGURED
        ofport = ofport_of(req.peer)
        inst = self.lookup(ofport) if ofport is not None else None
        if inst is None or not inst.device_id:
            LOG.info("metadata: %s %s from %s: no instance behind it", req.method,
                     req.path, req.peer)  # fmt: skip
            return _error(404, "InstanceNotFound", "No instance is bound to this port.")
        v6 = ipaddress.ip_address(req.peer.split("%", 1)[0]).version == 6
        forwarded = str(eui64_link_local(inst.mac)) if v6 or not inst.ipv4 else inst.ipv4
        headers = {
            "X-Forwarded-For": forwarded,
            "X-Instance-ID": inst.device_id,
            "X-Tenant-ID": inst.project_id,
            "X-Instance-ID-Signature": sign_instance_id(
                self.settings.metadata_proxy_shared_secret, inst.device_id
            ),
        }
        import requests  # (here: an agent whose VMs ask nothing never loads urllib.request)

        url = self.settings.url(req.path, req.query)
        try:
            resp = requests.request(  # (a request of its own: worker threads share nothing)
                req.method,
                url,
                headers=headers,
                data=req.body or None,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            LOG.warning("metadata: port %s: Nova at %s: %s", inst.port_id, url, exc)
            return _error(500, "MetadataProxyError", "Nova's metadata API did not answer.")
        if resp.status_code not in PASSED_ON:
            LOG.warning("metadata: port %s: Nova answered %d", inst.port_id, resp.status_code)
            message = f"Unexpected response code: {resp.status_code}"
            return _error(500, "MetadataProxyError", message)
        if resp.status_code == 403:
            LOG.warning("metadata: port %s: Nova refused the signature (is "
                        "metadata_proxy_shared_secret Nova's?)", inst.port_id)  # fmt: skip
        kind = resp.headers.get("Content-Type", "text/plain")
        return Response(resp.status_code, resp.content, kind)

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # (the client went away)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await _send(send, _error(413, "RequestTooLarge", "Request body too large."))
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        client = scope.get("client") or ("", 0)
        req = Request(
            scope["method"],
            scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
            scope.get("query_string", b"").decode("latin-1"),
            b"".join(chunks),
            str(client[0]),
        )
        resp = await asyncio.to_thread(self.handle, req)
        await _send(send, resp)

    # -- the server -------------------------------------------------------------------------
    def start(self, sockets: list[socket.socket]) -> MetadataProxy:
        """Serve SOCKETS (listening, in the metadata namespace) on a thread of its own."""
        import uvicorn

        config = uvicorn.Config(
            self,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_level="warning",
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        self._server = server

        def main() -> None:
            try:
                asyncio.run(server.serve(sockets=sockets))
            except Exception:
                LOG.exception("metadata proxy stopped")

        self._thread = threading.Thread(target=main, name="metadata-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


async def _send(send: Any, resp: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [
                (b"content-type", resp.content_type.encode("latin-1")),
                (b"content-length", str(len(resp.body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": resp.body})
