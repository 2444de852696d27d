"""tests/system.py itself: under CI=true a skip fails the run, on two xdist workers too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_skips():
    pytest.skip("the reason it skipped")

@pytest.mark.skipif(True, reason="a skipif")
def test_skipif():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfails():
    assert False
"""

SKIPPED_MODULE = """
import pytest

pytest.skip("the whole module", allow_module_level=True)

def test_never_collected():
    pass
"""


def run_pytest(tmp_path: Path, source: str, ci: str | None, *args: str) -> tuple[int, str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_generated.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.system", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-rA", *args,
         str(tmp_path / "test_generated.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_skip_fails_the_run_under_ci(tmp_path: Path, workers: list[str]) -> None:
    code, out = run_pytest(tmp_path, SKIPPING, None, *workers)
    assert code == 0, out
    assert "1 passed, 2 skipped, 1 xfailed" in out, out

    code, out = run_pytest(tmp_path, SKIPPING, "true", *workers)
    assert code == 1, out
    # A skip in the test body fails it; one at setup (skipif) is an error: both fail the run.
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in out, out
    assert "skipped under CI=true, where nothing may skip: the reason it skipped" in out, out
    assert "skipped under CI=true, where nothing may skip: a skipif" in out, out


def test_a_module_skipped_at_collection_fails_under_ci(tmp_path: Path) -> None:
    code, out = run_pytest(tmp_path, SKIPPED_MODULE, "false")
    assert code == 5 and "1 skipped" in out, out  # 5: no test ran, nothing failed
    code, out = run_pytest(tmp_path, SKIPPED_MODULE, "true")
    assert code in (1, 2), out  # a failed collection interrupts the run
    assert "skipped under CI=true, where nothing may skip: the whole module" in out, out


REQUIRING = """
import pytest
from tests import system

@pytest.fixture
def service(request):
    system.require(request)
    return "up"

def test_unmarked(service):
    pass

@pytest.mark.system
def test_marked(service):
    assert service == "up"
"""


def test_a_system_fixture_refuses_a_test_without_the_marker(tmp_path: Path) -> None:
    from tests import system

    code, out = run_pytest(tmp_path, REQUIRING, None)
    assert code == 1, out
    assert "mark it @pytest.mark.system" in out, out
    if system.missing() is None:
        assert "1 passed, 1 error" in out, out
    else:
        assert "1 skipped, 1 error" in out and f"system test: {system.missing()}" in out, out


def test_the_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import system

    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    system.missing.cache_clear()
    assert system.missing() == "needs root (network namespaces, veth pairs, Open vSwitch)"
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system.shutil, "which", lambda tool: None if tool == "etcd" else tool)
    system.missing.cache_clear()
    assert system.missing() == "etcd not on PATH (run ./scripts/install)"
    monkeypatch.undo()
    system.missing.cache_clear()
