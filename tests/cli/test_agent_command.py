"""`wyvern agent` without pydantic: a plain command line skips typer's parsing.

typer 0.29 builds a pydantic TypeAdapter per option when it parses, so the agent reads a
plain `[--config F] agent [--flag value]...` itself; typer, the oracle here, must hand the
agent the same options, and everything else (help, bad options) still goes to typer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import wyvern.cli.main as cli
from tests.harness import process_env, spawn, wyvern_command
from tests.southbound.conftest import unique
from wyvern.southbound.ovs import OvsInstance

runner = CliRunner()

PLAIN = [
    ["agent"],
    ["agent", "--store", "etcd", "--chassis", "hv1", "--tunnel-ip", "192.0.2.1"],
    ["agent", "--run-dir=/tmp/x", "--ovs-mode=fake", "--distribution", "all"],
    ["agent", "--underlay-interface", "eth1", "--ovs-run-dir", "/run/o", "--ovs-netns", ""],
    ["--config", "CFG", "agent", "--chassis", "hv2"],
    ["-c", "CFG", "agent"],
]
NOT_PLAIN = [
    ["agent", "--help"],
    ["agent", "--bogus", "1"],
    ["agent", "--store"],
    ["agent", "--store", "a", "--store", "b"],
    ["agent", "extra"],
    ["--config", "/nonexistent.toml", "agent"],
    ["--config=CFG", "agent"],
    ["api"],
    [],
]


@pytest.fixture
def clean_env() -> Iterator[None]:
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("WYVERN_")]:
        del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)


def _fill(argv: list[str], cfg: Path) -> list[str]:
    return [str(cfg) if a == "CFG" else a.replace("=CFG", f"={cfg}") for a in argv]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_agent_command_lines_read_as_typer_reads_them(
    argv: list[str], tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('store = "memory"\n')
    argv = _fill(argv, cfg)
    seen: dict[str, Any] = {}

    def record(**overrides: Any) -> int:
        seen.update(overrides, config=os.environ.get("WYVERN_CONFIG"))
        return 0

    monkeypatch.setattr(cli, "_run_agent", record)
    result = runner.invoke(cli.app, argv)
    assert result.exit_code == 0, result.output
    by_typer = {k: v for k, v in seen.items() if v is not None}
    os.environ.pop("WYVERN_CONFIG", None)
    seen.clear()
    with pytest.raises(SystemExit) as exited:
        cli.run(argv)
    assert exited.value.code == 0
    assert {k: v for k, v in seen.items() if v is not None} == by_typer


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=" ".join)
def test_anything_else_goes_to_typer(argv: list[str], tmp_path: Path) -> None:
    assert cli.plain_agent_args(_fill(argv, tmp_path / "w.toml")) is None


def test_a_running_agent_has_no_pydantic(tmp_path: Path) -> None:
    """The real process, past its first install, never loaded pydantic (~10 MiB RSS)."""
    run_dir = tmp_path / "run"
    args = [*wyvern_command(), "agent", "--store", "sqlite", "--ovs-mode", "fake"]
    args += ["--chassis", f"lean-{os.getpid()}", "--run-dir", str(run_dir)]
    env = process_env({"PYTHONPROFILEIMPORTTIME": "1"})
    proc = spawn(args, tmp_path / "agent.out", env, "wyvern agent")
    try:
        deadline = time.monotonic() + 60
        while "flows installed" not in proc.output():
            assert proc.alive(), proc.output()
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.1)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "pydantic" not in maps
        # Nor urllib.request (http.client, email: ~3 MiB) on SQLite, where nothing needs it.
        modules = _imported(proc.log_path.read_text(errors="replace"))
        assert {"wyvern.nb.sqlite", "wyvern.nb.etcd_server"} <= modules
        assert "urllib.request" not in modules
        assert proc.alive()
    finally:
        assert proc.stop() == 0, proc.output()


def _imported(log: str) -> set[str]:
    """The modules a process imported, from its PYTHONPROFILEIMPORTTIME lines."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.system
def test_a_running_agent_on_etcd_loads_no_eventlet_nor_os_ken(etcd_endpoint: str) -> None:
    """The real process on etcd and a private OVS, its packet-in channel up, never loaded
    eventlet (futurist, which etcd3gw imports, would: ~19 MiB RSS with greenlet, dnspython)
    nor os-ken (~14 MiB: our own codecs speak OpenFlow and parse the punted packets)."""
    run_dir = Path(f"/tmp/{unique('wlean-')}")  # short: unix socket paths
    args = [*wyvern_command(), "agent", "--store", "etcd", "--ovs-mode", "private"]
    args += ["--chassis", run_dir.name, "--run-dir", str(run_dir), "--ovs-netns", run_dir.name]
    env = process_env(
        {"PYTHONPROFILEIMPORTTIME": "1", "WYVERN_ETCD_ENDPOINTS": json.dumps([etcd_endpoint])}
    )
    proc = spawn(args, run_dir / "agent.out", env, "wyvern agent")
    try:
        deadline = time.monotonic() + 60
        while "flows installed" not in (log := proc.log_path.read_text(errors="replace")) or (
            "ofchannel br-int-packet-in: connected" not in log
        ):
            assert proc.alive(), proc.output()
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.1)
        modules = _imported(log)
        # The probe sees what the agent imported lazily, once running (positive controls;
        # importlib.import_module itself is not logged, the imports it runs are).
        assert {"etcd3gw", "futurist", "wyvern.controller.dhcp"} <= modules, sorted(modules)
        assert "wyvern.southbound.ofchannel" in modules
        # eventlet's first import is greenlet; a blocked `import eventlet` imports nothing.
        assert not {m for m in modules if m.split(".")[0] in ("greenlet", "dns", "os_ken")}
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/orjson/" in maps and "greenlet" not in maps
        assert proc.alive()
    finally:
        code = proc.stop()
        OvsInstance(run_dir / "ovs", run_dir.name).stop()  # `wyvern agent` leaves it running
        subprocess.run(["ip", "netns", "del", run_dir.name], check=False, capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        assert code == 0, proc.output()
