"""Logging for the long-running commands: the console plus a file under `<run_dir>/logs/`.

One format everywhere, with the process id and the component (logger name), so the
lines of `wyvern up` (API, later the agent and OVS) can be told apart in one file.
uvicorn is started with `log_config=None`, so its loggers propagate to these handlers.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
# Handlers we installed, so a second call (tests, a uvicorn worker) replaces rather than adds.
_OURS = "_wyvern_handler"


def setup_logging(level: str, log_file: Path | None = None, console: bool = True) -> Path | None:
    """Configure the root logger; returns the log file actually opened (None if none).

    A log file that cannot be opened (read-only run dir) is reported on the console
    instead of stopping the service.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(_level(level))
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    opened: Path | None = None
    problem: OSError | None = None
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
            opened = log_file
        except OSError as exc:
            problem = exc
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    if problem is not None:
        logging.getLogger("wyvern").warning("cannot write log file %s: %s", log_file, problem)
    return opened


def _level(name: str) -> int:
    value = logging.getLevelName(name.strip().upper())
    return value if isinstance(value, int) else logging.INFO
