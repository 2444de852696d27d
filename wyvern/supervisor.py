"""Components under one supervisor: started in order, each ready before the next, watched,
and stopped in reverse on SIGINT/SIGTERM or as soon as one fails. `wyvern up` and
`wyvern api` both run under it; it owns the signals, components own none."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol

LOG = logging.getLogger("wyvern.up")


class ComponentError(RuntimeError):
    """A component failed to start."""


class Component(Protocol):
    name: str

    def start(self) -> None:
        """Return once the component serves; raise if it cannot."""

    def check(self) -> str | None:
        """None while healthy, else why it is not."""

    def stop(self) -> None:
        """Stop and release everything; must be safe to call after a failed start."""


class Supervisor:
    """Starts components in order, watches them, and stops them in reverse."""

    def __init__(self, parts: list[Component], stop: threading.Event, poll: float = 0.5) -> None:
        self.parts = parts
        self.stop_event = stop
        self.poll = poll
        self.started: list[Component] = []

    def run(self) -> int:
        """Until `stop` is set (exit code 0) or a component fails (exit code 1)."""
        code = 0
        try:
            for part in self.parts:
                if self.stop_event.is_set():
                    break
                LOG.info("starting %s", part.name)
                # Listed before start() returns, so a half-started part is stopped too.
                self.started.append(part)
                part.start()
            while not self.stop_event.wait(self.poll):
                problem = self._first_problem()
                if problem is not None:
                    LOG.error("%s", problem)
                    code = 1
                    break
        except Exception as exc:
            if self.stop_event.is_set():
                # Asked to stop while a part was starting (SIGTERM also reaches its
                # children, which then fail): that is the clean stop asked for.
                LOG.info("stopped while starting (%s)", exc)
            else:
                LOG.error("start failed: %s", exc, exc_info=not isinstance(exc, RuntimeError))
                code = 1
        finally:
            self.shutdown()
        return code

    def _first_problem(self) -> str | None:
        for part in self.started:
            problem = part.check()
            if problem is not None:
                return f"{part.name}: {problem}"
        return None

    def shutdown(self) -> None:
        while self.started:
            part = self.started.pop()
            LOG.info("stopping %s", part.name)
            try:
                part.stop()
            except Exception:
                LOG.exception("stopping %s failed", part.name)


def run_until_signalled(parts: list[Component]) -> int:
    """Run the components under a Supervisor until SIGINT/SIGTERM; returns the exit code.

    The first signal asks for a clean stop (exit code 0); handlers are restored after.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            LOG.warning("already stopping (%s)", name)
        else:
            LOG.info("%s received: shutting down", name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return Supervisor(parts, stop).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
