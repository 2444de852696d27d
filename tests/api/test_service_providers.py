"""`/v2.0/service-providers`: read-only, filterable, for any reader."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import as_project, error_type


def test_lists_the_l3_provider(client: TestClient) -> None:
    url = "/v2.0/service-providers"
    want = [{"service_type": "L3_ROUTER_NAT", "name": "wyvern", "default": True}]
    assert client.get(url).json()["service_providers"] == want
    assert client.get(url, headers=as_project("p1", "reader")).json()["service_providers"] == want
    assert (
        client.get(f"{url}?service_type=L3_ROUTER_NAT&default=true").json()["service_providers"]
        == want
    )
    assert client.get(f"{url}?service_type=LOADBALANCERV2").json()["service_providers"] == []
    assert client.get(f"{url}?fields=name").json()["service_providers"] == [{"name": "wyvern"}]
    r = client.get(f"{url}?colour=red")
    assert r.status_code == 400 and error_type(r) == "HTTPBadRequest"
    assert client.post(url, json={"service_provider": {}}).status_code == 405
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert "service-type" in aliases
