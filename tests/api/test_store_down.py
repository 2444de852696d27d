"""A store that is down or hung: the API answers 503 with Retry-After within a bounded
time (as Neutron does for a lost database), and every 5xx closes the connection so the
client's next request opens a fresh one instead of meeting a reset."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.rawhttp import closed_by_peer, read_response
from tests.harness import HOST, ApiServer, etcd_server, start_api
from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.nb.memory import MemoryStore

# etcd's client gives up after its 5 s request timeout; the answer must come by then
# plus scheduling slack on a loaded machine.
BOUND = 8.0


def _get(api: ApiServer, path: str = "/v2.0/networks") -> tuple[int, dict[str, str], bytes, bool]:
    """One request on its own connection: status, headers, body, and whether the server
    then closed the connection."""
    with socket.create_connection((HOST, api.port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        status, headers, body = read_response(s, timeout=30)
        closed = closed_by_peer(s, 1.0)
    return status, headers, body, closed


def _post(api: ApiServer) -> tuple[int, dict[str, str], bytes]:
    body = b'{"network": {"name": "n"}}'
    with socket.create_connection((HOST, api.port), timeout=30) as s:
        s.sendall(
            f"POST /v2.0/networks HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return read_response(s, timeout=30)


def _expect_503(api: ApiServer) -> float:
    t0 = time.monotonic()
    status, headers, body, closed = _get(api)
    elapsed = time.monotonic() - t0
    assert status == 503, body
    assert b'"ServiceUnavailable"' in body
    assert int(headers["retry-after"]) >= 1
    assert headers["connection"] == "close" and closed
    assert elapsed < BOUND, elapsed
    status, headers, body = _post(api)
    assert status == 503 and headers["connection"] == "close", body
    return elapsed


@pytest.mark.system
def test_etcd_hung_or_stopped_is_503_with_retry_after(tmp_path: Path) -> None:
    with (
        etcd_server(tmp_path / "etcd") as etcd,
        start_api(tmp_path / "api", etcd_endpoints=etcd.endpoints) as api,
    ):
        status, _, _, closed = _get(api)
        assert status == 200 and not closed  # a kept-alive connection while etcd is up
        etcd.kill(0, signal.SIGSTOP)  # hung: accepts connections, answers nothing
        try:
            hung = _expect_503(api)
        finally:
            etcd.kill(0, signal.SIGCONT)
        assert _get(api)[0] == 200
        etcd.kill(0, signal.SIGKILL)  # stopped: connections refused
        stopped = _expect_503(api)
        etcd.restart(0)
        deadline = time.monotonic() + 30
        while _get(api)[0] != 200:
            assert time.monotonic() < deadline, "the API did not recover with etcd"
            time.sleep(0.2)
        assert _post(api)[0] == 201
        print(f"503 after {hung:.2f}s (etcd hung), {stopped:.2f}s (etcd stopped)")


class _BrokenStore(MemoryStore):
    """A store with a bug (not an outage): reads raise something unexpected."""

    def get(self, key: str) -> Any:
        raise RuntimeError("a bug")

    def list(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")


def test_every_5xx_closes_the_connection() -> None:
    ok = TestClient(create_app(Settings(store="memory"), MemoryStore()))
    r = ok.get("/v2.0/networks")
    assert r.status_code == 200 and r.headers.get("connection") != "close"
    client = TestClient(
        create_app(Settings(store="memory"), _BrokenStore()), raise_server_exceptions=False
    )
    r = client.get("/v2.0/networks")
    assert r.status_code == 500 and r.headers["connection"] == "close"
    r = client.put("/v2.0/networks/x", json={"network": {"name": "n"}})
    assert r.status_code == 500 and r.headers["connection"] == "close"
