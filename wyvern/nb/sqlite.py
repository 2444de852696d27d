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

Each thread has its own connection (SQLite connections are not shared). It is closed when
the thread ends (anyio retires idle workers after 10 s; keeping their connections leaked
two descriptors each), and dropped when SQLite says the file cannot be written or opened
(read-only, immutable, gone, I/O error, disk full): the call raises `StoreUnavailable` and
the thread's next call opens a fresh connection, so writes recover as soon as the file is
writable again. The database file is not memory-mapped, and every call first checks that
the -shm file (the WAL index, which SQLite writes through a shared mapping) is not
immutable: a write to it would be a SIGBUS.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
    StoreUnavailable,
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

# Primary result codes meaning "the file cannot be written (or opened) now", not a bug:
# SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT (a torn read of a file being
# replaced), SQLITE_FULL, SQLITE_CANTOPEN.
_UNAVAILABLE = {3, 8, 10, 11, 13, 14}


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10


class _Immutable:
    """Whether a file has the immutable attribute (chattr +i), cheaply: an open descriptor
    kept for the ioctl (reopened if the file was deleted), so a check is two syscalls
    without a path lookup. False while the file is absent or the filesystem has no flags.

    The descriptor must stay open while SQLite uses the file: closing any descriptor of a
    file drops every POSIX lock the process holds on it, SQLite's included. It is closed
    only once the file is deleted (nobody uses it) or the store is closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if self._fd >= 0 and os.fstat(self._fd).st_nlink == 0:
                os.close(self._fd)
                self._fd = -1
            if self._fd < 0:
                try:
                    self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:
                    return False
            flags = array.array("l", [0])
            try:
                fcntl.ioctl(self._fd, _FS_IOC_GETFLAGS, flags, True)
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                    return False
                raise
            return bool(flags[0] & _FS_IMMUTABLE_FL)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


class _Slot:
    """A thread's connection, held in its threading.local: when the thread ends the slot
    is dropped and its finalizer closes the connection."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class SqliteStore(Store):
    def __init__(
        self,
        path: str,
        history: int = 500_000,
        poll_interval: float = 0.01,
    ) -> None:
        """history: how many revisions of change log to keep (older ones are compacted)."""
        self.path = path
        self._shm_immutable = _Immutable(f"{path}-shm")
        self.history = history
        self.poll_interval = poll_interval
        self.doorbell_poll = poll_interval  # (commits of other processes ring no bell)
        self._local = threading.local()
        # Every open connection with the thread that owns it, for close() and so that
        # the connections of dead threads are closed even without their finalizer.
        self._conns: dict[sqlite3.Connection, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        self._cond = threading.Condition()
        # meta's lease_expiry as last read, and when (monotonic): a read of this process
        # only compares the clock with it, re-reading it at most every poll_interval.
        self._expiry: float = 0.0
        self._expiry_read_at = -float("inf")
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with self._unavailable():
            self._conn().executescript(_SCHEMA)
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
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is not None:
            return slot.conn
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False
        # only so that close() and the finalizer may close it; one thread uses it.
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA mmap_size=0")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
        except BaseException:
            conn.close()
            raise
        slot = _Slot(conn)
        weakref.finalize(slot, self._forget, weakref.ref(self), conn)
        with self._conns_lock:
            for other, thread in list(self._conns.items()):
                if not thread.is_alive():  # its finalizer has not run (yet)
                    del self._conns[other]
                    _close_quietly(other)
            self._conns[conn] = threading.current_thread()
        self._local.slot = slot
        return conn

    @staticmethod
    def _forget(ref: weakref.ref[SqliteStore], conn: sqlite3.Connection) -> None:
        """Close a connection whose thread has ended (or that was dropped)."""
        store = ref()
        if store is not None:
            with store._conns_lock:
                store._conns.pop(conn, None)
        _close_quietly(conn)

    def _drop_conn(self) -> None:
        """Forget this thread's connection: the next call opens a new one."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        self._local.slot = None
        if slot is not None:
            self._forget(weakref.ref(self), slot.conn)

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Turn "the file cannot be written or opened now" into StoreUnavailable, dropping
        this thread's connection (one opened read-only stays read-only forever).

        SQLite shares the WAL index by writing to a shared mapping of the -shm file; when
        that file is immutable the kernel answers such a write with SIGBUS, which kills the
        process. So every call first refuses if it is (an fstat and an ioctl; only a chattr
        between the check and SQLite's write remains unguarded)."""
        if self._shm_immutable():
            raise StoreUnavailable(f"sqlite store {self.path} unavailable: -shm is immutable")
        try:
            yield
        except sqlite3.Error as exc:
            if _code(exc) not in _UNAVAILABLE:
                raise
            self._drop_conn()
            raise StoreUnavailable(f"sqlite store {self.path} unavailable: {exc}") from exc

    def _write(self, fn: Callable[[sqlite3.Connection], tuple[T, bool]]) -> T:
        """Run fn in a write transaction; fn says whether it made a new revision."""
        with self._unavailable():
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _code(exc) in _UNAVAILABLE:
                    raise  # StoreUnavailable, below
                raise StoreError(f"sqlite store busy: {exc}") from exc
            try:
                result, changed = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
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
        with self._unavailable():
            conn = self._conn()
            self._reap_if_due(conn)
            row = conn.execute(f"SELECT {_KV} FROM kv WHERE key = ?", (key,)).fetchone()
        return KeyValue(*row) if row else None

    def list(self, prefix: str, keys_only: bool = False) -> ListResult:
        with self._unavailable():
            return self._list(prefix, keys_only)

    def _list(self, prefix: str, keys_only: bool) -> ListResult:
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
        with self._unavailable():
            conn = self._conn()
            self._reap_if_due(conn)
            return self._head(conn)

    def compact(self, revision: int) -> None:
        def compact(conn: sqlite3.Connection) -> tuple[None, bool]:
            head = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
            if revision > head:
                raise StoreError(f"cannot compact to future revision {revision}")
            self._compact(conn, revision)
            return None, False

        self._write(compact)

    @staticmethod
    def _compact(conn: sqlite3.Connection, revision: int) -> None:
        conn.execute("DELETE FROM log WHERE rev < ?", (revision,))
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'", (revision,))

    def close(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            _close_quietly(conn)
        self._local = threading.local()
        self._shm_immutable.close()


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
        self._conn.execute("PRAGMA mmap_size=0")
        self._conn.execute("PRAGMA busy_timeout=60000")
        # Held while the connection is in use, so close() never closes it mid-query.
        self._lock = threading.Lock()

    def _poll(self) -> Gap | None:
        with self._lock:
            if self._closed or self._store._shm_immutable():  # see _unavailable
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
