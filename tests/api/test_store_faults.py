"""A real `wyvern api` whose SQLite store cannot be written (issue 11, defects 2 and 4).

Writes answer 503 with a NeutronError and Retry-After while the store cannot write, the
process survives, writes succeed again within a second of the store becoming writable, and
the log holds one line per kind of failure, not one per request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.harness import start_api
from wyvern.api.logfilter import RepeatFilter


@pytest.mark.system  # root: chattr, chmod as nobody, mount
def test_unwritable_store_answers_503_then_recovers(tmp_path: Path) -> None:
    with start_api(tmp_path / "api") as api:
        files = [str(p) for p in (tmp_path / "api").glob("wyvern.db*")]
        s = requests.Session()
        url = f"{api.url}v2.0/networks"
        first = s.post(url, json={"network": {"name": "before"}})
        assert first.status_code == 201, first.text
        subprocess.run(["chattr", "+i", *files], check=True)
        try:
            answers = [s.post(url, json={"network": {"name": f"n{i}"}}) for i in range(50)]
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        t0 = time.monotonic()
        after = s.post(url, json={"network": {"name": "after"}})
        took = time.monotonic() - t0
        assert api.proc.alive(), api.log
        assert {r.status_code for r in answers} == {503}, answers[0].text
        assert answers[0].headers["Retry-After"] == "1"
        assert answers[0].json()["NeutronError"]["type"] == "ServiceUnavailable"
        assert after.status_code == 201, after.text
        assert took < 1.0
        names = {n["name"] for n in s.get(url).json()["networks"]}
        assert names == {"before", "after"}
        # 50 failed requests, one log line (the next would carry the count).
        assert api.log.count("store error on POST /v2.0/networks") == 1, api.log


def test_repeated_errors_are_logged_once_per_window_with_a_count() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.repeat")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Keep())
    logger.addFilter(RepeatFilter(window=0.3))
    for i in range(1000):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception("accept failed on %s", f"attempt {i}")
    logger.error("another failure")
    assert [r.getMessage() for r in records] == ["accept failed on attempt 0", "another failure"]
    time.sleep(0.35)
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        logger.exception("accept failed on %s", "later")
    assert (
        records[-1].getMessage() == "accept failed on later (repeated 999 more times before this)"
    )
    logger.info("info is never held back")
    logger.info("info is never held back")
    assert len(records) == 5


def db_fds(pid: int, db: Path) -> int:
    """Descriptors of process `pid` open on the database or its -wal/-shm files."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(db))
    return count


def test_descriptors_do_not_grow_over_idle_burst_cycles(tmp_path: Path) -> None:
    """Issue 11 defect 2 on a real server: anyio retires worker threads idle for 10 s, and
    each took its SQLite connection's descriptors with it (21 -> 93 over 10 cycles)."""
    with start_api(tmp_path / "api") as api:
        url = f"{api.url}v2.0/networks"
        db = tmp_path / "api" / "wyvern.db"
        quota = {"quota": {"network": -1}}
        assert requests.put(f"{api.url}v2.0/quotas/default", json=quota).status_code == 200

        def burst(tag: int) -> None:
            def post(i: int) -> int:
                body = {"network": {"name": f"c{tag}-{i}"}}
                return requests.post(url, json=body, timeout=30).status_code

            with ThreadPoolExecutor(16) as pool:
                assert list(pool.map(post, range(48))) == [201] * 48

        def sample() -> tuple[int, int]:
            return db_fds(api.proc.pid, db), len(os.listdir(f"/proc/{api.proc.pid}/task"))

        burst(0)
        samples = [sample()]
        for cycle in range(1, 6):
            time.sleep(10.5)  # idle: anyio retires the workers (at the next dispatch)
            burst(cycle)
            samples.append(sample())
        print("(descriptors, threads) after each burst", samples)
        assert api.proc.alive()
        assert samples[0][0] >= 3  # the probe sees the server's descriptors
        # Each live thread holds at most one connection: two descriptors (the file and its
        # -wal), plus the watch's and a few SQLite defers closing while another connection
        # holds a lock. How many workers a burst wakes varies, so the total wobbles
        # (measured: 21-36 for 9-18 threads, at most 2 x threads + 7); a leak does not
        # follow the threads. Before the fix, over 5 bursts: [29, 57, 77, 91, 117].
        for fds, threads in samples:
            assert fds <= 2 * threads + 12, samples


def test_out_of_descriptors_answers_503_and_logs_once(tmp_path: Path) -> None:
    """The server's descriptor limit reached (the issue's RLIMIT_NOFILE=100 run): new
    worker threads cannot open the database. That was a 500 and a traceback per request;
    now 503 with Retry-After and one log line, and all is well once descriptors are back."""
    with start_api(tmp_path / "api") as api:
        url = f"{api.url}v2.0/networks"
        quota = {"quota": {"network": -1}}
        assert requests.put(f"{api.url}v2.0/quotas/default", json=quota).status_code == 200
        sessions = [requests.Session() for _ in range(16)]
        for s in sessions:  # open 16 keep-alive connections, one request at a time
            assert s.get(url).status_code == 200

        def burst(tag: str) -> list[int]:
            def post(i: int) -> int:
                body = {"network": {"name": f"{tag}{i}"}}
                return sessions[i].post(url, json=body, timeout=30).status_code

            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(post, range(16)))

        pid = api.proc.pid
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
        lowest_free = min(set(range(len(used) + 1)) - used)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
        try:
            during = burst("d")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        t0 = time.monotonic()
        after = burst("a")
        took = time.monotonic() - t0
        assert api.proc.alive(), api.log
    assert set(during) <= {201, 503} and 503 in during, during
    assert after == [201] * 16 and took < 1.0, (after, took)
    assert api.log.count("store error on POST /v2.0/networks") == 1, api.log
    assert "Traceback" not in api.log, api.log
