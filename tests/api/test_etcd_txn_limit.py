"""The API on a stock etcd: --max-txn-ops left at its default of 128 (issue 11, defect 3).

A bulk create of 25 ports and a cascade delete of a network with 70 ports answered 500;
only our test launcher raised the limit. Now a cascade delete that does not fit in one
transaction is split safely, and a bulk create that does not fit is refused with a 400
that names the limit, with nothing applied.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from fastapi.testclient import TestClient

from tests.api.conftest import make_client
from tests.harness import start_api
from wyvern.model.keys import index_key, kind_prefix, obj_key, uniq_key, uniq_prefix
from wyvern.nb.etcd import EtcdStore
from wyvern.nb.etcd_server import EtcdServer

pytestmark = pytest.mark.system  # a real etcd (tests/system.py decides, never CI)


@pytest.fixture(scope="module")
def stock_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A private etcd with etcd's own --max-txn-ops (128)."""
    server = EtcdServer(
        tmp_path_factory.mktemp("stock-etcd"), die_with_parent=True, max_txn_ops=None
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(stock_etcd: EtcdServer) -> Iterator[tuple[TestClient, EtcdStore]]:
    # A fresh key space per test.
    requests.post(
        f"{stock_etcd.endpoints[0]}/v3/kv/deleterange",
        json={"key": "AA==", "range_end": "AA=="},
        timeout=10,
    ).raise_for_status()
    store = EtcdStore(stock_etcd.endpoints)  # Wyvern's default limit: 128, as the server
    with make_client(store) as client:
        assert client.put("/v2.0/quotas/default", json={"quota": {"port": -1}}).status_code == 200
        yield client, store


def network_with_ports(client: TestClient, ports: int, cidr: str) -> tuple[str, str]:
    net = client.post("/v2.0/networks", json={"network": {"name": "big"}})
    assert net.status_code == 201, net.text
    net_id: str = net.json()["network"]["id"]
    sub = client.post(
        "/v2.0/subnets", json={"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4}}
    )
    assert sub.status_code == 201, sub.text
    made = 0
    while made < ports:
        n = min(10, ports - made)  # 10 ports fit in one transaction
        resp = client.post("/v2.0/ports", json={"ports": [{"network_id": net_id}] * n})
        assert resp.status_code == 201, resp.text
        made += n
    return net_id, sub.json()["subnet"]["id"]


def port_count(client: TestClient, net_id: str) -> int:
    ports: list[Any] = client.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]
    return len(ports)


def test_bulk_create_too_big_for_one_transaction_is_refused_whole(
    api: tuple[TestClient, EtcdStore],
) -> None:
    client, _ = api
    net_id, _ = network_with_ports(client, 0, "10.1.0.0/24")
    fits = client.post("/v2.0/ports", json={"ports": [{"network_id": net_id}] * 10})
    assert fits.status_code == 201, fits.text
    resp = client.post("/v2.0/ports", json={"ports": [{"network_id": net_id}] * 25})
    assert resp.status_code == 400, resp.text
    message = resp.json()["NeutronError"]["message"]
    assert "limit of 128" in message and "max-txn-ops" in message, message
    assert port_count(client, net_id) == 10  # all or nothing: none of the 25


def test_cascade_delete_of_2000_ports_on_a_stock_etcd(api: tuple[TestClient, EtcdStore]) -> None:
    client, store = api
    net_id, subnet_id = network_with_ports(client, 2000, "10.2.0.0/20")
    assert port_count(client, net_id) == 2000
    resp = client.delete(f"/v2.0/networks/{net_id}?cascade=true")
    assert resp.status_code == 204, resp.text
    assert client.get(f"/v2.0/networks/{net_id}").status_code == 404
    assert port_count(client, net_id) == 0
    assert client.get(f"/v2.0/subnets/{subnet_id}").status_code == 404
    # Nothing the ports or the subnet claimed is left behind.
    assert store.list(uniq_prefix("ip", subnet_id)).items == []
    assert store.list(uniq_prefix("mac", net_id)).items == []
    assert store.list(uniq_prefix("portkey", net_id)).items == []
    # The same CIDR and a new network work again at once.
    again, _ = network_with_ports(client, 1, "10.2.0.0/20")
    assert port_count(client, again) == 1


def test_a_small_cascade_delete_stays_one_transaction(api: tuple[TestClient, EtcdStore]) -> None:
    """Splitting is only for what does not fit: mark + delete, two revisions, as before."""
    client, store = api
    net_id, _ = network_with_ports(client, 5, "10.3.0.0/24")
    before = store.revision()
    assert client.delete(f"/v2.0/networks/{net_id}?cascade=true").status_code == 204
    assert store.revision() - before == 2
    assert port_count(client, net_id) == 0


def test_cascade_delete_of_70_ports_splits(api: tuple[TestClient, EtcdStore]) -> None:
    client, store = api
    net_id, _ = network_with_ports(client, 70, "10.4.0.0/24")
    before = store.revision()
    assert client.delete(f"/v2.0/networks/{net_id}?cascade=true").status_code == 204
    assert store.revision() - before > 2  # several transactions
    assert port_count(client, net_id) == 0


def test_a_split_cascade_delete_killed_midway_leaves_a_consistent_store(
    stock_etcd: EtcdServer, tmp_path: Path
) -> None:
    """kill -9 of the API while it deletes the ports chunk by chunk: every port is either
    gone with all its claims or whole with all of them (no orphaned claim, no port without
    its IP or MAC), and the network is still there."""
    requests.post(
        f"{stock_etcd.endpoints[0]}/v3/kv/deleterange",
        json={"key": "AA==", "range_end": "AA=="},
        timeout=10,
    ).raise_for_status()
    store = EtcdStore(stock_etcd.endpoints)
    # The store of this API kills its process right after a chosen write (crashpoint.py):
    # the lease grant, the mark, then the chunks of ports; 4 = after the second chunk.
    arm = tmp_path / "crashpoint"
    arm.write_text("none 0")
    with start_api(
        tmp_path / "api",
        etcd_endpoints=stock_etcd.endpoints,
        env={"CRASHPOINT_FILE": str(arm)},
        command=[sys.executable, "-m", "tests.api.crashpoint"],
    ) as api:
        s = requests.Session()
        base = f"{api.url}v2.0"
        s.put(f"{base}/quotas/default", json={"quota": {"port": -1}}).raise_for_status()
        net_id = s.post(f"{base}/networks", json={"network": {"name": "n"}}).json()["network"]["id"]
        body = {"subnet": {"network_id": net_id, "cidr": "10.5.0.0/22", "ip_version": 4}}
        subnet_id = s.post(f"{base}/subnets", json=body).json()["subnet"]["id"]
        for _ in range(20):
            resp = s.post(f"{base}/ports", json={"ports": [{"network_id": net_id}] * 20})
            assert resp.status_code == 201, resp.text
        ports_prefix = kind_prefix("ports", net_id)
        assert len(store.list(ports_prefix, keys_only=True).items) == 400

        arm.write_text("delete 4")
        with pytest.raises(requests.ConnectionError):  # the API dies under it
            s.delete(f"{base}/networks/{net_id}?cascade=true", timeout=60)
        api.proc.process.wait(10)

    left = {
        kv.key.rsplit("/", 1)[1]: orjson.loads(kv.value) for kv in store.list(ports_prefix).items
    }
    assert 0 < len(left) < 400, len(left)  # killed midway
    assert store.get(obj_key("networks", net_id)) is not None
    ip_claims = {kv.key: kv.value.decode() for kv in store.list(uniq_prefix("ip", subnet_id)).items}
    mac_claims = {kv.key: kv.value.decode() for kv in store.list(uniq_prefix("mac", net_id)).items}
    # Every claim belongs to a port that is still there...
    assert set(ip_claims.values()) <= set(left) and set(mac_claims.values()) <= set(left)
    # ... and every port still there holds all of its claims.
    for port_id, port in left.items():
        for ip in port["fixed_ips"]:
            assert ip_claims[uniq_key("ip", ip["subnet_id"], ip["ip_address"])] == port_id
        assert mac_claims[uniq_key("mac", net_id, port["mac_address"])] == port_id
        assert store.get(index_key("ports", port_id)) is not None
