"""Token mode: bearer tokens from a file map to project and roles; nothing is anonymous."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.nb.memory import MemoryStore

TOKENS = """
[tokens.adm-token]
project_id = "p-admin"
roles = ["admin"]

[tokens.alice-token]
project_id = "p-alice"
roles = ["member"]

[tokens.bob-token]
project_id = "p-bob"
roles = ["member"]

[tokens.audit-token]
project_id = "p-alice"
roles = ["reader"]
"""


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    settings = Settings(
        store="memory", auth_strategy="token", tokens_file=tokens, api_host="0.0.0.0"
    )
    return TestClient(create_app(settings, MemoryStore()))


def tok(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def test_requests_need_a_valid_token(api: TestClient) -> None:
    r = api.get("/v2.0/networks")
    assert r.status_code == 401 and r.json()["NeutronError"]["type"] == "NotAuthorized"
    assert api.get("/v2.0/networks", headers=tok("wrong")).status_code == 401
    # openstacksdk's noauth placeholder is not a token here.
    assert api.get("/v2.0/networks", headers=tok("notused")).status_code == 401
    # Headers that noauth honours do not grant anything in token mode.
    hdrs = {"X-Project-Id": "p-admin", "X-Roles": "admin"}
    assert api.get("/v2.0/networks", headers=hdrs).status_code == 401
    ok = api.get("/v2.0/networks", headers={"Authorization": "Bearer alice-token"})
    assert ok.status_code == 200


def test_isolation_and_roles_by_token(api: TestClient) -> None:
    r = api.post("/v2.0/networks", json={"network": {"name": "a"}}, headers=tok("alice-token"))
    assert r.status_code == 201
    net = r.json()["network"]
    assert net["project_id"] == "p-alice"
    url = f"/v2.0/networks/{net['id']}"
    assert api.get(url, headers=tok("bob-token")).status_code == 404
    assert api.get(url, headers=tok("audit-token")).status_code == 200
    assert api.delete(url, headers=tok("audit-token")).status_code == 403
    assert api.delete(url, headers=tok("bob-token")).status_code == 404
    assert (
        api.put(url, json={"network": {"name": "b"}}, headers=tok("alice-token")).status_code == 200
    )
    assert api.get(url, headers=tok("adm-token")).status_code == 200
    bob_list = api.get("/v2.0/networks", headers=tok("bob-token")).json()["networks"]
    assert bob_list == []
    admin_list = api.get("/v2.0/networks", headers=tok("adm-token")).json()["networks"]
    assert [n["id"] for n in admin_list] == [net["id"]]
    r = api.post(
        "/v2.0/networks",
        json={"network": {"project_id": "p-bob"}},
        headers=tok("alice-token"),
    )
    assert r.status_code == 400  # (neutron-lib: naming another project needs admin)
    assert api.delete(url, headers=tok("alice-token")).status_code == 204
    r = api.post(
        "/v2.0/networks", json={"network": {"project_id": "p-bob"}}, headers=tok("adm-token")
    )
    assert r.status_code == 201 and r.json()["network"]["project_id"] == "p-bob"


def test_noauth_refuses_public_addresses() -> None:
    with pytest.raises(ValueError, match="noauth"):
        Settings(api_host="0.0.0.0")
    with pytest.raises(ValueError, match="tokens_file"):
        Settings(auth_strategy="token")


def test_noauth_defaults_to_admin_of_default_project() -> None:
    api = TestClient(create_app(Settings(store="memory"), MemoryStore()))
    r = api.post("/v2.0/networks", json={"network": {}}, headers=tok("notused"))
    assert r.status_code == 201
    assert r.json()["network"]["project_id"] == "default"


def test_noauth_refuses_identity_headers_without_the_development_flag() -> None:
    """By default noauth callers are admin of the default project, and a request naming
    another project or roles is refused (400), changing nothing; only
    noauth_trust_headers (unsafe, development) honours those headers."""
    safe = TestClient(
        create_app(Settings(store="memory", noauth_trust_headers=False), MemoryStore())
    )
    for hdrs in ({"X-Project-Id": "p1"}, {"X-Roles": "reader"}, {"X-Tenant-Id": "p1"}):
        r = safe.post("/v2.0/networks", json={"network": {"name": "n"}}, headers=hdrs)
        assert r.status_code == 400, r.text
        assert "noauth_trust_headers" in r.json()["NeutronError"]["message"]
    assert safe.get("/v2.0/networks").json()["networks"] == []
    r = safe.post("/v2.0/networks", json={"network": {"name": "n"}})
    assert r.status_code == 201 and r.json()["network"]["project_id"] == "default"

    dev = TestClient(create_app(Settings(store="memory", noauth_trust_headers=True), MemoryStore()))
    r = dev.post("/v2.0/networks", json={"network": {}}, headers={"X-Project-Id": "p1"})
    assert r.status_code == 201 and r.json()["network"]["project_id"] == "p1"


def test_keystone_strategy_needs_the_service_user() -> None:
    with pytest.raises(ValueError, match=r"keystone_authtoken\.auth_url"):
        Settings(auth_strategy="keystone")
    s = Settings(
        auth_strategy="keystone",
        keystone_authtoken={"auth_url": "http://k/v3", "username": "u", "password": "p"},
    )
    assert s.keystone_authtoken.token_cache_time == 300
