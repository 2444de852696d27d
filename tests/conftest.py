"""Shared fixtures: a private etcd per test session and a fresh store of every backend."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import settings

from wyvern.nb.store import Store

# CI runs the same examples every time (a red CI must be reproducible, and a green local
# run must mean a green CI); developers' runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

BACKENDS = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.etcd)]


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One private single-member etcd on loopback (per xdist worker: ports are free ones)."""
    if shutil.which("etcd") is None:
        pytest.skip("the etcd binary is not on PATH (install etcd-server to run etcd tests)")
    from wyvern.nb.etcd_server import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd"), members=1, die_with_parent=True)
    server.start()
    try:
        yield server.endpoints[0]
    finally:
        server.stop()


def _wipe_etcd(endpoint: str) -> None:
    """Delete every key: tests share the server, so each starts from an empty key space."""
    resp = requests.post(
        f"{endpoint}/v3/kv/deleterange", json={"key": "AA==", "range_end": "AA=="}, timeout=10
    )
    resp.raise_for_status()


def _import(module: str, name: str) -> type[Store]:
    """The backend class, imported lazily: a backend still being written skips, not errors."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        pytest.skip(f"{module} is not available yet")
    cls: type[Store] = getattr(mod, name)
    return cls


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "memory":
        return _import("wyvern.nb.memory", "MemoryStore")()
    if kind == "sqlite":
        sqlite_store = _import("wyvern.nb.sqlite", "SqliteStore")
        return sqlite_store(str(tmp_path / "store.db"))  # type: ignore[call-arg]
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    from wyvern.nb.etcd import EtcdStore

    _wipe_etcd(endpoint)
    return EtcdStore([endpoint])


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend (etcd: the shared server with every key wiped)."""
    s = open_store(request.param, request, tmp_path)
    try:
        yield s
    finally:
        s.close()
