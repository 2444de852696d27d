"""Input bounds that depend on the HTTP server, against a real `wyvern api` process:
a large body is refused before it is read, slow requests time out, connections are
capped, and every 5xx closes the connection.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.rawhttp import closed_by_peer, read_response
from tests.harness import HOST, ApiServer, start_api

LIMIT = 114688
TIMEOUT = 2.0  # api_request_read_timeout for these servers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    env = {"WYVERN_API_REQUEST_READ_TIMEOUT": str(TIMEOUT), "WYVERN_API_MAX_CONNECTIONS": "40"}
    with start_api(tmp_path_factory.mktemp("bounds"), env=env) as api:
        yield api


def _connect(server: ApiServer) -> socket.socket:
    s = socket.create_connection((HOST, server.port), timeout=10)
    return s


def _post_head(length: int | None, path: str = "/v2.0/networks") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def test_small_body_is_served_on_a_kept_alive_connection(server: ApiServer) -> None:
    """The probes below use raw sockets; first show one serving two requests normally."""
    body = b'{"network": {"name": "ok"}}'
    with _connect(server) as s:
        for _ in range(2):
            s.sendall(_post_head(len(body)) + body)
            status, headers, _ = read_response(s)
            assert status == 201
            assert headers.get("connection", "") != "close"


def test_declared_large_body_is_413_before_it_is_sent(server: ApiServer) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(_post_head(64 * 1024 * 1024))  # 64 MB announced, none of it sent
        status, headers, body = read_response(s, timeout=5)
        assert status == 413, body
        assert time.monotonic() - t0 < TIMEOUT  # not after waiting for the body
        assert b"HTTPRequestEntityTooLarge" in body
        assert headers["connection"] == "close"
        assert closed_by_peer(s, 5)


def test_chunked_body_is_cut_at_the_limit(server: ApiServer) -> None:
    chunk = b"x" * 16384
    with _connect(server) as s:
        s.sendall(_post_head(None))
        sent = 0
        while sent <= LIMIT:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        # No terminating chunk: the server must answer without the rest of the body.
        status, headers, body = read_response(s, timeout=5)
        assert status == 413, body
        assert headers["connection"] == "close"


def test_slow_body_times_out(server: ApiServer) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(_post_head(100) + b'{"network": ')  # 12 of 100 bytes, then silence
        status, headers, body = read_response(s, timeout=TIMEOUT + 10)
        elapsed = time.monotonic() - t0
        assert status == 408, body
        assert TIMEOUT - 0.5 < elapsed < TIMEOUT + 3, elapsed
        assert headers["connection"] == "close"
        assert closed_by_peer(s, 5)


def test_trickled_body_times_out_as_a_whole(server: ApiServer) -> None:
    """One byte a fraction of a second never resets the clock: the whole body has a budget."""
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(_post_head(1000))
        status = 0
        s.settimeout(0.2)
        buf = b""
        while time.monotonic() - t0 < TIMEOUT + 5:
            try:
                s.sendall(b" ")
                buf += s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if b"\r\n" in buf:
                status = int(buf.split()[1])
                break
        assert status == 408, buf
        assert time.monotonic() - t0 < TIMEOUT + 3


def test_half_sent_headers_time_out(server: ApiServer) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        assert closed_by_peer(s, TIMEOUT + 5)
        assert time.monotonic() - t0 < TIMEOUT + 3
    # Trickling header bytes does not keep a connection either.
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /v2.0/networks HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - t0 < TIMEOUT + 5:
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                closed = True
                break
            if closed_by_peer(s, 0.3):
                closed = True
                break
        assert closed and time.monotonic() - t0 < TIMEOUT + 3


def test_connections_are_capped(server: ApiServer) -> None:
    """Past api_max_connections (40 here) a connection is refused at once with a 503 and
    closed, so idle connections cannot pile up descriptors; once the held ones go, the
    server serves again."""
    held = [_connect(server) for _ in range(40)]
    try:
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\n")  # incomplete: each holds a connection
        time.sleep(0.3)
        t0 = time.monotonic()
        with _connect(server) as s:  # sends nothing: refused before any request
            status, headers, body = read_response(s)
            assert status == 503 and b'"ServiceUnavailable"' in body
            assert headers["retry-after"] == "1" and headers["connection"] == "close"
            assert closed_by_peer(s, 2)
        assert time.monotonic() - t0 < 2
        # The held ones are still open (the refusal is the cap's, not a timeout's).
        assert not closed_by_peer(held[0], 0.1)
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + TIMEOUT + 5
    while True:
        with _connect(server) as s:
            s.sendall(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = read_response(s)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200


def test_settings_reach_a_multi_worker_server(tmp_path: Path) -> None:
    env = {"WYVERN_API_MAX_BODY_SIZE": "2000"}
    with start_api(tmp_path, workers=2, env=env) as api, _connect(api) as s:
        s.sendall(_post_head(2001))
        status, _, body = read_response(s)
        assert status == 413, body
