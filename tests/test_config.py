"""Settings: defaults, TOML file, environment precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from wyvern.config import Settings


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('api_port = 9999\nstore = "memory"\n[quotas]\nport = 7\n')
    monkeypatch.setenv("WYVERN_CONFIG", str(cfg))
    s = Settings()
    assert s.api_port == 9999 and s.store == "memory" and s.quotas.port == 7
    monkeypatch.setenv("WYVERN_API_PORT", "9700")
    monkeypatch.setenv("WYVERN_QUOTAS__NETWORK", "3")
    s = Settings()
    assert s.api_port == 9700 and s.quotas.network == 3 and s.quotas.port == 7


def test_run_dir_holds_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WYVERN_CONFIG", raising=False)
    monkeypatch.setenv("WYVERN_RUN_DIR", str(tmp_path))
    s = Settings()
    assert s.database_path == tmp_path / "wyvern.db"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WYVERN_API_PORT", "70000")
    with pytest.raises(ValueError):
        Settings()
