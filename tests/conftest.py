"""Shared fixtures: a private etcd per test session and a fresh store of every backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from tests.keystone import KeystoneServer

from wyvern.nb.etcd import EtcdStore
from wyvern.nb.etcd_server import EtcdServer
from wyvern.nb.memory import MemoryStore
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Store

# The system marker, and CI's rules (nothing skips, hypothesis derandomized).
pytest_plugins = ["tests.system"]

# The suite names projects and roles with noauth's X-Project-Id / X-Roles headers, which
# only this development setting honours (servers the tests start inherit it).
os.environ.setdefault("WYVERN_NOAUTH_TRUST_HEADERS", "true")

BACKENDS = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.system)]


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One private single-member etcd on loopback (per xdist worker: ports are free ones)."""
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


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "store.db"))
    from tests import system  # (a plugin: imported by pytest first, so it is rewritten)

    system.require(request)
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    _wipe_etcd(endpoint)
    return EtcdStore([endpoint])


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneServer]:
    """One real, bootstrapped Keystone per xdist worker (tests/keystone.py): SQLite, a free
    loopback port. Tests add their own projects and users (unique names) to it."""
    from tests.keystone import KeystoneServer

    with KeystoneServer(tmp_path_factory.mktemp("keystone")).start() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend (etcd: the shared server with every key wiped)."""
    s = open_store(request.param, request, tmp_path)
    try:
        yield s
    finally:
        s.close()
