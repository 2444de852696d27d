"""The embedded store: one SQLite file (WAL) with etcd's revision and watch semantics.

Every write transaction takes the database's write lock (BEGIN IMMEDIATE), checks its
guards, applies its changes, bumps the global revision and appends the changes to a
log table, all in one SQLite transaction. Watchers read the log: in the same process
they are woken at once, across processes they poll it (every `poll_interval`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence

from wyvern.nb.store import (
    Batch,
    Compare,
    Delete,
    Event,
    Gap,
    KeyValue,
    ListResult,
    Put,
    Store,
    StoreError,
    TxnResult,
    Watch,
    net_effect,
    prefix_end,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
    deleted INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


class SqliteStore(Store):
    def __init__(
        self,
        path: str,
        history: int = 500_000,
        poll_interval: float = 0.01,
    ) -> None:
        """history: how many revisions of change log to keep (older ones are compacted)."""
        self.path = path
        self.history = history
        self.poll_interval = poll_interval
        self.doorbell_poll = poll_interval  # (commits of other processes ring no bell)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._cond = threading.Condition()
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        conn = self._conn()
        conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def get(self, key: str) -> KeyValue | None:
        row = (
            self._conn()
            .execute(
                "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key = ?", (key,)
            )
            .fetchone()
        )
        return KeyValue(*row) if row else None

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        conn = self._conn()
        cols = (
            "key, x'', create_rev, mod_rev, version"
            if keys_only
            else "key, value, create_rev, mod_rev, version"
        )
        conn.execute("BEGIN")
        try:
            rev = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
            end = prefix_end(prefix)
            if end:
                rows = conn.execute(
                    f"SELECT {cols} FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, end),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {cols} FROM kv WHERE key >= ? ORDER BY key", (prefix,)
                ).fetchall()
        finally:
            conn.execute("COMMIT")
        return ListResult(rev, [KeyValue(*r) for r in rows])

    def txn(
        self,
        compares: Sequence[Compare],
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"sqlite store busy: {exc}") from exc
        try:
            result = self._apply(conn, compares, puts, deletes)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if result.succeeded:
            with self._cond:
                self._cond.notify_all()
                self.ring()
        return result

    def _apply(
        self,
        conn: sqlite3.Connection,
        compares: Sequence[Compare],
        puts: Sequence[Put],
        deletes: Sequence[Delete],
    ) -> TxnResult:
        rev: int = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
        failed: list[int] = []
        for i, c in enumerate(compares):
            row = conn.execute(
                "SELECT key, value, create_rev, mod_rev, version FROM kv WHERE key = ?", (c.key,)
            ).fetchone()
            if not c.holds(KeyValue(*row) if row else None):
                failed.append(i)
        if failed:
            return TxnResult(False, rev, tuple(failed))
        new = rev + 1
        log: list[tuple[int, int, str, int, bytes]] = []
        final_puts, deleted = net_effect(puts, deletes)
        for p in final_puts:
            conn.execute(
                "INSERT INTO kv VALUES (?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value, mod_rev = excluded.mod_rev, version = version + 1",
                (p.key, p.value, new, new),
            )
            log.append((new, len(log), p.key, 0, p.value))
        for key in deleted:
            if conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                log.append((new, len(log), key, 1, b""))
        if not log:
            return TxnResult(True, rev)
        conn.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)", log)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (new,))
        if self.history and new % 1000 == 0 and new > self.history:
            self._compact(conn, new - self.history)
        return TxnResult(True, new)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        start = start_revision if start_revision > 0 else self.revision() + 1
        return _SqliteWatch(self, prefix, start)

    def revision(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(row[0])

    def compact(self, revision: int) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
            if revision > head:
                raise StoreError(f"cannot compact to future revision {revision}")
            self._compact(conn, revision)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _compact(conn: sqlite3.Connection, revision: int) -> None:
        conn.execute("DELETE FROM log WHERE rev < ?", (revision,))
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'", (revision,))

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()


class _SqliteWatch(Watch):
    def __init__(self, store: SqliteStore, prefix: str, start: int) -> None:
        self._store = store
        self._prefix = prefix
        self._end = prefix_end(prefix) or "\U0010ffff" * 64
        self._next_rev = start
        self._pending: deque[Batch] = deque()
        self._closed = False
        self._done = False
        # A private connection: the watch may be read from any thread.
        self._conn = sqlite3.connect(
            store.path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout=60000")
        # Held while the connection is in use, so close() never closes it mid-query.
        self._lock = threading.Lock()

    def _poll(self) -> Gap | None:
        with self._lock:
            if self._closed:
                return None
            return self._poll_locked()

    def _poll_locked(self) -> Gap | None:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            compacted = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()[
                0
            ]
            if self._next_rev < compacted:
                return Gap(compacted)
            rows = conn.execute(
                "SELECT rev, key, deleted, value FROM log WHERE rev >= ? AND key >= ? AND key < ?"
                " ORDER BY rev, seq",
                (self._next_rev, self._prefix, self._end),
            ).fetchall()
            head = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
        finally:
            conn.execute("COMMIT")
        current: list[Event] = []
        for rev, key, deleted, value in rows:
            if current and current[0].revision != rev:
                self._pending.append(Batch(current[0].revision, tuple(current)))
                current = []
            current.append(Event("delete" if deleted else "put", key, value, rev))
        if current:
            self._pending.append(Batch(current[0].revision, tuple(current)))
        self._next_rev = max(self._next_rev, head + 1)
        return None

    def next(self, timeout: float | None = None) -> Batch | Gap | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed and not self._done:
            if self._pending:
                return self._pending.popleft()
            gap = self._poll()
            if gap is not None:
                self._done = True
                return gap
            if self._pending:
                return self._pending.popleft()
            wait = self._store.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            with self._store._cond:
                self._store._cond.wait(wait)
        return None

    def close(self) -> None:
        self._closed = True
        with self._store._cond:
            self._store._cond.notify_all()
        with self._lock:
            self._conn.close()
