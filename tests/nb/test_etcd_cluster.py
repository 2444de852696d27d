"""EtcdStore against a real 3-member etcd cluster on loopback, losing a member mid-run."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wyvern.nb.etcd import EtcdStore
from wyvern.nb.etcd_server import EtcdServer
from wyvern.nb.store import Batch, Put, StoreError, absent

pytestmark = pytest.mark.system

WRITES = 300
KILL_AFTER = 100  # acknowledged writes before the member in use is killed
STALL_LIMIT = 15.0  # longest any single write may take to get through, kill included


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "cluster", members=3, die_with_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _leader_first(cluster: EtcdServer) -> list[str]:
    """Endpoints with the leader first: the member the client uses is also the raft leader."""
    leader = cluster.leader()
    return [cluster.endpoints[leader]] + [e for i, e in enumerate(cluster.endpoints) if i != leader]


def test_writes_and_watch_survive_killing_the_member_in_use(cluster: EtcdServer) -> None:
    endpoints = _leader_first(cluster)
    store = EtcdStore(endpoints, timeout=5.0)
    assert store.endpoint == endpoints[0]
    watch = store.watch("/c/", 0)

    acked: dict[str, int] = {}  # key -> revision the txn reported
    applied_unacked: list[str] = []  # outcome was unknown; a later read showed it applied
    stalls: list[float] = []
    errors: list[BaseException] = []
    kill_now = threading.Event()

    def writer() -> None:
        try:
            for i in range(WRITES):
                key, token = f"/c/{i:04d}", f"w{i}".encode()
                started = time.monotonic()
                while True:
                    assert time.monotonic() - started < STALL_LIMIT, f"{key} stuck"
                    try:
                        result = store.txn([absent(key)], [Put(key, token)])
                    except StoreError:  # member gone, no leader yet, or outcome unknown
                        time.sleep(0.05)
                        continue
                    if result.succeeded:
                        acked[key] = result.revision
                    else:  # an earlier attempt with an unknown outcome did apply
                        kv = store.get(key)
                        assert kv is not None and kv.value == token, (key, kv)
                        applied_unacked.append(key)
                    break
                stalls.append(time.monotonic() - started)
                if len(acked) == KILL_AFTER:
                    kill_now.set()
        except BaseException as exc:
            errors.append(exc)
            kill_now.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert kill_now.wait(timeout=60)
    victim = cluster.index_of(store.endpoint)  # the leader, unless it already changed
    killed_url = cluster.endpoints[victim]
    cluster.kill(victim)  # SIGKILL while writes are in flight
    killed_at = len(stalls)
    thread.join(timeout=WRITES * STALL_LIMIT)
    assert not thread.is_alive()
    assert not errors, errors
    assert not cluster.members[victim].alive

    # Writes continued: every write after the kill went through, none took too long.
    assert len(stalls) == WRITES
    assert max(stalls[killed_at:]) < STALL_LIMIT
    assert len(acked) + len(applied_unacked) == WRITES
    assert len(acked) > KILL_AFTER
    assert store.endpoint != killed_url

    # Nothing acknowledged was lost.
    listed = store.list("/c/")
    assert [kv.key for kv in listed.items] == [f"/c/{i:04d}" for i in range(WRITES)]
    for kv in listed.items:
        assert kv.value == f"w{int(kv.key[3:])}".encode()
        if kv.key in acked:
            assert kv.mod_revision == acked[kv.key]

    # The watch, opened on the killed member, saw every write exactly once, in order.
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 30
    while len(seen) < WRITES and time.monotonic() < deadline:
        item = watch.next(timeout=1.0)
        if item is None:
            continue
        assert isinstance(item, Batch), item
        for event in item.events:
            assert event.type == "put" and event.revision == item.revision
            seen.append((event.key, event.revision))
    watch.close()
    assert [k for k, _ in seen] == [f"/c/{i:04d}" for i in range(WRITES)]
    revisions = [r for _, r in seen]
    assert revisions == sorted(set(revisions))
    assert all(dict(seen)[k] == r for k, r in acked.items())
    store.close()


def test_requests_skip_a_dead_endpoint(cluster: EtcdServer) -> None:
    seed = EtcdStore(cluster.endpoints)
    rev = seed.txn([absent("/s/k")], [Put("/s/k", b"v")]).revision
    seed.close()
    cluster.kill(0)
    store = EtcdStore(cluster.endpoints, timeout=5.0)  # the dead member is tried first
    try:
        kv = store.get("/s/k")
        assert kv is not None and kv.mod_revision == rev
        assert [kv.key for kv in store.list("/s/").items] == ["/s/k"]
        with store.watch("/s/", rev) as watch:
            item = watch.next(timeout=10)
            assert isinstance(item, Batch) and item.revision == rev
        assert store.txn([absent("/s/new")], [Put("/s/new", b"")]).succeeded
        assert store.endpoint != cluster.endpoints[0]
    finally:
        store.close()


def test_single_member_restart_keeps_watch_and_store_working(tmp_path: Path) -> None:
    with EtcdServer(tmp_path / "single", members=1, die_with_parent=True) as server:
        store = EtcdStore(server.endpoints, timeout=2.0)
        watch = store.watch("/r/", 0)
        revisions = [store.txn([], [Put(f"/r/{i:02d}", b"")]).revision for i in range(20)]
        server.kill(0)
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.get("/r/00")
        assert time.monotonic() - started < 10  # fails within its budget, does not hang
        server.restart(0)
        started = time.monotonic()
        for i in range(20, 40):
            revisions.append(store.txn([], [Put(f"/r/{i:02d}", b"")]).revision)
        assert time.monotonic() - started < 5  # no lingering failover penalty
        seen: list[Batch] = []
        deadline = time.monotonic() + 30
        while len(seen) < 40 and time.monotonic() < deadline:
            item = watch.next(timeout=1.0)
            if item is not None:
                assert isinstance(item, Batch), item
                seen.append(item)
        assert [b.revision for b in seen] == revisions
        assert [b.events[0].key for b in seen] == [f"/r/{i:02d}" for i in range(40)]
        watch.close()
        store.close()


def test_idle_watch_survives_restart_after_compaction(tmp_path: Path) -> None:
    """Progress notifications carry an idle watch past compacted history: no spurious Gap."""
    progress = ("--experimental-watch-progress-notify-interval=200ms",)
    with EtcdServer(tmp_path / "idle", extra_args=progress, die_with_parent=True) as server:
        store = EtcdStore(server.endpoints, timeout=2.0)
        watch = store.watch("/idle/", 0)
        # Once it has delivered something the watch is caught up on the server ("synced");
        # a watch still catching up when its start revision is compacted rightly gets a Gap.
        first = store.txn([], [Put("/idle/first", b"")]).revision
        item = watch.next(timeout=15)
        assert isinstance(item, Batch) and item.revision == first, item
        for i in range(10):
            store.txn([], [Put(f"/busy/{i}", b"")])
        store.compact(store.revision())
        time.sleep(1.0)  # a few progress notifications reach the idle watch
        server.kill(0)
        server.restart(0)
        rev = store.txn([], [Put("/idle/k", b"v")]).revision
        item = watch.next(timeout=15)
        assert isinstance(item, Batch) and item.revision == rev, item
        watch.close()
        store.close()


def test_lease_kept_alive_through_the_loss_of_the_member_in_use(cluster: EtcdServer) -> None:
    """Losing the leader (the member we talk to) must not end a lease that is kept alive:
    keepalives fail over, and the new leader gives every lease a fresh TTL."""
    ttl = 3
    store = EtcdStore(_leader_first(cluster), timeout=5.0)
    lease = store.grant(ttl)
    rev = store.txn([], [Put("/lease/k", b"", lease=lease)]).revision
    watch = store.watch("/lease/", rev + 1)

    def keep_alive_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            with contextlib.suppress(StoreError):  # no leader yet; a later attempt finds one
                assert store.keepalive(lease)
            time.sleep(ttl / 10)

    keep_alive_for(ttl)
    cluster.kill(cluster.index_of(store.endpoint))
    keep_alive_for(2 * ttl)
    kv = store.get("/lease/k")
    assert kv is not None and kv.lease == lease
    assert watch.next(timeout=0.1) is None  # no delete while kept alive
    # Stop: the new leader expires it, and the watch (failed over too) sees the delete.
    item = watch.next(timeout=30)
    assert isinstance(item, Batch) and [(e.type, e.key) for e in item.events] == [
        ("delete", "/lease/k")
    ]
    assert not store.keepalive(lease)
    watch.close()
    store.close()


def test_keepalive_without_quorum_raises_rather_than_reporting_the_lease_gone(
    cluster: EtcdServer,
) -> None:
    """False would tell the holder to start over; without a leader nobody can say."""
    store = EtcdStore(cluster.endpoints[:1], timeout=2.0)
    lease = store.grant(30)
    cluster.kill(1)
    cluster.kill(2)
    # A leader renews leases locally until it notices it lost quorum and steps down; then
    # the answer is "no leader" (or, from a follower, no answer in time).
    deadline = time.monotonic() + 30
    with pytest.raises(StoreError):
        while time.monotonic() < deadline:
            assert store.keepalive(lease)
            time.sleep(0.1)
    store.close()
