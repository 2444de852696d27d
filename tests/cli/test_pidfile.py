"""The `wyvern up` pid file: one holder per run directory, stale files taken over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wyvern.cli.pidfile import AlreadyRunning, PidFile, read_pid


def test_holder_writes_its_pid_and_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "wyvern-up.pid"
    with PidFile(path):
        assert read_pid(path) == os.getpid()
    assert not path.exists()


def test_second_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "wyvern-up.pid"
    with PidFile(path):
        with pytest.raises(AlreadyRunning) as exc:
            PidFile(path).acquire()
        assert exc.value.pid == os.getpid()
        assert str(os.getpid()) in str(exc.value)
    # Released: the next one gets it.
    with PidFile(path):
        assert path.exists()


def test_stale_file_without_a_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "wyvern-up.pid"
    path.write_text("999999\n")
    with PidFile(path):
        assert read_pid(path) == os.getpid()


def test_garbage_pid_file_reads_as_no_pid(tmp_path: Path) -> None:
    path = tmp_path / "wyvern-up.pid"
    path.write_text("not a pid")
    assert read_pid(path) is None
    assert read_pid(tmp_path / "missing") is None
