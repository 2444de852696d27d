"""Leases, run against every backend (memory, SQLite, etcd) via the `store` fixture.

A leased key dies with its lease: on expiry or revoke the store deletes it with ordinary
delete events that an open watch sees in revision order, while keepalives make no event.
Deadlines are generous; nothing asserts how fast anything happens.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.nb.test_store_behaviour import WAIT, assert_quiet, collect, put, run_script
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import (
    Batch,
    Compare,
    Delete,
    Event,
    KeyValue,
    Put,
    Store,
    StoreError,
    Watch,
    absent,
)

SHORT = 1.0  # etcd grants whole seconds; 1 s is its minimum under our launcher's timing


def next_batch(watch: Watch, timeout: float = WAIT) -> Batch:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        item = watch.next(timeout=left)
        if item is not None:
            assert isinstance(item, Batch), item
            return item
    raise AssertionError("no batch before the deadline")


def test_leased_key_lives_while_kept_alive(store: Store) -> None:
    ttl = 2.0
    lease = store.grant(ttl)
    assert lease > 0
    rev = store.txn([], [Put("/la/k", b"alive", lease=lease)]).revision
    watch = store.watch("/la/", rev + 1)
    until = time.monotonic() + 3 * ttl
    while time.monotonic() < until:
        assert store.keepalive(lease)
        time.sleep(ttl / 8)
    assert store.get("/la/k") == KeyValue("/la/k", b"alive", rev, rev, 1, lease)
    (kv,) = store.list("/la/", keys_only=True).items
    assert kv == KeyValue("/la/k", b"", rev, rev, 1, lease)
    assert_quiet(watch, store, "/la/")  # keepalives made no event
    watch.close()
    store.revoke(lease)


def test_expiry_deletes_keys_in_revision_order(store: Store) -> None:
    watch = store.watch("/le/", 0)
    lease = store.grant(SHORT)
    put_rev = store.txn(
        [],
        [Put("/le/b", b"2", lease=lease), Put("/le/a", b"1", lease=lease), Put("/le/c", b"3")],
    ).revision
    first = next_batch(watch)
    assert first.revision == put_rev and len(first.events) == 3
    # Nobody writes now: the store itself must delete the keys once the lease runs out.
    second = next_batch(watch, timeout=WAIT + SHORT)
    assert second.revision > put_rev
    assert second.events == (
        Event("delete", "/le/a", b"", second.revision),
        Event("delete", "/le/b", b"", second.revision),
    )
    assert store.get("/le/a") is None and store.get("/le/b") is None
    assert [kv.key for kv in store.list("/le/").items] == ["/le/c"]
    assert store.revision() >= second.revision
    assert not store.keepalive(lease)
    store.revoke(lease)  # already gone: not an error
    assert_quiet(watch, store, "/le/")
    watch.close()


def test_doorbell_hears_expiry(store: Store) -> None:
    """A reader multiplexing watches on a doorbell (Sync.pump) learns of an expiry too."""
    bell = threading.Event()
    store.add_doorbell(bell)
    watch = store.watch("/lb/", 0)
    try:
        lease = store.grant(SHORT)
        store.txn([], [Put("/lb/k", b"", lease=lease)])
        events: list[Event] = []
        deadline = time.monotonic() + WAIT + SHORT
        while not any(e.type == "delete" for e in events):
            left = deadline - time.monotonic()
            assert left > 0, f"no delete before the deadline: {events}"
            poll = store.doorbell_poll
            bell.wait(left if poll is None else min(left, poll))
            bell.clear()
            while (item := watch.next(timeout=0)) is not None:
                assert isinstance(item, Batch)
                events.extend(item.events)
        assert [(e.type, e.key) for e in events] == [("put", "/lb/k"), ("delete", "/lb/k")]
    finally:
        store.remove_doorbell(bell)
        watch.close()


def test_revoke_deletes_at_once_in_one_revision(store: Store) -> None:
    lease = store.grant(60)
    other = store.grant(60)
    store.txn(
        [],
        [
            Put("/lr/x", b"", lease=lease),
            Put("/lr/y", b"", lease=lease),
            Put("/lr/z", b"", lease=other),
        ],
    )
    watch = store.watch("/lr/", 0)
    before = store.revision()
    store.revoke(lease)
    assert store.get("/lr/x") is None and store.get("/lr/y") is None
    assert store.revision() == before + 1
    assert collect(watch, before + 1) == [
        Batch(
            before + 1,
            (Event("delete", "/lr/x", b"", before + 1), Event("delete", "/lr/y", b"", before + 1)),
        )
    ]
    assert not store.keepalive(lease)
    assert store.keepalive(other)
    assert store.get("/lr/z") is not None
    store.revoke(lease)  # twice: not an error
    store.revoke(other)
    assert store.list("/lr/").items == []
    watch.close()


def test_put_with_unknown_lease_applies_nothing(store: Store) -> None:
    gone = store.grant(60)
    store.revoke(gone)
    put(store, "/lu/old", b"old")
    before = store.revision()
    with pytest.raises(StoreError, match="lease not found"):
        store.txn(
            [absent("/lu/new")],
            [Put("/lu/new", b"x"), Put("/lu/leased", b"x", lease=gone)],
            [Delete("/lu/old")],
        )
    assert store.revision() == before
    assert store.get("/lu/new") is None and store.get("/lu/leased") is None
    assert store.get("/lu/old") is not None
    # As in etcd, the lease is only checked on the branch that runs: failed guards win.
    result = store.txn([Compare("/lu/old", "version", "==", 7)], [Put("/lu/x", b"", lease=gone)])
    assert not result.succeeded and result.failed == (0,)


def test_put_without_lease_detaches(store: Store) -> None:
    lease = store.grant(60)
    store.txn([], [Put("/ld/keep", b"1", lease=lease), Put("/ld/drop", b"1", lease=lease)])
    store.txn([], [Put("/ld/keep", b"2")])
    kv = store.get("/ld/keep")
    assert kv is not None and kv.lease == 0 and kv.version == 2
    drop = store.get("/ld/drop")
    assert drop is not None and drop.lease == lease
    store.revoke(lease)
    assert [kv.key for kv in store.list("/ld/").items] == ["/ld/keep"]


def test_revoking_a_lease_whose_keys_are_gone_makes_no_revision(store: Store) -> None:
    lease = store.grant(60)
    store.txn([], [Put("/lg/k", b"", lease=lease)])
    rev = store.txn([], deletes=[Delete("/lg/k")]).revision
    store.revoke(lease)
    assert store.revision() == rev
    assert not store.keepalive(lease)


def test_lease_zero_is_no_lease(store: Store) -> None:
    """0 means "no lease" in a Put: revoking or keeping it alive touches no key."""
    rev = put(store, "/lz/k").revision
    store.revoke(0)
    assert not store.keepalive(0)
    assert store.get("/lz/k") is not None and store.revision() == rev


def test_grant_refuses_a_non_positive_ttl(store: Store) -> None:
    with pytest.raises(ValueError):
        store.grant(0)


# --- SQLite: several processes on one file --------------------------------------------------


def test_sqlite_keepalive_from_another_store_and_expiry_seen_by_it(tmp_path: Path) -> None:
    """Two stores on one file stand for two processes: leases and expiry cross between them."""
    path = str(tmp_path / "shared.db")
    a, b = SqliteStore(path), SqliteStore(path)
    ttl = 2.0
    try:
        lease = a.grant(ttl)
        rev = a.txn([], [Put("/lx/k", b"", lease=lease)]).revision
        watches = [a.watch("/lx/", rev + 1), b.watch("/lx/", rev + 1)]
        until = time.monotonic() + 2 * ttl
        while time.monotonic() < until:
            assert b.keepalive(lease)
            time.sleep(ttl / 8)
        assert a.get("/lx/k") is not None
        # Keepalives stop and nobody writes: the polling watches race to reap the lease,
        # and both see the one delete.
        gone = Batch(rev + 1, (Event("delete", "/lx/k", b"", rev + 1),))
        assert [next_batch(w, timeout=WAIT + ttl) for w in watches] == [gone, gone]
        assert a.get("/lx/k") is None
        assert not a.keepalive(lease)
        sentinel = put(b, "/lx/~sentinel").revision
        for w in watches:
            assert [x.revision for x in collect(w, sentinel)] == [sentinel]  # nothing more
            w.close()
    finally:
        a.close()
        b.close()


_GRANTER = """
import sys
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Put
store = SqliteStore(sys.argv[1])
lease = store.grant(float(sys.argv[2]))
print(store.txn([], [Put("/lp/k", b"v", lease=lease)]).revision, lease)
store.close()
"""


def test_sqlite_lease_of_an_exited_process_expires(tmp_path: Path) -> None:
    """The granting process is gone and nobody writes: a watch elsewhere reaps and sees it."""
    path = str(tmp_path / "shared.db")
    store = SqliteStore(path)
    try:
        watch = store.watch("/lp/", 0)
        proc = run_script(_GRANTER, path, str(SHORT))
        assert proc.returncode == 0, proc.stderr.decode()
        put_rev, lease = map(int, proc.stdout.split())
        assert next_batch(watch) == Batch(put_rev, (Event("put", "/lp/k", b"v", put_rev),))
        gone = next_batch(watch, timeout=WAIT + SHORT)
        assert gone == Batch(put_rev + 1, (Event("delete", "/lp/k", b"", put_rev + 1),))
        assert not store.keepalive(lease)
        watch.close()
    finally:
        store.close()


# The schema before leases, as files made by earlier versions have it.
_OLD_SCHEMA = """
CREATE TABLE kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE log (
    rev INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
    deleted INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('revision', 1), ('compacted', 0);
INSERT INTO kv VALUES ('/old/k', x'6f6c64', 1, 1, 1);
INSERT INTO log VALUES (1, 0, '/old/k', 0, x'6f6c64');
"""


def test_sqlite_migrates_a_file_from_before_leases(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.close()
    first, second = SqliteStore(path), SqliteStore(path)  # the second finds it migrated
    try:
        assert first.get("/old/k") == KeyValue("/old/k", b"old", 1, 1, 1, 0)
        assert first.revision() == 1
        watch = second.watch("/old/", 1)
        assert next_batch(watch) == Batch(1, (Event("put", "/old/k", b"old", 1),))
        lease = first.grant(60)
        rev = first.txn([], [Put("/old/k", b"new", lease=lease)]).revision
        assert second.get("/old/k") == KeyValue("/old/k", b"new", 1, rev, 2, lease)
        second.revoke(lease)
        assert first.get("/old/k") is None
        assert [b.revision for b in collect(watch, rev + 1)] == [rev, rev + 1]
        watch.close()
    finally:
        first.close()
        second.close()
