"""No malformed input may produce a 500: random bodies and queries against every resource.

Bodies are built from each resource's own attribute names with values of every JSON type
(and some well-formed-looking ids, IPs, CIDRs and MACs), so validation paths deep inside
the resource controllers are reached, not just the envelope checks.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.nb.memory import MemoryStore

APP = create_app(Settings(store="memory"), MemoryStore())
CLIENT = TestClient(APP, raise_server_exceptions=False)
RESOURCES = [r for r in APP.state.api.state.resources.values() if r.defn.path]


def _seed() -> dict[str, str]:
    """A few real objects, so random references sometimes hit something that exists."""
    ids: dict[str, str] = {}
    r = CLIENT.post("/v2.0/networks", json={"network": {"name": "seed"}})
    ids["network"] = r.json()["network"]["id"]
    r = CLIENT.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": ids["network"], "cidr": "10.9.0.0/24", "ip_version": 4}},
    )
    if r.status_code == 201:
        ids["subnet"] = r.json()["subnet"]["id"]
    return ids


SEED = _seed()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "10.0.0.1",
            "10.0.0.0/24",
            "10.0.0.5/33",
            "::1",
            "fe80::/64",
            "fa:16:3e:00:00:01",
            "01:00:5e:00:00:01",
            "ingress",
            "egress",
            "IPv4",
            "IPv6",
            "tcp",
            "icmp",
            "vlan",
            "geneve",
            "x" * 300,
            str(uuid.uuid4()),
            *SEED.values(),
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "ip_address",
                    "subnet_id",
                    "mac_address",
                    "destination",
                    "nexthop",
                    "network_id",
                    "opt_name",
                    "opt_value",
                    "ip_version",
                    "enable_snat",
                    "external_fixed_ips",
                    "start",
                    "end",
                    "port_id",
                    "x",
                ]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=8,
)


def bodies(res: Any) -> st.SearchStrategy[dict[str, Any]]:
    names = [a.name for a in res.defn.attrs] + ["bogus"]
    return st.dictionaries(st.sampled_from(names), json_values, max_size=6)


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.defn.name)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_bodies_never_500(res: Any, data: st.DataObject) -> None:
    d = res.defn
    body = data.draw(bodies(res))
    if "network_id" in d.by_name and data.draw(st.booleans()):
        body["network_id"] = SEED["network"]
    r = CLIENT.post(f"/v2.0/{d.path}", json={d.name: body})
    assert r.status_code < 500, (body, r.text)
    assert r.status_code in (201, 400, 403, 404, 409), (body, r.text)
    if r.status_code != 201:
        assert set(r.json()) == {"NeutronError"}
        return
    obj_id = r.json()[d.name]["id"]
    update = data.draw(bodies(res))
    r = CLIENT.put(f"/v2.0/{d.path}/{obj_id}", json={d.name: update})
    assert r.status_code < 500, (update, r.text)
    r = CLIENT.delete(f"/v2.0/{d.path}/{obj_id}")
    assert r.status_code < 500, r.text


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.defn.name)
@settings(max_examples=40, deadline=None)
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "name",
                    "id",
                    "fields",
                    "sort_key",
                    "sort_dir",
                    "limit",
                    "marker",
                    "page_reverse",
                    "tags",
                    "not-tags-any",
                    "admin_state_up",
                    "fixed_ips",
                    "mtu",
                    "bogus",
                    "network_id",
                ]
            ),
            st.text(max_size=20),
        ),
        max_size=5,
    )
)
def test_random_queries_never_500(res: Any, params: list[tuple[str, str]]) -> None:
    r = CLIENT.get(f"/v2.0/{res.defn.path}", params=params)
    assert r.status_code in (200, 400, 404), r.text


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"null",
        b"[]",
        b"1",
        b'"x"',
        b'{"a": 1}',
        b"\x00\x01",
        b'{"network": null}',
        b'{"network": {"name": "\\ud800"}}',
    ],
)
def test_garbage_bodies(raw: bytes) -> None:
    for res in RESOURCES:
        r = CLIENT.post(f"/v2.0/{res.defn.path}", content=raw)
        assert r.status_code == 400, (res.defn.path, raw, r.text)
        assert "NeutronError" in r.json()
