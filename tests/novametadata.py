"""A small stand-in for Nova's metadata API, as Neutron's metadata proxy meets it.

It checks what Nova checks (nova/api/metadata/handler.py, behind Neutron): the
X-Instance-ID and X-Tenant-ID headers must be there (else 400) and
X-Instance-ID-Signature must be the hex HMAC-SHA256 of the instance id keyed with the
shared secret (else 403). It then answers like Nova for the instance the headers name:

    /openstack/latest/meta_data.json  {"uuid", "project_id", "name", "hostname", ...}
    /latest/meta-data/                the EC2 keys, one per line
    /latest/meta-data/<key>           instance-id, local-ipv4 (X-Forwarded-For), ...

Each request is logged as one JSON line (path, the four headers, whether the signature
was valid) on stdout, after a first line "ready <port>". Run it with
`python -m tests.novametadata --secret S [--port P]`, or use `NovaStandIn` in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EC2_KEYS = ("hostname", "instance-id", "local-hostname", "local-ipv4", "placement/")


def signature(secret: str, instance_id: str) -> str:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def _handler(secret: str, log: Callable[[dict[str, Any]], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            instance = self.headers.get("X-Instance-ID")
            tenant = self.headers.get("X-Tenant-ID")
            signed = self.headers.get("X-Instance-ID-Signature") or ""
            forwarded = self.headers.get("X-Forwarded-For")
            valid = instance is not None and hmac.compare_digest(
                signed, signature(secret, instance)
            )
            log(
                {
                    "path": self.path,
                    "instance_id": instance,
                    "tenant_id": tenant,
                    "forwarded_for": forwarded,
                    "signature": signed,
                    "signature_valid": valid,
                }
            )
            if instance is None or tenant is None:
                return self._send(400, "text/plain", b"X-Instance-ID header is missing")
            if not valid:
                return self._send(403, "text/plain", b"403 Forbidden\n\nInvalid proxy request")
            path = self.path.split("?", 1)[0]
            if path in ("/openstack/latest/meta_data.json", "/openstack/2013-10-17/meta_data.json"):
                body = {
                    "uuid": instance,
                    "project_id": tenant,
                    "name": f"vm-{instance[:8]}",
                    "hostname": f"vm-{instance[:8]}.novalocal",
                    "availability_zone": "nova",
                    "launch_index": 0,
                    "meta": {},
                    "public_keys": {"mykey": "ssh-ed25519 AAAA stand-in"},
                }
                return self._send(200, "application/json", json.dumps(body).encode())
            ec2 = {
                "instance-id": instance,
                "hostname": f"vm-{instance[:8]}.novalocal",
                "local-hostname": f"vm-{instance[:8]}.novalocal",
                "local-ipv4": forwarded or "",
            }
            if path == "/latest/meta-data/":
                return self._send(200, "text/plain", "\n".join(EC2_KEYS).encode())
            key = path.removeprefix("/latest/meta-data/")
            if key in ec2:
                return self._send(200, "text/plain", ec2[key].encode())
            return self._send(404, "text/plain", b"404 Not Found")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # (no getfqdn: it can hang without DNS)
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class NovaStandIn:
    """In-process: `with NovaStandIn("secret") as nova: nova.port, nova.requests`."""

    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server = _Server((host, port), _handler(secret, self.requests.append))
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> NovaStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    def log(entry: dict[str, Any]) -> None:
        print(json.dumps(entry), flush=True)

    server = _Server((args.host, args.port), _handler(args.secret, log))
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
