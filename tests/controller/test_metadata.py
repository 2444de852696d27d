"""The metadata proxy's request handling, against the Nova stand-in over real HTTP.

The VM is the peer address of the connection (a per-port address, wyvern.ir.metadata):
these tests give the proxy's ASGI app that peer and the headers a VM would send, and
check what Nova saw and what the VM got back.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.novametadata import NovaStandIn, signature
from wyvern.apps.port_security import eui64_link_local
from wyvern.controller.metadata import (
    Instance,
    MetadataProxy,
    MetadataSettings,
    Request,
    sign_instance_id,
)
from wyvern.ir.metadata import port_address_v4, port_address_v6

SECRET = "shared"
VM = Instance("port-a", "11111111-2222-3333-4444-555555555555", "proj-a", "fa:16:3e:00:00:0a",
              "10.0.0.5")  # fmt: skip
OTHER = Instance("port-b", "99999999-8888-7777-6666-555555555555", "proj-b",
                 "fa:16:3e:00:00:0b", "10.0.0.6")  # fmt: skip
NO_DEVICE = Instance("port-c", "", "proj-a", "fa:16:3e:00:00:0c", "10.0.0.7")
PORTS = {3: VM, 4: OTHER, 5: NO_DEVICE}
META_JSON = "/openstack/latest/meta_data.json"


@pytest.fixture
def nova() -> Iterator[NovaStandIn]:
    with NovaStandIn(SECRET) as server:
        yield server


def proxy(port: int | None, secret: str = SECRET) -> MetadataProxy:
    settings = MetadataSettings(
        nova_metadata_host="127.0.0.1" if port is not None else "",
        nova_metadata_port=port or 8775,
        metadata_proxy_shared_secret=secret,
    )
    return MetadataProxy(settings, PORTS.get)


def asgi(
    app: MetadataProxy, peer: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, as uvicorn would hand it over from PEER."""
    sent: list[dict[str, Any]] = []
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": list(headers),
        "client": (peer, 40000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = sent[0], sent[1]
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], hdrs, body["body"]


def test_the_vm_gets_its_own_instance_signed_as_neutron_signs_it(nova: NovaStandIn) -> None:
    status, headers, body = asgi(proxy(nova.port), port_address_v4(3), META_JSON)
    assert status == 200 and headers["content-type"] == "application/json"
    meta = json.loads(body)
    assert (meta["uuid"], meta["project_id"]) == (VM.device_id, VM.project_id)
    [seen] = nova.requests
    assert seen["instance_id"] == VM.device_id
    assert seen["tenant_id"] == VM.project_id
    assert seen["forwarded_for"] == VM.ipv4
    assert seen["signature_valid"] is True
    # Neutron's form: hex HMAC-SHA256 of the instance id, keyed with the shared secret.
    assert sign_instance_id(SECRET, VM.device_id) == signature(SECRET, VM.device_id)


def test_each_port_is_its_own_instance_and_the_ec2_tree_works(nova: NovaStandIn) -> None:
    app = proxy(nova.port)
    status, _, body = asgi(app, port_address_v4(4), "/latest/meta-data/instance-id")
    assert (status, body.decode()) == (200, OTHER.device_id)
    status, _, body = asgi(app, port_address_v4(4), "/latest/meta-data/local-ipv4")
    assert (status, body.decode()) == (200, OTHER.ipv4)
    status, _, body = asgi(app, port_address_v4(3), "/latest/meta-data/")
    assert status == 200 and "instance-id" in body.decode().splitlines()


def test_headers_a_vm_sends_never_reach_nova(nova: NovaStandIn) -> None:
    forged = [
        (b"x-instance-id", OTHER.device_id.encode()),
        (b"x-tenant-id", OTHER.project_id.encode()),
        (b"x-instance-id-signature", signature(SECRET, OTHER.device_id).encode()),
        (b"x-forwarded-for", b"10.0.0.6"),
    ]
    status, _, body = asgi(proxy(nova.port), port_address_v4(3), META_JSON, forged)
    assert status == 200 and json.loads(body)["uuid"] == VM.device_id
    [seen] = nova.requests
    assert (seen["instance_id"], seen["tenant_id"], seen["forwarded_for"]) == (
        VM.device_id,
        VM.project_id,
        VM.ipv4,
    )


def test_over_ipv6_the_vm_is_its_link_local_address(nova: NovaStandIn) -> None:
    status, _, body = asgi(proxy(nova.port), port_address_v6(3), META_JSON)
    assert status == 200 and json.loads(body)["uuid"] == VM.device_id
    assert nova.requests[0]["forwarded_for"] == str(eui64_link_local(VM.mac))


def test_a_wrong_secret_gets_novas_403(nova: NovaStandIn) -> None:
    status, _, _ = asgi(proxy(nova.port, secret="not-novas"), port_address_v4(3), META_JSON)
    assert status == 403
    assert nova.requests[0]["signature_valid"] is False
    # (the same request with Nova's secret succeeds)
    assert asgi(proxy(nova.port), port_address_v4(3), META_JSON)[0] == 200


def test_no_instance_behind_the_peer_is_a_404(nova: NovaStandIn) -> None:
    app = proxy(nova.port)
    assert asgi(app, port_address_v4(3), META_JSON)[0] == 200
    for peer in (port_address_v4(5), port_address_v4(9), "10.0.0.5", "127.0.0.1"):
        status, _, body = asgi(app, peer, META_JSON)
        assert status == 404, peer
        assert json.loads(body)["error"]["type"] == "InstanceNotFound"
    assert len(nova.requests) == 1  # (only the first reached Nova)


def test_without_nova_configured_every_request_is_a_clear_404() -> None:
    status, headers, body = asgi(proxy(None), port_address_v4(3), META_JSON)
    assert status == 404 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "MetadataNotConfigured"
    assert "nova_metadata_host" in error["message"]


def test_nova_down_is_a_500_not_a_hang(nova: NovaStandIn) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert asgi(proxy(nova.port), port_address_v4(3), META_JSON)[0] == 200
    status, _, body = asgi(proxy(closed), port_address_v4(3), META_JSON)
    assert status == 500
    assert json.loads(body)["error"]["type"] == "MetadataProxyError"


def test_the_handler_takes_only_method_path_query_body_and_peer(nova: NovaStandIn) -> None:
    app = proxy(nova.port)
    resp = app.handle(Request("GET", META_JSON, "x=1", b"", port_address_v4(3)))
    assert resp.status == 200
    assert nova.requests[0]["path"] == META_JSON + "?x=1"


def test_nova_that_never_answers_is_a_500_after_the_read_timeout(nova: NovaStandIn) -> None:
    with socket.socket() as silent:  # accepts (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        settings = MetadataSettings(
            nova_metadata_host="127.0.0.1",
            nova_metadata_port=silent.getsockname()[1],
            metadata_proxy_shared_secret=SECRET,
            read_timeout=0.5,
        )
        status, _, body = asgi(MetadataProxy(settings, PORTS.get), port_address_v4(3), META_JSON)
    assert status == 500
    assert json.loads(body)["error"]["type"] == "MetadataProxyError"
    # (the same request to a Nova that answers: 200)
    assert asgi(proxy(nova.port), port_address_v4(3), META_JSON)[0] == 200
