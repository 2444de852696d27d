"""Serving the API with uvicorn: in the foreground (`wyvern api`) or as one component of
the all-in-one (`wyvern up`), where it runs on a thread so the supervisor owns signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from wyvern.api.app import create_app
from wyvern.api.errors import ServiceUnavailable
from wyvern.config import Settings, load_settings
from wyvern.logs import setup_logging
from wyvern.supervisor import ComponentError

LOG = logging.getLogger(__name__)
APP_FACTORY = "wyvern.server:app_from_env"
# Seconds in-flight requests get to finish once a stop is asked for.
GRACEFUL_SECONDS = 5


def api_log_file(settings: Settings) -> Path:
    return settings.run_dir / "logs" / "wyvern-api.log"


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: settings come from WYVERN_* and the TOML."""
    settings = load_settings()
    setup_logging(settings.log_level, api_log_file(settings))
    return create_app(settings)


class ServerConfig(uvicorn.Config):
    """uvicorn's settings from ours, with our protocol and its header deadline."""

    def __init__(self, app: FastAPI | str, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,  # our root handlers (console + run dir) get uvicorn's records
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            proxy_headers=False,
            server_header=False,
            http=BoundedH11Protocol,
            limit_concurrency=settings.api_max_connections,
            **kwargs,
        )
        self.header_timeout = settings.api_request_read_timeout


_BUSY = orjson.dumps(ServiceUnavailable("Too many connections; please retry.").body())
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two bounds uvicorn lacks: a connection whose
    request headers are not complete `header_timeout` seconds after it opened (or after
    its last response) is closed, since uvicorn's keep-alive timer restarts on every byte
    and a trickle held a connection forever; and a connection past `limit_concurrency`
    is refused as it opens. A slow body is BoundedBody's (408) once the headers are in."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        cap = self.limit_concurrency
        if cap is not None and len(self.connections) > cap:
            # uvicorn would hold it until a whole request arrived: refuse it now, so the
            # cap bounds open descriptors too.
            self.transport.write(_TOO_MANY)
            self.transport.close()
            return
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        timeout = getattr(self.config, "header_timeout", None)
        if timeout is not None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: FastAPI, settings: Settings, *, access_log: bool) -> uvicorn.Config:
    return ServerConfig(app, settings, access_log=access_log)


def serve_foreground(settings: Settings, *, access_log: bool, workers: int) -> int:
    """Run the API until SIGINT/SIGTERM; returns the exit code."""
    if workers > 1:
        # Workers are separate processes: they rebuild the settings from the environment,
        # which the caller has already made carry every command-line override. This is
        # uvicorn.run() with our config class.
        config = ServerConfig(
            APP_FACTORY, settings, factory=True, workers=workers, access_log=access_log
        )
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    # One process: the API as the only component under our supervisor, which exits 0 after
    # a clean stop (uvicorn's own handlers re-raise the signal once shut down).
    from wyvern.supervisor import run_until_signalled

    return run_until_signalled([ApiComponent(settings, access_log=access_log)])


class ApiComponent:
    """The API server on a background thread (no signal handlers: the supervisor has them)."""

    name = "api"

    def __init__(self, settings: Settings, *, access_log: bool = True) -> None:
        self.settings = settings
        self.access_log = access_log
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}/"

    def start(self, timeout: float = 30.0) -> None:
        app = create_app(self.settings)
        server = uvicorn.Server(uvicorn_config(app, self.settings, access_log=self.access_log))
        thread = threading.Thread(target=server.run, name="wyvern-api", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise ComponentError(
                    f"API server did not start on {self.settings.api_host}:"
                    f"{self.settings.api_port} (see the log above)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ComponentError(f"API server not ready after {timeout:.0f}s")
            time.sleep(0.02)
        LOG.info("API listening on %s (store %s)", self.url, self.settings.store)

    def check(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return "API server stopped unexpectedly"
        return None

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(GRACEFUL_SECONDS + 5)
        if thread.is_alive():
            LOG.warning("API server still busy after %ss: forcing exit", GRACEFUL_SECONDS + 5)
            server.force_exit = True
            thread.join(5)
        self._server = self._thread = None
