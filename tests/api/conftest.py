"""Shared API fixtures: TestClients over a fresh memory or SQLite store, plus small helpers.

`client` is the fast default (memory store, noauth: no headers = admin of "default");
`sqlite_client` runs the same app over a real SQLite file, for behaviour that depends on
the store (transactions, guards, concurrency); `any_client` is parametrized over both.
`as_project("p1")` gives the noauth headers of a member (or other roles) of project p1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import BACKENDS, open_store
from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.nb.memory import MemoryStore
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Store


def as_project(project_id: str, roles: str = "member") -> dict[str, str]:
    """Noauth headers acting as `project_id` with `roles` (comma-separated)."""
    return {"X-Project-Id": project_id, "X-Roles": roles}


def make_client(store: Store, **settings: Any) -> TestClient:
    """A TestClient over `store` (enter it with `with`, which also closes the store)."""
    return TestClient(create_app(Settings(store="memory", **settings), store))


# URL segment -> body key, for `create`.
SINGULAR = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "floatingips": "floatingip",
    "security-groups": "security_group",
    "security-group-rules": "security_group_rule",
    "address-groups": "address_group",
    "subnetpools": "subnetpool",
    "address-scopes": "address_scope",
    "rbac-policies": "rbac_policy",
}


def create(
    client: TestClient, path: str, headers: dict[str, str] | None = None, **attrs: Any
) -> dict[str, Any]:
    """POST one object (e.g. `create(client, "ports", network_id=n)`), asserting 201."""
    key = SINGULAR[path]
    resp = client.post(f"/v2.0/{path}", json={key: attrs}, headers=headers)
    assert resp.status_code == 201, resp.text
    obj: dict[str, Any] = resp.json()[key]
    return obj


def error_type(resp: Any) -> str:
    """The NeutronError type of an error response (and check the body is one)."""
    body = resp.json()
    assert set(body) == {"NeutronError"}, body
    return str(body["NeutronError"]["type"])


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(MemoryStore()) as c:
        yield c


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(SqliteStore(str(tmp_path / "api.db"))) as c:
        yield c


@pytest.fixture(params=BACKENDS)
def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """The API on every backend: memory, SQLite and the session's real etcd."""
    with make_client(open_store(request.param, request, tmp_path)) as c:
        yield c


@pytest.fixture
def client_factory(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Build clients with custom settings: `client_factory(store="sqlite", base_mac=...)`."""
    made: list[TestClient] = []

    def factory(store: str = "memory", **settings: Any) -> TestClient:
        backend: Store = (
            SqliteStore(str(tmp_path / f"api{len(made)}.db"))
            if store == "sqlite"
            else MemoryStore()
        )
        c = make_client(backend, **settings)
        c.__enter__()
        made.append(c)
        return c

    yield factory
    for c in made:
        c.__exit__(None, None, None)
