"""Port status keys as the agent writes them (StatusWriter), read back from the store."""

from __future__ import annotations

from typing import Any

import orjson

from wyvern.controller.bindings import StatusWriter
from wyvern.model.keys import STATUS_PORTS, status_key
from wyvern.nb.memory import MemoryStore
from wyvern.nb.store import Put, Store


def _statuses(store: Store) -> dict[str, dict[str, Any]]:
    return {kv.key: orjson.loads(kv.value) for kv in store.list(STATUS_PORTS).items}


def _put(store: Store, key: str, obj: dict[str, Any]) -> None:
    store.txn([], [Put(key, orjson.dumps(obj))], [])


def test_statuses_go_under_the_port_network_and_only_change_when_something_does() -> None:
    store = MemoryStore()
    writer = StatusWriter(store, "hv1", "host1")
    assert writer.update({"p1": 5}, {"p1": "n1"}, {"p1": 10}, {"p1": 9}) == 1
    st = _statuses(store)[status_key("n1", "p1")]
    assert (st["chassis"], st["host"], st["status"], st["ofport"]) == ("hv1", "host1", "DOWN", 5)
    assert writer.update({"p1": 5}, {"p1": "n1"}, {"p1": 10}, {"p1": 10}) == 1
    assert _statuses(store)[status_key("n1", "p1")]["status"] == "ACTIVE"
    before = store.revision()
    assert writer.update({"p1": 5}, {"p1": "n1"}, {"p1": 10}, {"p1": 12}) == 0
    assert store.revision() == before
    assert writer.update({}, {}, {}, 12) == 1  # unplugged: its status goes
    assert _statuses(store) == {}


def test_a_restarted_agent_removes_its_stale_statuses_wherever_they_are() -> None:
    """Ours under a network no longer followed, or under the older /status/ports/<id>
    layout, are found by the first update; other chassis's are left alone."""
    store = MemoryStore()
    mine = {"chassis": "hv1", "host": "h", "status": "ACTIVE", "installed_revision": 1}
    _put(store, status_key("n9", "unplugged"), {**mine, "ofport": 3})
    _put(store, f"{STATUS_PORTS}p1", {**mine, "ofport": 4})  # older layout
    _put(store, status_key("n9", "theirs"), {**mine, "chassis": "hv2", "ofport": 1})
    writer = StatusWriter(store, "hv1", "h")
    writer.update({"p1": 4}, {"p1": "n1"}, {"p1": 1}, 2)
    assert set(_statuses(store)) == {status_key("n1", "p1"), status_key("n9", "theirs")}
    assert _statuses(store)[status_key("n1", "p1")]["status"] == "ACTIVE"
