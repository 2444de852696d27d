"""Input bounds: body size, echoed input, JSON nesting, filter values (TestClient).

What depends on uvicorn itself (413 before the body is read, slow bodies and headers,
the connection cap, Connection: close) is in test_bounds_server.py, against a real server.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import create, error_type

# Nova's identity: Neutron's policy lets only the service role set binding:profile.
SERVICE = {"X-Roles": "admin,service"}

NEUTRON_MAX_BODY = 114688  # Neutron's max_request_body_size (oslo.middleware sizelimit)


def _padded(size: int) -> bytes:
    """A valid network body of exactly `size` bytes (the padding is in the description)."""
    empty = b'{"network": {"name": "pad", "description": ""}}'
    pad = size - len(empty)
    return b'{"network": {"name": "pad", "description": "' + b" " * pad + b'"}}'


def test_body_over_the_limit_is_413_at_the_limit(client: TestClient) -> None:
    hdrs = {"Content-Type": "application/json"}
    # At the limit: accepted by the size check (the description's own bound then answers).
    r = client.post("/v2.0/networks", content=_padded(NEUTRON_MAX_BODY), headers=hdrs)
    assert r.status_code == 400, r.text
    assert error_type(r) == "InvalidInput"
    ok = client.post("/v2.0/networks", content=_padded(200), headers=hdrs)
    assert ok.status_code == 201, ok.text
    # One byte over: refused as too large, as Neutron does.
    r = client.post("/v2.0/networks", content=_padded(NEUTRON_MAX_BODY + 1), headers=hdrs)
    assert r.status_code == 413, r.text
    assert error_type(r) == "HTTPRequestEntityTooLarge"
    # 130 kB (the probe's size) is over it too.
    r = client.post("/v2.0/networks", content=_padded(130_000), headers=hdrs)
    assert r.status_code == 413


def test_the_limit_is_a_setting(client_factory: Any) -> None:
    small = client_factory(api_max_body_size=300)
    hdrs = {"Content-Type": "application/json"}
    assert small.post("/v2.0/networks", content=_padded(300), headers=hdrs).status_code == 201
    assert small.post("/v2.0/networks", content=_padded(301), headers=hdrs).status_code == 413


def test_echoed_input_is_truncated(client: TestClient) -> None:
    huge = "x" * 100_000  # as much as fits the body limit
    r = client.post("/v2.0/networks", json={"network": {"name": huge}})
    assert r.status_code == 400
    message = r.json()["NeutronError"]["message"]
    assert "name" in message and "xxxx" in message  # still says what and echoes a prefix
    assert len(r.content) < 2000, len(r.content)
    # Every echo is bounded, whatever builds the message: an unknown attribute's name,
    # a filter value, a header.
    r = client.post("/v2.0/networks", json={"network": {huge: 1}})
    assert r.status_code == 400 and len(r.content) < 2000
    r = client.get("/v2.0/networks", params={"admin_state_up": huge[:10000]})
    assert r.status_code == 400 and len(r.content) < 2000
    net = create(client, "networks")
    r = client.put(
        f"/v2.0/networks/{net['id']}",
        json={"network": {"name": "n"}},
        headers={"If-Match": huge[:10000]},
    )
    assert r.status_code == 400 and len(r.content) < 2000


def _nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"a": out}
    return out


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    net = create(client, "networks")
    # A modest nesting is fine (the probe first shows the same request succeeding).
    # (binding:profile is Nova's to set: Neutron's policy wants the service role)
    ok = client.post(
        "/v2.0/ports",
        json={"port": {"network_id": net["id"], "binding:profile": _nested(8)}},
        headers=SERVICE,
    )
    assert ok.status_code == 201, ok.text
    for depth in (254, 300, 5000):
        body = b'{"port": {"network_id": "%s", "binding:profile": ' % net["id"].encode()
        body += b'{"a": ' * depth + b"{}" + b"}" * depth + b"}}"
        r = client.post(
            "/v2.0/ports", content=body, headers={"Content-Type": "application/json", **SERVICE}
        )
        assert r.status_code == 400, (depth, r.status_code, r.text[:300])
        assert error_type(r) == "HTTPBadRequest"
    port = ok.json()["port"]
    r = client.put(
        f"/v2.0/ports/{port['id']}",
        json={"port": {"binding:profile": _nested(254)}},
        headers=SERVICE,
    )
    assert r.status_code == 400, r.text[:300]


def test_filter_values_are_validated(client: TestClient) -> None:
    net = create(client, "networks", mtu=1400)
    ids = [n["id"] for n in client.get("/v2.0/networks?mtu=1400").json()["networks"]]
    assert ids == [net["id"]]
    assert client.get("/v2.0/networks?mtu=1500").json()["networks"] == []
    r = client.get("/v2.0/networks?mtu=abc")
    assert r.status_code == 400, r.text
    assert error_type(r) == "InvalidInput"
    r = client.get("/v2.0/networks?shared=abc")
    assert r.status_code == 400
    # A string attribute takes any value (no match is an empty list).
    assert client.get("/v2.0/networks?name=abc").json()["networks"] == []


def test_page_reverse_must_be_a_boolean(client: TestClient) -> None:
    create(client, "networks")
    for good in ("true", "False", "1", "0"):
        r = client.get(f"/v2.0/networks?page_reverse={good}&limit=1")
        assert r.status_code == 200, (good, r.text)
    for bad in ("null", "yes", "abc"):
        r = client.get(f"/v2.0/networks?page_reverse={bad}")
        assert r.status_code == 400, (bad, r.text)
        assert error_type(r) == "InvalidInput"
