"""The embedded store: one SQLite file (WAL) with etcd's revision and watch semantics.

Every write transaction takes the database's write lock (BEGIN IMMEDIATE), checks its
guards, applies its changes, bumps the global revision and appends the changes to a
log table, all in one SQLite transaction. Watchers read the log: in the same process
they are woken at once, across processes they poll it (every `poll_interval`).

Leases live in a table with wall-clock expiries (the processes sharing the file share the
clock), and meta's `lease_expiry` holds the earliest one, kept exact by every write to the
leases table. Whoever uses the store (a watch poll, a read, a write) compares that number
(reads keep it in memory, re-read at most every `poll_interval`) with the clock and, when
it is due, reaps: a write transaction that deletes the keys of each expired lease in a
revision of its own. Reapers racing on the same lease are harmless: they are serialized by
the write lock and the later one finds nothing due.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

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

_NEVER = 10**18  # lease_expiry when there is no lease

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
    deleted INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- AUTOINCREMENT: an id is never reused, so a stale holder cannot keep a new lease alive.
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0), ('lease_expiry', {_NEVER});
"""
_KV = "key, value, create_rev, mod_rev, version, lease"
_POLL_META = (
    "SELECT (SELECT value FROM meta WHERE name = 'compacted'),"
    " (SELECT value FROM meta WHERE name = 'revision'),"
    " (SELECT value FROM meta WHERE name = 'lease_expiry')"
)

T = TypeVar("T")


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
        # meta's lease_expiry as last read, and when (monotonic): a read of this process
        # only compares the clock with it, re-reading it at most every poll_interval.
        self._expiry: float = 0.0
        self._expiry_read_at = -float("inf")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        conn = self._conn()
        conn.executescript(_SCHEMA)
        self._write(self._migrate)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> tuple[None, bool]:
        """Bring a file made before leases up to date (in a write transaction, so two
        processes opening it at once do not both add the column)."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(kv)")}
        if "lease" not in columns:
            conn.execute("ALTER TABLE kv ADD COLUMN lease INTEGER NOT NULL DEFAULT 0")
        conn.execute("CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0")
        return None, False

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

    def _write(self, fn: Callable[[sqlite3.Connection], tuple[T, bool]]) -> T:
        """Run fn in a write transaction; fn says whether it made a new revision."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"sqlite store busy: {exc}") from exc
        try:
            result, changed = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if changed:
            with self._cond:
                self._cond.notify_all()
                self.ring()
        return result

    def _reap(self) -> None:
        self._write(lambda conn: (None, self._expire(conn)))

    def _note_expiry(self, expiry: float) -> None:
        self._expiry, self._expiry_read_at = expiry, time.monotonic()

    def _reap_if_due(self, conn: sqlite3.Connection) -> None:
        """Reap if a lease is due; the number is ours, or re-read if older than a poll."""
        if time.monotonic() - self._expiry_read_at >= self.poll_interval:
            row = conn.execute("SELECT value FROM meta WHERE name = 'lease_expiry'").fetchone()
            self._note_expiry(row[0])
        if time.time() >= self._expiry:
            self._reap()

    def _expire(self, conn: sqlite3.Connection) -> bool:
        """End every lease that is due (in a write transaction); True if a key went."""
        now = time.time()
        row = conn.execute("SELECT value FROM meta WHERE name = 'lease_expiry'").fetchone()
        if now < row[0]:
            self._note_expiry(row[0])
            return False
        due = conn.execute(
            "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id", (now,)
        ).fetchall()
        changed = False
        for (lease,) in due:
            changed |= self._end_lease(conn, lease)
        self._update_expiry(conn)
        return changed

    def _end_lease(self, conn: sqlite3.Connection, lease: int) -> bool:
        """Drop a lease and delete its keys in one revision (sorted, as etcd's lessor)."""
        conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
        # "AND lease != 0" lets SQLite use the partial index kv_lease.
        keys = conn.execute(
            "SELECT key FROM kv WHERE lease = ? AND lease != 0 ORDER BY key", (lease,)
        ).fetchall()
        if not keys:
            return False
        rev = self._head(conn) + 1
        conn.execute("DELETE FROM kv WHERE lease = ? AND lease != 0", (lease,))
        self._publish(conn, rev, [(rev, i, key, 1, b"") for i, (key,) in enumerate(keys)])
        return True

    def _update_expiry(self, conn: sqlite3.Connection) -> None:
        """Set lease_expiry to the earliest expiry (the leases table has just changed)."""
        row = conn.execute("SELECT coalesce(min(expires_at), ?) FROM leases", (_NEVER,)).fetchone()
        conn.execute("UPDATE meta SET value = ? WHERE name = 'lease_expiry'", row)
        self._note_expiry(row[0])

    @staticmethod
    def _head(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])

    def _publish(
        self, conn: sqlite3.Connection, new: int, log: list[tuple[int, int, str, int, bytes]]
    ) -> None:
        """Append one revision's changes to the log and make it the current revision."""
        conn.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)", log)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (new,))
        if self.history and new % 1000 == 0 and new > self.history:
            self._compact(conn, new - self.history)

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ValueError(f"a lease needs a positive TTL, not {ttl}")

        def grant(conn: sqlite3.Connection) -> tuple[int, bool]:
            changed = self._expire(conn)
            expires_at = time.time() + ttl
            cur = conn.execute(
                "INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, expires_at)
            )
            self._update_expiry(conn)
            assert cur.lastrowid is not None
            return cur.lastrowid, changed

        return self._write(grant)

    def keepalive(self, lease: int) -> bool:
        def keepalive(conn: sqlite3.Connection) -> tuple[bool, bool]:
            changed = self._expire(conn)
            row = conn.execute("SELECT ttl FROM leases WHERE id = ?", (lease,)).fetchone()
            if row is None:
                return False, changed
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE id = ?", (time.time() + row[0], lease)
            )
            self._update_expiry(conn)
            return True, changed

        return self._write(keepalive)

    def revoke(self, lease: int) -> None:
        def revoke(conn: sqlite3.Connection) -> tuple[None, bool]:
            changed = self._expire(conn)
            changed |= self._end_lease(conn, lease)
            self._update_expiry(conn)
            return None, changed

        self._write(revoke)

    def get(self, key: str) -> KeyValue | None:
        conn = self._conn()
        self._reap_if_due(conn)
        row = conn.execute(f"SELECT {_KV} FROM kv WHERE key = ?", (key,)).fetchone()
        return KeyValue(*row) if row else None

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        conn = self._conn()
        cols = "key, x'', create_rev, mod_rev, version, lease" if keys_only else _KV
        self._reap_if_due(conn)
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
        def txn(conn: sqlite3.Connection) -> tuple[TxnResult, bool]:
            reaped = self._expire(conn)  # expired keys are gone before the guards look
            result = self._apply(conn, compares, puts, deletes)
            return result, reaped or result.succeeded

        return self._write(txn)

    def _apply(
        self,
        conn: sqlite3.Connection,
        compares: Sequence[Compare],
        puts: Sequence[Put],
        deletes: Sequence[Delete],
    ) -> TxnResult:
        rev = self._head(conn)
        failed: list[int] = []
        for i, c in enumerate(compares):
            row = conn.execute(f"SELECT {_KV} FROM kv WHERE key = ?", (c.key,)).fetchone()
            if not c.holds(KeyValue(*row) if row else None):
                failed.append(i)
        if failed:
            return TxnResult(False, rev, tuple(failed))
        new = rev + 1
        log: list[tuple[int, int, str, int, bytes]] = []
        final_puts, deleted = net_effect(puts, deletes)
        for lease in {p.lease for p in final_puts if p.lease}:
            if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
                raise StoreError(f"requested lease not found: {lease}")
        for p in final_puts:
            conn.execute(
                f"INSERT INTO kv ({_KV}) VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET"
                " value = excluded.value, mod_rev = excluded.mod_rev, version = version + 1,"
                " lease = excluded.lease",
                (p.key, p.value, new, new, p.lease),
            )
            log.append((new, len(log), p.key, 0, p.value))
        for key in deleted:
            if conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                log.append((new, len(log), key, 1, b""))
        if not log:
            return TxnResult(True, rev)
        self._publish(conn, new, log)
        return TxnResult(True, new)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        start = start_revision if start_revision > 0 else self.revision() + 1
        return _SqliteWatch(self, prefix, start)

    def revision(self) -> int:
        conn = self._conn()
        self._reap_if_due(conn)
        return self._head(conn)

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
        reaped = False
        while True:
            conn.execute("BEGIN")
            try:
                compacted, head, expiry = conn.execute(_POLL_META).fetchone()
                self._store._note_expiry(expiry)
                due = not reaped and time.time() >= expiry
                if not due:
                    if self._next_rev < compacted:
                        return Gap(compacted)
                    rows = conn.execute(
                        "SELECT rev, key, deleted, value FROM log"
                        " WHERE rev >= ? AND key >= ? AND key < ? ORDER BY rev, seq",
                        (self._next_rev, self._prefix, self._end),
                    ).fetchall()
            finally:
                conn.execute("COMMIT")
            if not due:
                break
            # A lease is due and nobody may be writing: reap it here, then read its deletes.
            self._store._reap()
            reaped = True
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
