"""Metering labels and rules through the HTTP API: Neutron's attributes, validation,
errors, policy (admin or the project's manager writes, its reader reads), isolation,
cascades, and what the agents read (the label's key and `_rules`)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import as_project, error_type
from tests.api.test_routers import external_net
from wyvern.api.app import create_app
from wyvern.config import Settings
from wyvern.model.keys import metering_status_key, obj_key, uniq_prefix
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Put

LABELS = "/v2.0/metering/metering-labels"
RULES = "/v2.0/metering/metering-label-rules"
ADMIN = as_project("admin", "admin")
MANAGER = as_project("p1", "manager,member,reader")
MEMBER = as_project("p1", "member,reader")
READER = as_project("p1", "reader")
OTHER = as_project("p2", "manager,member,reader")


def label(api: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    r = api.post(LABELS, json={"metering_label": attrs}, headers=headers or MANAGER)
    assert r.status_code == 201, r.text
    return r.json()["metering_label"]


def post_rule(api: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    return api.post(RULES, json={"metering_label_rule": attrs}, headers=headers or MANAGER)


def rule(api: TestClient, headers: dict[str, str] | None = None, **attrs: Any) -> Any:
    r = post_rule(api, headers, **attrs)
    assert r.status_code == 201, r.text
    return r.json()["metering_label_rule"]


def stored(api: TestClient, kind: str, id_: str, parent: str | None = None) -> Any:
    store = api.app.state.api.state.repo.store  # type: ignore[attr-defined]
    kv = store.get(obj_key(kind, id_, parent))
    return None if kv is None else orjson.loads(kv.value)


def test_extensions_advertised(client: TestClient) -> None:
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert {"metering", "metering_source_and_destination_fields"} <= aliases


def test_label_crud_and_neutron_attributes(client: TestClient) -> None:
    lb = label(client, name="web", description="d")
    assert lb == {
        "id": lb["id"],
        "name": "web",
        "description": "d",
        "project_id": "p1",
        "tenant_id": "p1",
        "shared": False,
    }
    assert client.get(f"{LABELS}/{lb['id']}", headers=READER).json()["metering_label"] == lb
    shared = label(client, ADMIN, name="all", shared=True, project_id="p1")
    assert shared["shared"] is True
    listed = client.get(f"{LABELS}?shared=true", headers=READER).json()["metering_labels"]
    assert [x["id"] for x in listed] == [shared["id"]]
    fields = client.get(f"{LABELS}?fields=name&name=web", headers=READER).json()
    assert fields["metering_labels"] == [{"name": "web"}]
    page = client.get(f"{LABELS}?limit=1&sort_key=name&sort_dir=asc", headers=READER).json()
    assert [x["name"] for x in page["metering_labels"]] == ["all"]
    assert page["metering_labels_links"][0]["rel"] == "next"
    # Neutron updates nothing of a label
    r = client.put(f"{LABELS}/{lb['id']}", json={"metering_label": {"name": "x"}}, headers=ADMIN)
    assert r.status_code == 400 and "read-only" in r.json()["NeutronError"]["message"]
    # nor knows tags on it (not a standard-attribute resource)
    r = client.post(LABELS, json={"metering_label": {"tags": ["a"]}}, headers=MANAGER)
    assert r.status_code == 400 and "Unrecognized" in r.json()["NeutronError"]["message"]
    assert client.delete(f"{LABELS}/{lb['id']}", headers=MANAGER).status_code == 204
    r = client.get(f"{LABELS}/{lb['id']}", headers=READER)
    assert r.status_code == 404 and error_type(r) == "MeteringLabelNotFound"


def test_policy_and_isolation(client: TestClient) -> None:
    r = client.post(LABELS, json={"metering_label": {"name": "x"}}, headers=MEMBER)
    assert r.status_code == 403 and error_type(r) == "PolicyNotAuthorized"
    r = client.post(LABELS, json={"metering_label": {"shared": True}}, headers=MANAGER)
    assert r.status_code == 201  # (Neutron's defaults check no attribute of a label)
    lb = label(client)
    ru = rule(client, metering_label_id=lb["id"], direction="egress", remote_ip_prefix="10.0.0.0/8")
    # another project sees neither; its writes are 404s
    for url in (f"{LABELS}/{lb['id']}", f"{RULES}/{ru['id']}"):
        assert client.get(url, headers=OTHER).status_code == 404
        assert client.delete(url, headers=OTHER).status_code == 404
    assert client.get(LABELS, headers=OTHER).json()["metering_labels"] == []
    assert client.get(RULES, headers=OTHER).json()["metering_label_rules"] == []
    r = post_rule(
        client,
        OTHER,
        metering_label_id=lb["id"],
        direction="egress",
        remote_ip_prefix="10.1.0.0/16",
    )
    assert r.status_code == 404 and error_type(r) == "MeteringLabelNotFound"
    # a reader reads, a member does not write
    assert client.get(f"{RULES}/{ru['id']}", headers=READER).status_code == 200
    assert client.delete(f"{RULES}/{ru['id']}", headers=MEMBER).status_code == 403
    r = post_rule(
        client,
        MEMBER,
        metering_label_id=lb["id"],
        direction="ingress",
        remote_ip_prefix="10.1.0.0/16",
    )
    assert r.status_code == 403
    # the admin's rule on p1's label is p1's
    by_admin = rule(
        client,
        ADMIN,
        metering_label_id=lb["id"],
        direction="ingress",
        source_ip_prefix="192.0.2.0/24",
    )
    assert by_admin["project_id"] == "p1"
    assert client.get(f"{RULES}/{by_admin['id']}", headers=READER).status_code == 200


def test_rule_attributes_and_agent_record(client: TestClient) -> None:
    lb = label(client)
    legacy = rule(
        client, metering_label_id=lb["id"], direction="ingress", remote_ip_prefix="10.0.0.0/24"
    )
    assert legacy == {
        "id": legacy["id"],
        "metering_label_id": lb["id"],
        "direction": "ingress",
        "excluded": False,
        "remote_ip_prefix": "10.0.0.0/24",
        "source_ip_prefix": None,
        "destination_ip_prefix": None,
        "project_id": "p1",
        "tenant_id": "p1",
    }
    both = rule(
        client,
        metering_label_id=lb["id"],
        direction="egress",
        excluded=True,
        source_ip_prefix="10.0.0.5",
        destination_ip_prefix="198.51.100.0/24",
    )
    assert both["source_ip_prefix"] == "10.0.0.5/32" and both["excluded"] is True
    v6 = rule(
        client,
        metering_label_id=lb["id"],
        direction="egress",
        destination_ip_prefix="2001:db8::/64",
    )
    listed = client.get(f"{RULES}?metering_label_id={lb['id']}&direction=egress", headers=READER)
    assert {x["id"] for x in listed.json()["metering_label_rules"]} == {both["id"], v6["id"]}
    excluded = client.get(f"{RULES}?excluded=true", headers=READER).json()["metering_label_rules"]
    assert [x["id"] for x in excluded] == [both["id"]]
    # What the agents read: the label's key and its rules, in the label's record.
    record = stored(client, "metering_labels", lb["id"])
    assert record["_key"] >= 1
    assert set(record["_rules"]) == {legacy["id"], both["id"], v6["id"]}
    assert record["_rules"][both["id"]] == {
        "id": both["id"],
        "direction": "egress",
        "excluded": True,
        "source_ip_prefix": "10.0.0.5/32",
        "destination_ip_prefix": "198.51.100.0/24",
    }
    assert client.delete(f"{RULES}/{both['id']}", headers=MANAGER).status_code == 204
    assert set(stored(client, "metering_labels", lb["id"])["_rules"]) == {legacy["id"], v6["id"]}
    r = client.get(f"{RULES}/{both['id']}", headers=READER)
    assert r.status_code == 404 and error_type(r) == "MeteringLabelRuleNotFound"


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"direction": "egress"}, 400, "Invalid"),  # no prefix at all
        (
            {
                "direction": "egress",
                "remote_ip_prefix": "10.0.0.0/8",
                "source_ip_prefix": "1.2.3.4",
            },
            400,
            "Invalid",
        ),
        ({"direction": "up", "remote_ip_prefix": "10.0.0.0/8"}, 400, "InvalidInput"),
        ({"remote_ip_prefix": "10.0.0.0/8"}, 400, "HTTPBadRequest"),  # direction required
        ({"direction": "egress", "remote_ip_prefix": "10.0.0.1/8"}, 400, "InvalidInput"),
        ({"direction": "egress", "remote_ip_prefix": "bogus"}, 400, "InvalidInput"),
        ({"direction": "egress", "source_ip_prefix": "10.0.0.0/33"}, 400, "InvalidInput"),
        (
            {
                "direction": "egress",
                "source_ip_prefix": "10.0.0.0/8",
                "destination_ip_prefix": "2001:db8::/32",
            },
            400,
            "InvalidInput",
        ),
        ({"direction": "egress", "remote_ip_prefix": "10.0.0.0/8", "excluded": "x"}, 400, None),
        ({"direction": "egress", "remote_ip_prefix": "10.0.0.0/8", "id": "x"}, 400, None),
    ],
)
def test_rule_validation(
    client: TestClient, body: dict[str, Any], status: int, kind: str | None
) -> None:
    lb = label(client)
    r = post_rule(client, metering_label_id=lb["id"], **body)
    assert r.status_code == status, r.text
    if kind is not None:
        assert error_type(r) == kind
    assert stored(client, "metering_labels", lb["id"])["_rules"] == {}
    assert client.get(RULES, headers=READER).json()["metering_label_rules"] == []


def test_unknown_label(client: TestClient) -> None:
    r = post_rule(
        client,
        metering_label_id="8c1f5f6a-0d0b-4a3e-9a54-3c1d7a1e2f10",
        direction="egress",
        remote_ip_prefix="10.0.0.0/8",
    )
    assert r.status_code == 404 and error_type(r) == "MeteringLabelNotFound"
    r = post_rule(
        client, metering_label_id="nope", direction="egress", remote_ip_prefix="1.0.0.0/8"
    )
    assert r.status_code == 400


def test_overlapping_remote_prefixes(client: TestClient) -> None:
    lb = label(client)
    rule(client, metering_label_id=lb["id"], direction="egress", remote_ip_prefix="10.0.0.0/16")
    r = post_rule(
        client, metering_label_id=lb["id"], direction="egress", remote_ip_prefix="10.0.5.0/24"
    )
    assert r.status_code == 409 and error_type(r) == "MeteringLabelRuleOverlaps"
    # Another direction, the excluded kind, or another label: no overlap (Neutron's rule)
    rule(client, metering_label_id=lb["id"], direction="ingress", remote_ip_prefix="10.0.5.0/24")
    rule(
        client,
        metering_label_id=lb["id"],
        direction="egress",
        remote_ip_prefix="10.0.5.0/24",
        excluded=True,
    )
    other = label(client)
    rule(client, metering_label_id=other["id"], direction="egress", remote_ip_prefix="10.0.0.0/8")
    # source/destination prefixes are not checked for overlaps (nor in Neutron)
    rule(client, metering_label_id=lb["id"], direction="egress", source_ip_prefix="10.0.0.0/16")


def test_bulk_rules_all_or_nothing(client: TestClient) -> None:
    lb = label(client)
    good = {"metering_label_id": lb["id"], "direction": "egress", "remote_ip_prefix": "10.0.0.0/8"}
    second = {**good, "direction": "ingress"}
    r = client.post(RULES, json={"metering_label_rules": [good, second]}, headers=MANAGER)
    assert r.status_code == 201, r.text
    assert len(stored(client, "metering_labels", lb["id"])["_rules"]) == 2
    clash = {**good, "remote_ip_prefix": "172.16.0.0/12"}
    overlap = {**clash, "remote_ip_prefix": "172.16.1.0/24"}
    r = client.post(RULES, json={"metering_label_rules": [clash, overlap]}, headers=MANAGER)
    assert r.status_code == 409
    assert len(stored(client, "metering_labels", lb["id"])["_rules"]) == 2
    assert len(client.get(RULES, headers=READER).json()["metering_label_rules"]) == 2


def test_label_delete_cascades_rules_and_key(client: TestClient) -> None:
    lb = label(client)
    ru = rule(client, metering_label_id=lb["id"], direction="egress", remote_ip_prefix="10.0.0.0/8")
    key = stored(client, "metering_labels", lb["id"])["_key"]
    store = client.app.state.api.state.repo.store  # type: ignore[attr-defined]
    assert uniq_prefix("meterkey") + str(key) in {kv.key for kv in store.list("/wyvern/").items}
    assert client.delete(f"{LABELS}/{lb['id']}", headers=MANAGER).status_code == 204
    assert client.get(f"{RULES}/{ru['id']}", headers=READER).status_code == 404
    left = [kv.key for kv in store.list("/wyvern/").items if "meter" in kv.key]
    assert left == []


def report(api: TestClient, chassis: str, labels: dict[str, Any]) -> None:
    """A chassis's counters, as its agent writes them (wyvern.controller.metering)."""
    store = api.app.state.api.state.repo.store  # type: ignore[attr-defined]
    value = {"chassis": chassis, "labels": labels, "flows": {}}
    store.txn([], [Put(metering_status_key(chassis), orjson.dumps(value))])


def metrics(api: TestClient, headers: dict[str, str]) -> dict[tuple[str, ...], float]:
    r = api.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name.endswith("_total"):
                lab = s.labels
                key = (
                    s.name,
                    lab["label_id"],
                    lab["router_id"],
                    lab["project_id"],
                    lab["direction"],
                )
                out[key] = s.value
    return out


def test_metrics_sum_the_chassis_for_who_may_read_the_label(client: TestClient) -> None:
    lb = label(client, name="web")
    rule(client, metering_label_id=lb["id"], direction="egress", remote_ip_prefix="10.0.0.0/8")
    net_id, _ = external_net(client)
    router = client.post(
        "/v2.0/routers",
        json={"router": {"name": "r", "project_id": "p1",
                         "external_gateway_info": {"network_id": net_id}}},
    ).json()["router"]  # fmt: skip
    rid = router["id"]
    # Before any traffic: a zero for each router and direction the label meters
    pk, by = "wyvern_metering_label_packets_total", "wyvern_metering_label_bytes_total"
    assert metrics(client, READER) == {
        (pk, lb["id"], rid, "p1", "egress"): 0.0,
        (by, lb["id"], rid, "p1", "egress"): 0.0,
    }
    report(client, "hv1", {lb["id"]: {rid: {"egress": [3, 300]}}})
    report(client, "hv2", {lb["id"]: {rid: {"egress": [2, 250], "ingress": [1, 84]}}})
    got = metrics(client, READER)
    assert got[(pk, lb["id"], rid, "p1", "egress")] == 5
    assert got[(by, lb["id"], rid, "p1", "egress")] == 550
    assert got[(pk, lb["id"], rid, "p1", "ingress")] == 1
    assert metrics(client, ADMIN) == got
    assert metrics(client, OTHER) == {}  # another project's label is not shown


def test_metrics_need_authentication_with_tokens(tmp_path: Any) -> None:
    """Beyond loopback the API needs a token (noauth is refused there), and so do the
    counters: none, or a wrong one, is a 401."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[tokens.s3cret]\nproject_id = "admin"\nroles = ["admin"]\n')
    settings = Settings(
        store="memory", auth_strategy="token", tokens_file=tokens, api_host="0.0.0.0"
    )
    with TestClient(create_app(settings, MemoryStore())) as api:
        r = api.get("/metrics")
        assert r.status_code == 401 and error_type(r) == "NotAuthorized"
        assert api.get("/metrics", headers={"X-Auth-Token": "wrong"}).status_code == 401
        r = api.get("/metrics", headers={"X-Auth-Token": "s3cret"})
        assert r.status_code == 200 and "wyvern_metering_label_packets" in r.text
