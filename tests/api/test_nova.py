"""Nova notifications (wyvern.api.nova): the events computed from a port's change, the
batching and retries, one notifier among many processes, and the real thing against a
Nova stand-in (tests/novaapi.py) that validates the service user's token with a real
Keystone. End to end with a real agent and OVS: tests/e2e/test_nova_notifications.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import create, make_client
from tests.keystone import KeystoneServer
from tests.novaapi import NovaApi, keystone_validator, nova_options, register_compute
from wyvern.api.nova import (
    NETWORK_CHANGED,
    VIF_DELETED,
    VIF_PLUGGED,
    VIF_UNPLUGGED,
    Event,
    EventQueue,
    NovaNotifier,
    PortState,
    SendOutcome,
    port_events,
    port_state,
)
from wyvern.config import Settings
from wyvern.model.keys import NOVA_NOTIFIER_KEY, status_key
from wyvern.nb.memory import MemoryStore
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import Delete, Put, Store

SERVER = str(uuid.uuid4())
PORT = str(uuid.uuid4())


def state(**kw: Any) -> PortState:
    base: dict[str, Any] = {
        "id": PORT,
        "device_id": SERVER,
        "device_owner": "compute:nova",
        "host": "h1",
        "mac": "fa:16:3e:00:00:01",
        "status": "DOWN",
        "fixed_ips": frozenset({("s", "10.0.0.5")}),
    }
    base.update(kw)
    return PortState(**base)


def plugged(status: str = "completed") -> Event:
    return {"name": VIF_PLUGGED, "server_uuid": SERVER, "status": status, "tag": PORT}


def unplugged() -> Event:
    return {"name": VIF_UNPLUGGED, "server_uuid": SERVER, "status": "completed", "tag": PORT}


CHANGED: Event = {"name": NETWORK_CHANGED, "server_uuid": SERVER, "tag": PORT}
DELETED: Event = {"name": VIF_DELETED, "server_uuid": SERVER, "tag": PORT}


# ---- the pure function ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "events"),
    [
        # Neutron's transitions: NO_VALUE/DOWN/BUILD -> ACTIVE/ERROR plugged, ACTIVE -> DOWN
        (None, state(status="ACTIVE"), [plugged()]),
        (state(), state(status="ACTIVE"), [plugged()]),
        (state(status="BUILD"), state(status="ACTIVE"), [plugged()]),
        (state(), state(status="ERROR"), [plugged("failed")]),
        (state(status="ACTIVE"), state(), [unplugged()]),
        # no event: created DOWN, still ACTIVE, ACTIVE -> ERROR, a name change
        (None, state(), []),
        (state(status="ACTIVE"), state(status="ACTIVE"), []),
        (state(status="ACTIVE"), state(status="ERROR"), []),
        # data: fixed IPs, floating IPs, host, MAC
        (state(), state(fixed_ips=frozenset({("s", "10.0.0.6")})), [CHANGED]),
        (state(), state(floating_ips=frozenset({"f"})), [CHANGED]),
        (state(floating_ips=frozenset({"f"})), state(), [CHANGED]),
        (state(), state(mac="fa:16:3e:00:00:02"), [CHANGED]),
        # a rebinding: ACTIVE here, DOWN on the new host: unplugged, then network-changed
        (state(status="ACTIVE"), state(host="h2"), [unplugged(), CHANGED]),
        # becoming a server's port
        (state(device_id=""), state(), [CHANGED]),
        (state(device_id="", status="ACTIVE"), state(status="ACTIVE"), [CHANGED]),
        # deleted (plugged or not): only vif-deleted, as Neutron
        (state(status="ACTIVE"), None, [DELETED]),
        (state(), None, [DELETED]),
    ],
)
def test_port_events(old: PortState | None, new: PortState | None, events: list[Event]) -> None:
    assert port_events(old, new) == events


@pytest.mark.parametrize(
    "other",
    [
        {"device_owner": "network:router_interface"},
        {"device_owner": ""},
        {"device_id": "not-a-uuid"},
        {"device_id": ""},
    ],
)
def test_only_compute_ports_with_a_server_are_notified(other: dict[str, Any]) -> None:
    for old, new in [
        (None, state(status="ACTIVE", **other)),
        (state(**other), state(status="ACTIVE", **other)),
        (state(status="ACTIVE", **other), state(**other)),
        (state(**other), state(fixed_ips=frozenset(), **other)),
        (state(**other), None),
    ]:
        assert port_events(old, new) == []


def test_the_two_settings_split_status_and_data_events() -> None:
    old, new = state(status="ACTIVE"), state(host="h2")
    assert port_events(old, new, data_changes=False) == [unplugged()]
    assert port_events(old, new, status_changes=False) == [CHANGED]
    assert port_events(old, None, data_changes=False) == []


def test_port_state_merges_the_agents_status_on_the_requested_host() -> None:
    port = {
        "id": PORT,
        "device_id": SERVER,
        "device_owner": "compute:nova",
        "binding:host_id": "h1",
        "status": "DOWN",
        "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
    }
    assert port_state(port, None).status == "DOWN"
    assert port_state(port, {"status": "ACTIVE", "host": "h1", "chassis": "c1"}).status == "ACTIVE"
    # the chassis name is a host too (binding:host_id naming the chassis)
    assert port_state(port, {"status": "ACTIVE", "host": "x", "chassis": "h1"}).status == "ACTIVE"
    # still plugged on the old host: DOWN for the new binding
    assert port_state(port, {"status": "ACTIVE", "host": "h0", "chassis": "c0"}).status == "DOWN"
    # no binding host: wherever it is plugged
    unbound = {**port, "binding:host_id": ""}
    assert port_state(unbound, {"status": "ACTIVE", "host": "h0"}).status == "ACTIVE"
    assert port_state(port, None, ["f1"]).floating_ips == frozenset({"f1"})


# ---- batching and retries ------------------------------------------------------------------
class Recorder:
    """Stands in for Nova's HTTP call (unit tests only): records each batch, and answers
    "retry" (Nova unreachable) while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[Event]] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, events: list[Event]) -> SendOutcome:
        with self.lock:
            self.attempts += 1
            if self.down:
                return "retry"
            self.batches.append(list(events))
            return "delivered"

    def events(self) -> list[Event]:
        with self.lock:
            return [e for b in self.batches for e in b]


def ev(n: int) -> Event:
    return {"name": NETWORK_CHANGED, "server_uuid": SERVER, "tag": str(n)}


def test_queue_sends_one_batch_and_keeps_what_nova_did_not_take() -> None:
    nova = Recorder()
    queue = EventQueue(nova)
    assert queue.flush() is None  # nothing queued: no request
    queue.put([ev(1), ev(2)])
    nova.down = True
    assert queue.flush() == "retry"
    assert queue.flush() == "retry"
    queue.put([ev(3)])  # arrives while Nova is down: after the older ones
    nova.down = False
    assert queue.flush() == "delivered"
    assert nova.batches == [[ev(1), ev(2), ev(3)]]
    assert queue.flush() is None  # delivered once
    assert nova.attempts == 3


def test_queue_drops_events_older_than_novas_plugging_timeout() -> None:
    nova = Recorder()
    queue = EventQueue(nova, max_age=0.0)
    queue.put([ev(1)])
    time.sleep(0.01)
    assert queue.flush() is None
    assert nova.batches == []


def test_a_failing_sender_keeps_the_events() -> None:
    calls: list[int] = []

    def broken(events: list[Event]) -> SendOutcome:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("bug")
        return "delivered"

    queue = EventQueue(broken)
    queue.put([ev(1)])
    assert queue.flush() == "retry"
    assert queue.flush() == "delivered"
    assert calls == [1, 1]


# ---- the notifier on a store, driven through the API ---------------------------------------
def settings(**kw: Any) -> Settings:
    return Settings(store="memory", nova={"auth_url": "http://keystone.invalid/v3"}, **kw)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def agent_reports(store: Store, port: dict[str, Any], status: str | None, host: str) -> None:
    """What a chassis agent writes (wyvern.controller.bindings): None deletes it."""
    key = status_key(port["network_id"], port["id"])
    if status is None:
        store.txn([], [], [Delete(key)])
        return
    value = {"chassis": host, "host": host, "status": status, "installed_revision": 1,
             "ofport": 5}  # fmt: skip
    store.txn([], [Put(key, orjson.dumps(value))])


@pytest.fixture
def cloud() -> Iterator[tuple[TestClient, Store, Recorder, NovaNotifier]]:
    store = MemoryStore()
    nova = Recorder()
    notifier = NovaNotifier(settings(send_events_interval=0.05), store, nova).start()
    try:
        wait_for(notifier.leading.is_set, "the notifier to lead")
        with make_client(store) as client:
            yield client, store, nova, notifier
    finally:
        notifier.stop()


def expect(nova: Recorder, events: list[Event]) -> None:
    wait_for(lambda: len(nova.events()) >= len(events), f"{events}")
    time.sleep(0.2)  # (nothing more may come: a duplicate would show here)
    assert nova.events() == events
    nova.batches.clear()


def test_the_event_sequence_of_a_servers_port(
    cloud: tuple[TestClient, Store, Recorder, NovaNotifier],
) -> None:
    client, store, nova, _ = cloud
    net = create(client, "networks", name="n")
    create(client, "subnets", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    server = str(uuid.uuid4())
    port = create(
        client,
        "ports",
        network_id=net["id"],
        device_id=server,
        device_owner="compute:nova",
        **{"binding:host_id": "h1"},
    )
    tag = port["id"]
    other = create(client, "ports", network_id=net["id"])  # not a server's: never notified

    def e(name: str, status: str | None = "completed") -> Event:
        out = {"name": name, "server_uuid": server, "tag": tag}
        return {**out, "status": status} if name in (VIF_PLUGGED, VIF_UNPLUGGED) else out

    # boot: the agent reports it ACTIVE
    agent_reports(store, other, "ACTIVE", "h1")
    agent_reports(store, port, "ACTIVE", "h1")
    expect(nova, [e(VIF_PLUGGED)])
    # a new fixed IP
    ip = port["fixed_ips"][0]
    resp = client.put(
        f"/v2.0/ports/{tag}",
        json={"port": {"fixed_ips": [ip, {"subnet_id": ip["subnet_id"]}]}},
    )
    assert resp.status_code == 200, resp.text
    expect(nova, [e(NETWORK_CHANGED)])
    # a name change: nothing Nova caches
    assert client.put(f"/v2.0/ports/{tag}", json={"port": {"name": "x"}}).status_code == 200
    # migration-like rebinding: unplugged and changed; plugged once the new host reports
    resp = client.put(f"/v2.0/ports/{tag}", json={"port": {"binding:host_id": "h2"}})
    assert resp.status_code == 200, resp.text
    expect(nova, [e(VIF_UNPLUGGED), e(NETWORK_CHANGED)])
    agent_reports(store, port, "ACTIVE", "h2")
    expect(nova, [e(VIF_PLUGGED)])
    # unplugged: the agent's key goes
    agent_reports(store, port, None, "h2")
    expect(nova, [e(VIF_UNPLUGGED)])
    agent_reports(store, port, "ACTIVE", "h2")
    expect(nova, [e(VIF_PLUGGED)])
    # deleted while plugged: only vif-deleted
    assert client.delete(f"/v2.0/ports/{tag}").status_code == 204
    expect(nova, [e(VIF_DELETED)])


def test_floating_ip_association_is_network_changed_for_each_port(
    cloud: tuple[TestClient, Store, Recorder, NovaNotifier],
) -> None:
    client, _, nova, _ = cloud
    ext = create(
        client,
        "networks",
        name="ext",
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    create(client, "subnets", network_id=ext["id"], cidr="203.0.113.0/24", ip_version=4)
    net = create(client, "networks", name="n")
    sub = create(client, "subnets", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    router = create(client, "routers", name="r", external_gateway_info={"network_id": ext["id"]})
    resp = client.put(
        f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]}
    )
    assert resp.status_code == 200, resp.text
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    pa = create(client, "ports", network_id=net["id"], device_id=a, device_owner="compute:nova")
    pb = create(client, "ports", network_id=net["id"], device_id=b, device_owner="compute:az1")
    fip = create(client, "floatingips", floating_network_id=ext["id"], port_id=pa["id"])
    expect(nova, [{"name": NETWORK_CHANGED, "server_uuid": a, "tag": pa["id"]}])
    # moved to another port without a disassociation: both servers hear of it
    resp = client.put(f"/v2.0/floatingips/{fip['id']}", json={"floatingip": {"port_id": pb["id"]}})
    assert resp.status_code == 200, resp.text
    expect(
        nova,
        [
            {"name": NETWORK_CHANGED, "server_uuid": a, "tag": pa["id"]},
            {"name": NETWORK_CHANGED, "server_uuid": b, "tag": pb["id"]},
        ],
    )
    nova.batches.clear()
    assert client.delete(f"/v2.0/floatingips/{fip['id']}").status_code == 204
    expect(nova, [{"name": NETWORK_CHANGED, "server_uuid": b, "tag": pb["id"]}])


def test_nova_down_then_back_gets_each_event_once(
    cloud: tuple[TestClient, Store, Recorder, NovaNotifier],
) -> None:
    client, store, nova, _ = cloud
    net = create(client, "networks", name="n")
    create(client, "subnets", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    server = str(uuid.uuid4())
    port = create(
        client, "ports", network_id=net["id"], device_id=server, device_owner="compute:nova"
    )
    nova.down = True
    agent_reports(store, port, "ACTIVE", "h1")
    wait_for(lambda: nova.attempts >= 3, "three attempts")
    agent_reports(store, port, "DOWN", "h1")
    nova.down = False
    expect(
        nova,
        [
            {"name": VIF_PLUGGED, "server_uuid": server, "status": "completed", "tag": port["id"]},
            {
                "name": VIF_UNPLUGGED,
                "server_uuid": server,
                "status": "completed",
                "tag": port["id"],
            },
        ],
    )
    assert len(nova.batches) <= 2


def test_one_notifier_per_store_and_another_takes_over(tmp_path: Path) -> None:
    """Two API processes on one SQLite file: one notifies, each event once; when it stops,
    the other takes the key and notifies what happens next."""
    db = str(tmp_path / "store.db")
    stores = [SqliteStore(db), SqliteStore(db), SqliteStore(db)]
    nova = Recorder()
    first = NovaNotifier(settings(send_events_interval=0.05), stores[0], nova, leader_ttl=1.5)
    second = NovaNotifier(settings(send_events_interval=0.05), stores[1], nova, leader_ttl=1.5)
    first.start()
    wait_for(first.leading.is_set, "the first to lead")
    second.start()
    try:
        with make_client(stores[2]) as client:
            net = create(client, "networks", name="n")
            server = str(uuid.uuid4())
            ports = [
                create(
                    client,
                    "ports",
                    network_id=net["id"],
                    device_id=server,
                    device_owner="compute:nova",
                )
                for _ in range(2)
            ]
            kv = stores[2].get(NOVA_NOTIFIER_KEY)
            assert kv is not None and kv.value == first.me.encode()
            agent_reports(stores[2], ports[0], "ACTIVE", "h1")
            wait_for(lambda: len(nova.events()) >= 1, "the first event")
            time.sleep(0.5)
            assert [e["tag"] for e in nova.events()] == [ports[0]["id"]]
            assert not second.leading.is_set()
            first.stop()  # resigns: its lease is revoked, the key goes
            wait_for(second.leading.is_set, "the second to take over")
            agent_reports(stores[2], ports[1], "ACTIVE", "h1")
            wait_for(lambda: len(nova.events()) >= 2, "the second event")
            time.sleep(0.5)
            assert [e["tag"] for e in nova.events()] == [ports[0]["id"], ports[1]["id"]]
    finally:
        first.stop()
        second.stop()
        for s in stores:
            s.close()


# ---- for real: Keystone, the catalog, a Nova stand-in --------------------------------------
@pytest.fixture
def nova(keystone: KeystoneServer) -> Iterator[tuple[NovaApi, dict[str, str]]]:
    tag = uuid.uuid4().hex[:8]
    service = keystone.service_user(f"neutron-{tag}")
    with NovaApi(keystone_validator(keystone)) as api:
        register_compute(keystone, api.endpoint)
        yield api, nova_options(service)


def test_events_reach_nova_through_keystone_and_the_catalog(
    nova: tuple[NovaApi, dict[str, str]], keystone: KeystoneServer
) -> None:
    api, options = nova
    store = MemoryStore()
    conf = Settings(store="memory", nova=options, send_events_interval=0.1)
    notifier = NovaNotifier(conf, store).start()
    try:
        wait_for(notifier.leading.is_set, "the notifier to lead")
        with make_client(store) as client:
            net = create(client, "networks", name="n")
            server = str(uuid.uuid4())
            port = create(
                client, "ports", network_id=net["id"], device_id=server,
                device_owner="compute:nova",
            )  # fmt: skip
            api.state.fail_with = 503  # Nova down: retried
            agent_reports(store, port, "ACTIVE", "h1")
            wait_for(lambda: len(api.state.refused) >= 2, "two refused attempts")
            api.state.fail_with = None
            wait_for(lambda: len(api.state.events()) >= 1, "the event in Nova")
            time.sleep(0.3)
            assert api.state.events() == [
                {
                    "name": VIF_PLUGGED,
                    "server_uuid": server,
                    "status": "completed",
                    "tag": port["id"],
                }
            ]
            received = api.state.requests[0]
            assert received.roles >= {"service"}
            assert received.microversion == "2.1"
            assert received.openstack_api_version == "compute 2.1"
            # Its token revoked in Keystone: Nova answers 401, the notifier gets a new
            # token and the next event is delivered.
            keystone.admin.tokens.revoke_token(received.token)
            refused = len(api.state.refused)
            agent_reports(store, port, "DOWN", "h1")
            wait_for(lambda: len(api.state.events()) >= 2, "the second event in Nova")
            assert api.state.events()[1]["name"] == VIF_UNPLUGGED
            assert [s for s, _ in api.state.refused[refused:]] == [401]
            assert api.state.requests[1].token != received.token
    finally:
        notifier.stop()


def test_the_nova_stand_in_refuses_what_nova_refuses(
    nova: tuple[NovaApi, dict[str, str]], keystone: KeystoneServer
) -> None:
    import requests

    api, options = nova
    tag = uuid.uuid4().hex[:8]
    project = keystone.add_project(f"p-{tag}")
    keystone.add_user(f"m-{tag}", "pw", project, ["member"])
    member = keystone.session(f"m-{tag}", "pw", f"p-{tag}").get_token()
    service = keystone.session(options["username"], options["password"], "service").get_token()
    url = f"{api.endpoint}/os-server-external-events"
    good = {"events": [{"name": VIF_PLUGGED, "server_uuid": SERVER, "tag": PORT}]}
    assert requests.post(url, json=good, headers={"X-Auth-Token": "bogus"}).status_code == 401
    assert requests.post(url, json=good, headers={"X-Auth-Token": member}).status_code == 403
    bad = {"events": [{"name": "network-vif-exploded", "server_uuid": SERVER}]}
    assert requests.post(url, json=bad, headers={"X-Auth-Token": service}).status_code == 400
    resp = requests.post(url, json=good, headers={"X-Auth-Token": service})
    assert resp.status_code == 200
    assert resp.json()["events"][0]["code"] == 200
