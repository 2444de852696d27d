"""Two API server processes on one real etcd, 16 concurrent clients, 1,000 ports on a /22.

Uniqueness of IPs and MACs must hold across processes (claims in the store transaction,
never read-then-write), every create must be accounted for, and running the subnet dry
must answer 409 IpAddressGenerationFailure, never 500.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import etcd_server, start_api

pytestmark = pytest.mark.system

PORTS = 1000
CLIENTS = 16


def test_two_servers_one_etcd_no_duplicates(tmp_path: Path) -> None:
    with etcd_server(tmp_path / "etcd") as etcd:
        env = {"WYVERN_ETCD_ENDPOINTS": json.dumps(etcd.endpoints)}
        with (
            start_api(tmp_path / "api1", store="etcd", env=env) as a,
            start_api(tmp_path / "api2", store="etcd", env=env) as b,
        ):
            s = requests.Session()
            s.put(f"{a.url}v2.0/quotas/default", json={"quota": {"port": -1}}).raise_for_status()
            net = s.post(f"{a.url}v2.0/networks", json={"network": {"name": "n"}})
            net_id = net.json()["network"]["id"]
            sub = s.post(
                f"{b.url}v2.0/subnets",
                json={"subnet": {"network_id": net_id, "cidr": "10.20.0.0/22", "ip_version": 4}},
            )
            assert sub.status_code == 201, sub.text
            usable = 1024 - 3  # network, broadcast and gateway addresses

            def worker(i: int) -> list[tuple[int, Any]]:
                base = (a if i % 2 else b).url
                sess = requests.Session()
                out = []
                for _ in range(PORTS // CLIENTS + (1 if i < PORTS % CLIENTS else 0)):
                    r = sess.post(f"{base}v2.0/ports", json={"port": {"network_id": net_id}})
                    out.append((r.status_code, r.json()))
                return out

            with ThreadPoolExecutor(CLIENTS) as pool:
                results = [x for chunk in pool.map(worker, range(CLIENTS)) for x in chunk]
            assert len(results) == PORTS
            assert Counter(code for code, _ in results) == {201: PORTS}, [
                body for code, body in results if code != 201
            ][:3]
            created = [body["port"] for _, body in results]
            ips = [p["fixed_ips"][0]["ip_address"] for p in created]
            macs = [p["mac_address"] for p in created]
            assert len(set(ips)) == PORTS and len(set(macs)) == PORTS

            # Both servers see exactly what was acknowledged.
            for server in (a, b):
                listed = s.get(f"{server.url}v2.0/ports?network_id={net_id}").json()["ports"]
                assert {p["id"] for p in listed} == {p["id"] for p in created}

            # Run the subnet dry from both servers at once: the rest succeed, then 409s.
            def drain(i: int) -> list[tuple[int, Any]]:
                base = (a if i % 2 else b).url
                sess = requests.Session()
                return [
                    (r.status_code, r.json())
                    for r in (
                        sess.post(f"{base}v2.0/ports", json={"port": {"network_id": net_id}})
                        for _ in range(5)
                    )
                ]

            with ThreadPoolExecutor(8) as pool:
                more = [x for chunk in pool.map(drain, range(8)) for x in chunk]
            codes = Counter(code for code, _ in more)
            assert codes[201] == usable - PORTS, codes
            assert codes[409] == len(more) - codes[201], codes
            assert all(
                body["NeutronError"]["type"] == "IpAddressGenerationFailure"
                for code, body in more
                if code == 409
            )
            listed = s.get(f"{a.url}v2.0/ports?network_id={net_id}&fields=fixed_ips").json()
            all_ips = [p["fixed_ips"][0]["ip_address"] for p in listed["ports"]]
            assert len(all_ips) == usable == len(set(all_ips))


def test_two_servers_one_etcd_pool_allocations_never_overlap(tmp_path: Path) -> None:
    """8 clients on two API processes allocate /28s from one subnet pool with room for
    32: every allocation is a distinct block of the pool, the rest are Neutron's
    SubnetAllocationError, and the store holds exactly the acknowledged subnets."""
    with etcd_server(tmp_path / "etcd") as etcd:
        env = {"WYVERN_ETCD_ENDPOINTS": json.dumps(etcd.endpoints)}
        with (
            start_api(tmp_path / "api1", store="etcd", env=env) as a,
            start_api(tmp_path / "api2", store="etcd", env=env) as b,
        ):
            s = requests.Session()
            s.put(f"{a.url}v2.0/quotas/default", json={"quota": {"subnet": -1, "network": -1}})
            pool = s.post(
                f"{a.url}v2.0/subnetpools",
                json={
                    "subnetpool": {
                        "name": "p",
                        "prefixes": ["10.30.0.0/23"],
                        "default_prefixlen": 28,
                    }
                },
            ).json()["subnetpool"]
            nets = [
                s.post(f"{a.url}v2.0/networks", json={"network": {"name": f"n{i}"}}).json()[
                    "network"
                ]["id"]
                for i in range(40)
            ]

            def worker(i: int) -> list[tuple[int, Any]]:
                base = (a if i % 2 else b).url
                sess = requests.Session()
                return [
                    (r.status_code, r.json())
                    for r in (
                        sess.post(
                            f"{base}v2.0/subnets",
                            json={
                                "subnet": {
                                    "network_id": n,
                                    "ip_version": 4,
                                    "subnetpool_id": pool["id"],
                                }
                            },
                        )
                        for n in nets[i::8]
                    )
                ]

            with ThreadPoolExecutor(8) as ex:
                results = [x for chunk in ex.map(worker, range(8)) for x in chunk]
            ok = [body["subnet"]["cidr"] for code, body in results if code == 201]
            failed = [body for code, body in results if code != 201]
            assert len(ok) == 32 and len(set(ok)) == 32, failed[:3]
            assert {f["NeutronError"]["type"] for f in failed} == {"SubnetAllocationError"}
            blocks = sorted(ipaddress.ip_network(c) for c in ok)
            assert all(not x.overlaps(y) for x, y in itertools.pairwise(blocks))
            assert all(b.subnet_of(ipaddress.ip_network("10.30.0.0/23")) for b in blocks)
            for server in (a, b):
                listed = s.get(f"{server.url}v2.0/subnets").json()["subnets"]
                assert sorted(x["cidr"] for x in listed) == sorted(ok)
