"""A live `wyvern api` per test module, and the real clients pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import pytest
from openstack.connection import Connection

from tests.harness import REPO, ApiServer, process_env, start_api

OPENSTACK = Path(sys.executable).parent / "openstack"


@pytest.fixture(scope="session", autouse=True)
def _loopback_without_proxy() -> Iterator[None]:
    """openstacksdk runs in this process: keep any configured HTTP proxy off loopback."""
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    extra = "127.0.0.1,localhost"
    for key, value in saved.items():
        os.environ[key] = f"{value},{extra}" if value else extra
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with start_api(tmp_path_factory.mktemp("compat-api"), access_log=True) as server:
        yield server


@pytest.fixture
def conn(api: ApiServer) -> Connection:
    """openstacksdk without Keystone: `auth_type='none'` plus the endpoint is all it needs."""
    return openstack.connect(auth_type="none", endpoint=api.url)


@dataclass
class Osc:
    """The `openstack` command of python-openstackclient, run against one server."""

    url: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not OPENSTACK.exists():
            pytest.fail(f"python-openstackclient is not installed ({OPENSTACK} missing)")
        # No OS_* from the developer's shell (OS_CLOUD etc.) may redirect the client.
        env = {k: v for k, v in process_env().items() if not k.startswith("OS_")}
        return subprocess.run(
            [str(OPENSTACK), "--os-auth-type", "none", "--os-endpoint", self.url, *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"openstack {' '.join(args)}:\n{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        """Run a show/list/create command with `-f json` and parse its output."""
        return json.loads(self.ok(*args, "-f", "json").stdout)


@pytest.fixture
def osc(api: ApiServer) -> Osc:
    return Osc(api.url)
