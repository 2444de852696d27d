"""The `wyvern` command: version, config, `api` and `up` as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import wyvern
from tests.harness import (
    HOST,
    REPO,
    Proc,
    free_port,
    get_json,
    process_env,
    spawn,
    start_api,
    wait_http,
    wyvern_command,
)
from wyvern.cli.main import app
from wyvern.config import Settings

runner = CliRunner()


@pytest.fixture
def clean_env() -> Iterator[None]:
    """No WYVERN_* from the outside; and whatever a command exports is undone afterwards."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("WYVERN_")]:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_wyvern(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*wyvern_command(), *args],
        env=process_env(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def start_up(run_dir: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
    """`wyvern up` with run_dir as its state (via WYVERN_RUN_DIR), not yet waited for."""
    full = process_env({"WYVERN_RUN_DIR": str(run_dir), **(env or {})})
    return spawn([*wyvern_command(), "up", *args], run_dir.parent / "up.out", full, "wyvern up")


# ---- in-process ----------------------------------------------------------------------------
def test_console_script_points_at_the_typer_app() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["wyvern"] == "wyvern.cli.main:app"
    assert isinstance(app, typer.Typer)


def test_version(clean_env: None) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"wyvern {wyvern.__version__}"


def test_config_prints_effective_settings_as_toml_that_reads_back(
    clean_env: None, tmp_path: Path
) -> None:
    os.environ["WYVERN_RUN_DIR"] = str(tmp_path)
    os.environ["WYVERN_QUOTAS__PORT"] = "7"
    os.environ["WYVERN_ETCD_ENDPOINTS"] = '["http://10.0.0.1:2379", "http://10.0.0.2:2379"]'
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.output)
    assert data["run_dir"] == str(tmp_path)
    assert data["quotas"]["port"] == 7
    assert data["etcd_endpoints"] == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    assert "sqlite_path" not in data  # unset: written as a comment
    # Fed back as a config file, the output yields the same settings.
    for key in [k for k in os.environ if k.startswith("WYVERN_")]:
        del os.environ[key]
    (tmp_path / "again.toml").write_text(result.output)
    os.environ["WYVERN_CONFIG"] = str(tmp_path / "again.toml")
    unset = {"sqlite_path": None, "tokens_file": None, "policy_file": None}  # (comments)
    assert Settings().as_json() == {**data, **unset}


def test_config_json_follows_toml_file_and_env(clean_env: None, tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('api_port = 9111\nstore = "memory"\n[quotas]\nnetwork = 3\n')
    os.environ["WYVERN_API_PORT"] = "9222"  # env beats the file
    result = runner.invoke(app, ["--config", str(cfg), "config", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["api_port"], data["store"], data["quotas"]["network"]) == (9222, "memory", 3)


def test_invalid_configuration_exits_2_with_the_reason(clean_env: None) -> None:
    os.environ["WYVERN_API_PORT"] = "0"
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2
    assert "api_port" in result.output


def test_unreadable_or_missing_config_file_exits_2(clean_env: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("api_port = [\n")
    result = runner.invoke(app, ["--config", str(bad), "config"])
    assert result.exit_code == 2
    assert "cannot read the configuration file" in result.output
    result = runner.invoke(app, ["--config", str(tmp_path / "missing.toml"), "config"])
    assert result.exit_code == 2


def test_noauth_refuses_a_public_address(clean_env: None, tmp_path: Path) -> None:
    result = runner.invoke(app, ["api", "--host", "0.0.0.0", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "noauth" in result.output


def test_readme_configuration_table_is_up_to_date() -> None:
    from wyvern.cli.docgen import update_readme

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert update_readme(readme) == readme, "README config table is stale: scripts/gen-docs"


def test_architecture_pipeline_table_is_up_to_date() -> None:
    from wyvern.cli.docgen import update_file
    from wyvern.ir import pipeline

    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert update_file("docs/architecture.md", doc) == doc, "pipeline table stale: scripts/gen-docs"
    for st in pipeline.PIPELINE:  # (the table is really there, one row a stage)
        assert f"| {pipeline.table_of(st.name)} | {st.name} | {st.owner} | {st.miss} |" in doc


def test_every_option_is_documented() -> None:
    from wyvern.cli.docgen import markdown_table, options

    opts = list(options())
    assert {o.key for o in opts} >= {"run_dir", "store", "api_port", "quotas.port"}
    assert all(o.meaning for o in opts), [o.key for o in opts if not o.meaning]
    table = markdown_table()
    assert all(f"`{o.env}`" in table for o in opts)


# ---- real processes ------------------------------------------------------------------------
def test_version_as_a_process() -> None:
    result = run_wyvern("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wyvern {wyvern.__version__}"


def test_up_serves_and_shuts_down_cleanly_on_sigterm(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    port = free_port()
    up = start_up(run_dir, "--port", str(port))
    try:
        wait_http(f"http://{HOST}:{port}/", up)
        body = get_json(f"http://{HOST}:{port}/")
        assert body["versions"][0]["id"] == "v2.0"  # type: ignore[index]
        pid_file = run_dir / "wyvern-up.pid"
        assert pid_file.read_text().strip() == str(up.pid)
        assert (run_dir / "wyvern.db").is_file()  # WYVERN_RUN_DIR holds the database
        up.signal(signal.SIGTERM)
        assert up.process.wait(timeout=20) == 0, up.output()
    finally:
        up.stop()
    assert not pid_file.exists()
    log = (run_dir / "logs" / "wyvern-up.log").read_text()
    assert "SIGTERM received" in log and "stopped (exit code 0)" in log


def test_up_refuses_a_second_instance_and_takes_over_a_stale_pid_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A pid file left by a crashed run (nobody holds its lock) is taken over.
    (run_dir / "wyvern-up.pid").write_text("999999\n")
    port = free_port()
    first = start_up(run_dir, "--port", str(port))
    try:
        wait_http(f"http://{HOST}:{port}/", first)
        second = run_wyvern("up", "--port", str(free_port()), env={"WYVERN_RUN_DIR": str(run_dir)})
        assert second.returncode == 1
        assert f"held by pid {first.pid}" in second.stderr
        assert first.alive()
    finally:
        assert first.stop() == 0


def test_up_reads_the_toml_file_in_the_run_dir_and_env_overrides_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    toml_port, env_port = free_port(), free_port()
    db = run_dir / "state.db"
    (run_dir / "wyvern.toml").write_text(f'api_port = {toml_port}\nsqlite_path = "{db}"\n')
    up = start_up(run_dir, env={"WYVERN_API_PORT": str(env_port)})
    try:
        wait_http(f"http://{HOST}:{env_port}/", up)
        assert db.is_file() and not (run_dir / "wyvern.db").exists()
    finally:
        assert up.stop() == 0
    # Without the environment variable the file's port is used.
    up = start_up(run_dir)
    try:
        wait_http(f"http://{HOST}:{toml_port}/", up)
    finally:
        assert up.stop() == 0


def test_up_exits_nonzero_when_the_port_is_taken(tmp_path: Path) -> None:
    with start_api(tmp_path / "other") as server:
        result = run_wyvern(
            "up", "--port", str(server.port), env={"WYVERN_RUN_DIR": str(tmp_path / "run")}
        )
    assert result.returncode == 1
    assert not (tmp_path / "run" / "wyvern-up.pid").exists()


def test_api_serves_the_store_in_its_run_dir_and_stops_cleanly(tmp_path: Path) -> None:
    with start_api(tmp_path) as server:
        assert get_json(server.url + "v2.0/networks") == {"networks": []}
        assert server.proc.stop() == 0
    assert (tmp_path / "wyvern.db").is_file()
    log = (tmp_path / "logs" / "wyvern-api.log").read_text()
    assert "SIGTERM received: shutting down" in log


def test_api_with_two_workers_serves_and_stops(tmp_path: Path) -> None:
    with start_api(tmp_path, workers=2) as server:
        for _ in range(4):
            body = get_json(server.url + "v2.0/networks")
            assert body == {"networks": []}
        assert server.proc.stop() == 0
    assert (tmp_path / "wyvern.db").is_file()
    assert "wyvern-api.log" in os.listdir(tmp_path / "logs")


def test_module_entry_point_matches_the_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wyvern.cli", "--help"],
        env=process_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for command in ("api", "up", "version", "config"):
        assert command in result.stdout


@pytest.mark.system
def test_api_on_a_private_etcd(tmp_path: Path) -> None:
    from tests.harness import etcd_server

    with (
        etcd_server(tmp_path / "etcd") as etcd,
        start_api(tmp_path / "run", etcd_endpoints=etcd.endpoints) as server,
    ):
        assert get_json(server.url + "v2.0/networks") == {"networks": []}
        assert server.proc.stop() == 0
    assert not (tmp_path / "run" / "wyvern.db").exists()  # the state went to etcd


def test_pipeline_prints_every_stage_with_its_table(clean_env: None) -> None:
    from wyvern.ir.pipeline import PIPELINE, table_of

    result = runner.invoke(app, ["pipeline"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for stage in PIPELINE:
        assert any(line.split()[:2] == [str(table_of(stage.name)), stage.name] for line in lines), (
            stage.name
        )
    assert any(line.startswith("src_port_key") for line in lines)
