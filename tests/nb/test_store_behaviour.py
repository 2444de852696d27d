"""The Store contract, run against every backend (memory, SQLite, etcd) via the `store` fixture.

Tests never assume where revisions start (a shared etcd keeps counting across tests); they
only rely on differences and on the revisions the store itself returns.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import (
    Batch,
    Compare,
    Delete,
    Event,
    Gap,
    KeyValue,
    Put,
    Store,
    TxnResult,
    Watch,
    absent,
    unchanged,
)

REPO = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run a Python snippet in another process (another store user), with this repo first
    on its path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


WAIT = 15.0  # upper bound for any single watch delivery


def put(store: Store, key: str, value: bytes = b"v") -> TxnResult:
    result = store.txn([], [Put(key, value)])
    assert result.succeeded
    return result


def collect(watch: Watch, until: int, timeout: float = WAIT) -> list[Batch]:
    """Every batch up to and including the one at revision `until`."""
    batches: list[Batch] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"watch stalled before revision {until}; got {batches}"
        item = watch.next(timeout=left)
        if item is None:
            continue
        assert isinstance(item, Batch), f"unexpected {item}"
        batches.append(item)
        if item.revision >= until:
            assert item.revision == until, f"overshot revision {until}: {batches}"
            return batches


def assert_quiet(watch: Watch, store: Store, prefix: str) -> None:
    """Nothing is pending on the watch: the next batch is the sentinel written now."""
    sentinel = put(store, prefix + "~sentinel").revision
    batches = collect(watch, sentinel)
    assert [b.revision for b in batches] == [sentinel], batches


# --- get / list ---------------------------------------------------------------------------


def test_get_absent_then_present(store: Store) -> None:
    assert store.get("/k") is None
    rev = put(store, "/k", b"hello").revision
    assert store.get("/k") == KeyValue("/k", b"hello", rev, rev, 1)
    assert store.revision() == rev


def test_list_prefix_boundaries_and_order(store: Store) -> None:
    keys = ["/a", "/a/", "/a/1", "/a/2/x", "/a/\u00e9", "/a/\U0001f600", "/a0", "/ab", "/b/1"]
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    for k in shuffled:
        put(store, k, k.encode())
    listed = store.list("/a/")
    assert [kv.key for kv in listed.items] == [
        "/a/",
        "/a/1",
        "/a/2/x",
        "/a/\u00e9",
        "/a/\U0001f600",
    ]
    assert all(kv.value == kv.key.encode() for kv in listed.items)
    assert listed.revision == store.revision()
    assert [kv.key for kv in store.list("/a").items] == keys[:-1]
    assert [kv.key for kv in store.list("/b/").items] == ["/b/1"]
    assert store.list("/c").items == []
    assert store.list("/a/1").items == [store.get("/a/1")]


def test_list_prefix_ending_in_non_ascii(store: Store) -> None:
    for k in [
        "/n\u00e9",
        "/n\u00e9/1",
        "/n\u00e9a",
        "/n\u00e8",
        "/n\u00ea",
        "/nf",
        "/\u00e9t\u00e9",
    ]:
        put(store, k)
    assert [kv.key for kv in store.list("/n\u00e9").items] == [
        "/n\u00e9",
        "/n\u00e9/1",
        "/n\u00e9a",
    ]
    assert [kv.key for kv in store.list("/\u00e9").items] == ["/\u00e9t\u00e9"]


def test_list_empty_prefix_is_everything(store: Store) -> None:
    for k in ["/x/1", "/y", "z"]:
        put(store, k)
    assert [kv.key for kv in store.list("").items] == ["/x/1", "/y", "z"]


def test_list_keys_only(store: Store) -> None:
    rev = put(store, "/p/1", b"big value").revision
    (kv,) = store.list("/p/", keys_only=True).items
    assert kv == KeyValue("/p/1", b"", rev, rev, 1)


# --- transactions ---------------------------------------------------------------------------


def test_failed_txn_changes_nothing(store: Store) -> None:
    put(store, "/t/x", b"old")
    before = store.revision()
    watch = store.watch("/t/", 0)
    result = store.txn(
        [absent("/t/y"), absent("/t/x")],
        [Put("/t/y", b"new"), Put("/t/z", b"new")],
        [Delete("/t/x")],
    )
    assert result == TxnResult(False, before, (1,))
    assert store.revision() == before
    assert store.get("/t/y") is None
    assert store.get("/t/z") is None
    assert store.get("/t/x") is not None and store.get("/t/x").value == b"old"  # type: ignore[union-attr]
    assert_quiet(watch, store, "/t/")
    watch.close()


def test_failed_indexes(store: Store) -> None:
    rev = put(store, "/f/a", b"m").revision
    result = store.txn(
        [
            absent("/f/none"),  # holds
            Compare("/f/a", "value", "==", b"wrong"),  # fails
            Compare("/f/a", "version", "==", 1),  # holds
            Compare("/f/a", "mod", "<", rev),  # fails
            unchanged("/f/a", rev),  # holds
            absent("/f/a"),  # fails
        ],
        [Put("/f/b", b"x")],
    )
    assert not result.succeeded
    assert result.failed == (1, 3, 5)
    assert result.revision == rev
    assert store.get("/f/b") is None


def _compare_table(key: str) -> list[Compare]:
    table: list[Compare] = []
    for op in ("==", "!=", "<", ">"):
        for operand in (b"", b"a", b"m", b"z"):
            table.append(Compare(key, "value", op, operand))
        for target in ("version", "create", "mod"):
            for num in (0, 1, 10**9):
                table.append(Compare(key, target, op, num))
    # Mismatched operand types never hold.
    table.append(Compare(key, "value", "==", 0))
    table.append(Compare(key, "version", "==", b""))
    return table


@pytest.mark.parametrize("state", ["absent", "present"])
def test_compares_follow_reference_semantics(store: Store, state: str) -> None:
    """Every target/op/operand combination agrees with Compare.holds, absent or present."""
    key = "/cmp/k"
    if state == "present":
        put(store, key, b"m")
    table = _compare_table(key)
    kv = store.get(key)
    for c in table:
        result = store.txn([c], [Put("/cmp/probe", b"x")], [Delete("/cmp/probe")])
        assert result.succeeded == c.holds(kv), c
        assert result.failed == (() if c.holds(kv) else (0,)), c
    # All at once: exactly the ones that do not hold are reported, in order.
    result = store.txn(table, [Put("/cmp/other", b"x")])
    expected = tuple(i for i, c in enumerate(table) if not c.holds(kv))
    assert result.failed == expected
    assert store.get(key) == kv


def test_create_if_absent_is_unique(store: Store) -> None:
    first = store.txn([absent("/u/name")], [Put("/u/name", b"first")])
    second = store.txn([absent("/u/name")], [Put("/u/name", b"second")])
    assert first.succeeded
    assert second == TxnResult(False, first.revision, (0,))
    kv = store.get("/u/name")
    assert kv is not None and kv.value == b"first" and kv.version == 1


def test_per_key_revisions_and_versions(store: Store) -> None:
    r1 = put(store, "/v/k", b"1").revision
    assert store.get("/v/k") == KeyValue("/v/k", b"1", r1, r1, 1)
    r2 = put(store, "/v/other").revision
    r3 = put(store, "/v/k", b"2").revision
    assert r1 < r2 < r3
    assert store.get("/v/k") == KeyValue("/v/k", b"2", r1, r3, 2)
    assert store.get("/v/other") == KeyValue("/v/other", b"v", r2, r2, 1)
    r4 = store.txn([unchanged("/v/k", r3)], deletes=[Delete("/v/k")]).revision
    assert store.get("/v/k") is None
    r5 = put(store, "/v/k", b"3").revision
    assert r5 == r4 + 1
    assert store.get("/v/k") == KeyValue("/v/k", b"3", r5, r5, 1)  # a new life: version 1


def test_revision_bumps_once_per_successful_write(store: Store) -> None:
    r0 = store.revision()
    result = store.txn([], [Put("/r/a", b"1"), Put("/r/b", b"2"), Put("/r/c", b"3")])
    assert result == TxnResult(True, r0 + 1)
    assert store.revision() == r0 + 1
    assert {kv.mod_revision for kv in store.list("/r/").items} == {r0 + 1}
    assert not store.txn([absent("/r/a")], [Put("/r/d", b"")]).succeeded
    assert store.revision() == r0 + 1
    # A txn that changes nothing succeeds without a new revision (as in etcd).
    assert store.txn([absent("/r/none")]) == TxnResult(True, r0 + 1)
    assert store.txn([], deletes=[Delete("/r/none")]) == TxnResult(True, r0 + 1)
    r2 = store.txn([], [Put("/r/a", b"x")], [Delete("/r/b")]).revision
    assert r2 == r0 + 2 == store.revision()


def test_delete(store: Store) -> None:
    put(store, "/d/a", b"1")
    put(store, "/d/b", b"2")
    watch = store.watch("/d/", 0)
    rev = store.txn([], deletes=[Delete("/d/a"), Delete("/d/missing")]).revision
    assert store.get("/d/a") is None
    assert [kv.key for kv in store.list("/d/").items] == ["/d/b"]
    (batch,) = collect(watch, rev)
    assert batch == Batch(rev, (Event("delete", "/d/a", b"", rev),))
    watch.close()


def test_same_key_twice_in_one_txn(store: Store) -> None:
    """Net effect per key: the last put wins, a delete beats a put; one event, version +1."""
    put(store, "/s/old", b"0")
    watch = store.watch("/s/", 0)
    result = store.txn(
        [],
        [Put("/s/k", b"1"), Put("/s/k", b"2"), Put("/s/old", b"x"), Put("/s/gone", b"x")],
        [Delete("/s/old"), Delete("/s/gone"), Delete("/s/old")],
    )
    rev = result.revision
    assert result.succeeded
    assert store.get("/s/k") == KeyValue("/s/k", b"2", rev, rev, 1)
    assert store.get("/s/old") is None
    assert store.get("/s/gone") is None
    (batch,) = collect(watch, rev)
    assert batch == Batch(
        rev, (Event("put", "/s/k", b"2", rev), Event("delete", "/s/old", b"", rev))
    )
    watch.close()


# --- watches -----------------------------------------------------------------------------


def _random_txns(
    store: Store, prefix: str, count: int, seed: int
) -> list[tuple[int, tuple[Event, ...]]]:
    """Apply `count` random writes (inside and outside prefix); the batches prefix should see."""
    rng = random.Random(seed)
    model: dict[str, bytes] = {}
    expected: list[tuple[int, tuple[Event, ...]]] = []
    pool = [f"{prefix}{i}" for i in range(8)] + [f"/elsewhere/{i}" for i in range(4)]
    for n in range(count):
        keys = rng.sample(pool, rng.randint(1, 4))
        split = rng.randint(0, len(keys))
        puts = [Put(k, f"{n}".encode()) for k in keys[:split]]
        deletes = [Delete(k) for k in keys[split:]]
        result = store.txn([], puts, deletes)
        assert result.succeeded
        events = [Event("put", p.key, p.value, result.revision) for p in puts]
        events += [Event("delete", d.key, b"", result.revision) for d in deletes if d.key in model]
        for p in puts:
            model[p.key] = p.value
        for d in deletes:
            model.pop(d.key, None)
        mine = tuple(e for e in events if e.key.startswith(prefix))
        if mine:
            expected.append((result.revision, mine))
    return expected


def test_watch_delivers_every_batch_in_order(store: Store) -> None:
    watch = store.watch("/w/", 0)
    expected = _random_txns(store, "/w/", 60, seed=7)
    sentinel = put(store, "/w/end").revision
    batches = collect(watch, sentinel)
    assert [(b.revision, b.events) for b in batches[:-1]] == expected
    revisions = [b.revision for b in batches]
    assert revisions == sorted(set(revisions))
    watch.close()


def test_watch_replays_random_history_exactly(store: Store) -> None:
    first = store.revision() + 1
    expected = _random_txns(store, "/w/", 60, seed=11)
    watch = store.watch("/w/", first)
    batches = collect(watch, expected[-1][0])
    assert [(b.revision, b.events) for b in batches] == expected
    watch.close()


def test_list_is_one_snapshot_under_concurrent_writes(store: Store) -> None:
    """A token moves between two keys in single txns: every list sees exactly one of them."""
    put(store, "/m/a", b"token")
    stop = threading.Event()
    errors: list[BaseException] = []

    def mover() -> None:
        try:
            src, dst = "/m/a", "/m/b"
            while not stop.is_set():
                assert store.txn([absent(dst)], [Put(dst, b"token")], [Delete(src)]).succeeded
                src, dst = dst, src
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=mover)
    thread.start()
    try:
        for _ in range(200):
            listed = store.list("/m/")
            assert len(listed.items) == 1, listed
            assert listed.items[0].mod_revision <= listed.revision
    finally:
        stop.set()
        thread.join(timeout=WAIT)
    assert not errors, errors


def test_watch_prefix_does_not_match_siblings(store: Store) -> None:
    watch = store.watch("/a/", 0)
    put(store, "/ab")
    put(store, "/a")
    put(store, "/a0")
    rev = put(store, "/a/1").revision
    (batch,) = collect(watch, rev)
    assert batch.events == (Event("put", "/a/1", b"v", rev),)
    watch.close()


def test_watch_from_now_skips_the_past(store: Store) -> None:
    put(store, "/n/old")
    watch = store.watch("/n/", 0)
    rev = put(store, "/n/new").revision
    (batch,) = collect(watch, rev)
    assert [e.key for e in batch.events] == ["/n/new"]
    watch.close()


def test_watch_replays_history(store: Store) -> None:
    revs = [put(store, f"/h/{i}", str(i).encode()).revision for i in range(10)]
    watch = store.watch("/h/", revs[3])
    later = put(store, "/h/later").revision
    batches = collect(watch, later)
    assert [b.revision for b in batches] == [*revs[3:], later]
    assert [b.events[0].key for b in batches] == [f"/h/{i}" for i in range(3, 10)] + ["/h/later"]
    watch.close()


def test_watch_next_times_out(store: Store) -> None:
    watch = store.watch("/quiet/", 0)
    started = time.monotonic()
    assert watch.next(timeout=0.2) is None
    assert time.monotonic() - started < 5
    watch.close()


def test_watch_close_wakes_a_blocked_reader(store: Store) -> None:
    watch = store.watch("/blocked/", 0)
    returned: list[object] = []
    reader = threading.Thread(target=lambda: returned.append(watch.next(timeout=30)))
    reader.start()
    time.sleep(0.2)
    watch.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert returned == [None]


def test_watch_gap_after_compaction(store: Store) -> None:
    revs = [put(store, f"/g/{i}").revision for i in range(6)]
    store.compact(revs[3])
    with store.watch("/g/", revs[1]) as watch:
        assert watch.next(timeout=WAIT) == Gap(revs[3])
        assert watch.next(timeout=0.1) is None  # finished after the gap
    with store.watch("/g/", revs[3]) as watch:
        assert [b.revision for b in collect(watch, revs[5])] == revs[3:]
    # Compacting again at or below the compacted revision is harmless.
    store.compact(revs[2])
    store.compact(revs[3])


def test_concurrent_create_if_absent_claims(store: Store) -> None:
    keys = [f"/claims/{i:02d}" for i in range(25)]
    threads = 6
    wins: dict[str, list[int]] = {k: [] for k in keys}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    before = store.revision()

    def claim(worker: int) -> None:
        try:
            order = keys[:]
            random.Random(worker).shuffle(order)
            start.wait(timeout=WAIT)
            for k in order:
                result = store.txn([absent(k)], [Put(k, str(worker).encode())])
                if result.succeeded:
                    with lock:
                        wins[k].append(worker)
                else:
                    assert result.failed == (0,)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=claim, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in pool)
    assert not errors, errors
    assert all(len(w) == 1 for w in wins.values()), wins
    for k, (winner,) in wins.items():
        kv = store.get(k)
        assert kv is not None and kv.value == str(winner).encode() and kv.version == 1
    assert store.revision() == before + len(keys)


# --- SQLite across processes ---------------------------------------------------------------

_WRITER = """
import sys
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Put, absent
store = SqliteStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    key = f"/xp/{i:03d}"
    puts = [Put(key, str(i).encode()), Put("/other" + key, b"")]
    assert store.txn([absent(key)], puts).succeeded
store.close()
"""


def test_sqlite_watch_sees_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store: Store = SqliteStore(path)
    count = 30
    try:
        put(store, "/xp/before")
        watch = store.watch("/xp/", 0)
        proc = run_script(_WRITER, path, str(count))
        assert proc.returncode == 0, proc.stderr.decode()
        batches: list[Batch] = []
        deadline = time.monotonic() + WAIT
        while len(batches) < count and time.monotonic() < deadline:
            item = watch.next(timeout=0.5)
            if item is not None:
                assert isinstance(item, Batch)
                batches.append(item)
        assert [b.events for b in batches] == [
            (Event("put", f"/xp/{i:03d}", str(i).encode(), b.revision),)
            for i, b in enumerate(batches)
        ]
        assert len(batches) == count
        revisions = [b.revision for b in batches]
        assert revisions == sorted(set(revisions))
        assert store.revision() == revisions[-1]
        watch.close()
    finally:
        store.close()
