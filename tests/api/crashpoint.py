"""`wyvern api` whose store kills the process right after a chosen write: the fault
injection of tests/api/test_crash_points.py.

    python -m tests.api.crashpoint api --no-access-log      (the arguments of `wyvern api`)

The store's writes (`txn`, and the lease `grant` and `revoke` a delete's intent lives on)
are counted once the file named by $CRASHPOINT_FILE holds "<token> <n>" with a token not
seen before. Right after the n-th write returns (committed), the process SIGKILLs itself,
as an OOM kill or a power cut would: no handler runs, no response is sent. n = 0 disarms.
Keepalives are not counted: they are timed, not steps of an operation.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wyvern.nb.etcd
import wyvern.nb.sqlite
from wyvern.nb.store import Compare, Delete, Put, TxnResult

_lock = threading.Lock()
_state = {"token": "", "count": 0, "at": 0}


def _after_write() -> None:
    """Count a write that just returned; die if it is the armed one."""
    path = os.environ.get("CRASHPOINT_FILE")
    if not path:
        return
    try:
        token, at = Path(path).read_text().split()
    except (OSError, ValueError):
        return
    with _lock:
        if token != _state["token"]:
            _state.update(token=token, count=0, at=int(at))
        _state["count"] = int(_state["count"]) + 1
        if _state["at"] and _state["count"] == _state["at"]:
            os.kill(os.getpid(), signal.SIGKILL)


class _Crashing:
    """Mixed in before a real store class: the same store, its writes counted."""

    def txn(
        self,
        compares: Sequence[Compare],
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        result: TxnResult = super().txn(compares, puts, deletes)  # type: ignore[misc]
        _after_write()
        return result

    def grant(self, ttl: float) -> int:
        lease: int = super().grant(ttl)  # type: ignore[misc]
        _after_write()
        return lease

    def revoke(self, lease: int) -> None:
        super().revoke(lease)  # type: ignore[misc]
        _after_write()


class CrashingSqliteStore(_Crashing, wyvern.nb.sqlite.SqliteStore):
    pass


class CrashingEtcdStore(_Crashing, wyvern.nb.etcd.EtcdStore):
    pass


def main() -> Any:
    # wyvern.nb.factory imports the store classes when it opens one: it gets these.
    wyvern.nb.sqlite.SqliteStore = CrashingSqliteStore  # type: ignore[misc]
    wyvern.nb.etcd.EtcdStore = CrashingEtcdStore  # type: ignore[misc]
    from wyvern.cli.main import run

    return run()


if __name__ == "__main__":
    main()
