"""Bounded error logs: an error that repeats is logged once per window, with a count.

Without it a persistent fault (descriptors exhausted, a store that cannot be written)
logged a traceback per request or per accept() attempt: 2.16 GB in 7 minutes.
"""

from __future__ import annotations

import logging
import threading
import time

# The loggers an API process reports failures on: ours, the event loop's (accept()
# failures), and uvicorn's (errors outside the application).
LOGGERS = ("wyvern.api.app", "asyncio", "uvicorn.error")


class RepeatFilter(logging.Filter):
    """Lets the first record of a kind through per `window` seconds and counts the rest;
    the next one let through says how many were suppressed. A record's kind is its
    logger, level, format string and exception type and text (not its arguments: the
    same failure on another URL is the same failure)."""

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._lock = threading.Lock()
        # kind -> (when it was last let through, records suppressed since)
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        template = record.msg if record.args else str(record.msg).split("\n", 1)[0]
        kind = (record.name, record.levelno, template, type(exc).__name__, str(exc)[:200])
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.get(kind, (-float("inf"), 0))
            if now - last < self.window:
                self._seen[kind] = (last, suppressed + 1)
                return False
            if len(self._seen) > 1000:  # bound the memory too
                self._seen.clear()
            self._seen[kind] = (now, 0)
        if suppressed:
            record.msg = f"{record.msg} (repeated {suppressed} more times before this)"
        return True


def install(window: float = 60.0) -> None:
    """Attach one RepeatFilter to each API logger (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter(window))
