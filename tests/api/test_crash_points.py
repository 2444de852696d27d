"""Every API operation that writes the store more than once, killed (SIGKILL) right after
each of its writes in a real `wyvern api` process, on SQLite and on etcd (issue 11,
defect 1: nothing lost, nothing stuck).

The operations that take more than one store write (and why each is safe to cut between
them) are listed in docs/architecture.md ("Operations of more than one transaction"):
  - DELETE of a network, subnet, security group, address group or QoS policy
    (delete_marked): lease
    grant, mark + intent, [on etcd, a cascade too big for one transaction: ports in
    chunks], delete + intent release, lease revoke. A refused delete (NetworkInUse found
    after the mark) undoes its mark instead.
  - POST of a port (bulk or not) or a security group, the first of its project: the
    project's default group (with its rules), then the object itself.
  - DELETE of an RBAC policy (rbac_policies.revoke): lease grant, mark on the object +
    intent, delete + unmark + intent release, lease revoke. A refused one (a port of
    the target found after the mark) unmarks instead.
Every other write (network, subnet, router, floating IP, rule and address group creates
and updates, router interfaces, port, router and floating IP deletes, quotas, tags) is
one transaction.

For each operation and each n = 1, 2, ... the store (tests/api/crashpoint.py) kills the
API right after the operation's n-th write, until the operation completes with fewer
writes: so every boundary is cut once, the last one being "everything committed, no
response". After each kill a fresh API starts on the same store, and then:
  - no zombie: no object is left marked, every object the store holds is listed and
    GET-able through the API, and each child's parent exists;
  - no leak: every claim (IP, MAC, port and network keys, VLAN ids, default groups, rule
    digests), id index, host index and owner entry (what quotas count) belongs to an
    object that exists, and every object holds the claims and entries it should;
  - the same request again succeeds (a delete whose work was all done answers 404),
    sent at once, while the dead process's lease still runs (every other round), or
    after it ran out and the new API settled the marks at its start (the other rounds);
  - deleting everything the round made through the API returns the store to exactly the
    key set it had before the round.

The dead process's lease is revoked by the harness instead of left to run out
(INTENT_TTL): that is what the store does at expiry, and test_crash_safe_deletes waits
for a real expiry. etcd runs with etcd_max_txn_ops = 32 (the least allowed), so the
cascade delete of a network with seven ports (six, one with a floating IP, and a router
interface) drains them in two chunks before its final transaction. That network is on
VLAN 101 in every round: a leaked segment would also fail the next round's create
(VlanIdInUse), as the issue saw.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests import system
from tests.api.conftest import as_project, create, make_client
from tests.api.test_crash_safe_deletes import _marked_by_a_dead_process
from tests.conftest import open_store
from tests.harness import HOST, ApiServer, free_port, process_env, spawn, wait_http
from wyvern.api import rbac, resource
from wyvern.api.repo import Repo
from wyvern.api.resources import RESOURCE_CLASSES
from wyvern.config import Settings
from wyvern.model.keys import INTENTS_PREFIX, ROOT, index_key, owner_key, uniq_key
from wyvern.nb.etcd import EtcdStore
from wyvern.nb.memory import MemoryStore
from wyvern.nb.sqlite import SqliteStore
from wyvern.nb.store import KeyValue, Store

V2 = "v2.0"
# Store kind -> the API collection that lists it.
COLLECTIONS = {
    "networks": "networks",
    "subnets": "subnets",
    "ports": "ports",
    "security_groups": "security-groups",
    "security_group_rules": "security-group-rules",
    "address_groups": "address-groups",
    "routers": "routers",
    "floatingips": "floatingips",
    "qos_policies": "qos/policies",
}
OWNED = {cls.defn.kind for cls in RESOURCE_CLASSES if cls.defn.owned}
# Children and the kind of their parent.
PARENTS = {"subnets": "networks", "ports": "networks", "security_group_rules": "security_groups"}
L3_OWNERS = {"network:router_interface", "network:router_gateway", "network:floatingip"}
DERIVED = {"uniq", "owner", "index", "quotas", "agents", "intent", "status", "chassis"}
ETCD_MAX_TXN_OPS = 32  # (the floor of the setting)


# ----------------------------------------------------------------------------- the API


class Api:
    """A `wyvern api` (tests/api/crashpoint.py) on the backend's store, restartable."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.arm_file = run_dir / "crashpoint"
        self.arm_file.parent.mkdir(parents=True, exist_ok=True)
        self.arm_file.write_text("none 0")
        self.server: ApiServer | None = None
        self.http = requests.Session()
        self.http.trust_env = False
        self.starts = 0

    def start(self) -> None:
        self.arm(0)  # (a fresh process would take the last token as new)
        port = free_port()
        env = process_env(
            {
                "WYVERN_RUN_DIR": str(self.run_dir),
                "WYVERN_API_HOST": HOST,
                "WYVERN_API_PORT": str(port),
                "CRASHPOINT_FILE": str(self.arm_file),
                **self.env,
            }
        )
        cmd = [sys.executable, "-m", "tests.api.crashpoint", "api", "--no-access-log"]
        proc = spawn(cmd, self.run_dir / "api.out", env, name="wyvern api (crashpoint)")
        wait_http(f"http://{HOST}:{port}/", proc, timeout=60)
        self.server = ApiServer(proc, port, self.run_dir, env)
        self.http = requests.Session()
        self.http.trust_env = False
        self.starts += 1

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def arm(self, n: int) -> None:
        """Die right after the n-th store write from now (0: never)."""
        self.arm_file.write_text(f"{uuid.uuid4().hex} {n}")

    def alive(self) -> bool:
        return self.server is not None and self.server.proc.alive()

    def call(
        self, method: str, path: str, body: Any = None, project: str | None = None
    ) -> requests.Response:
        assert self.server is not None
        headers = {"X-Project-Id": project, "X-Roles": "member"} if project else {}
        return self.http.request(
            method, f"{self.server.url}{V2}/{path}", json=body, headers=headers, timeout=60
        )

    def ok(self, method: str, path: str, body: Any = None, project: str | None = None) -> Any:
        resp = self.call(method, path, body, project)
        assert resp.status_code in (200, 201, 204), f"{method} {path}: {resp.text}"
        return resp.json() if resp.content else None


# ----------------------------------------------------------------------------- operations


@dataclass
class Op:
    """One operation: what it needs, its request, and what it answers when it completes."""

    name: str
    setup: Callable[[Api, str], dict[str, str]]
    request: Callable[[Api, dict[str, str]], requests.Response]
    status: int
    # The store writes it takes (on etcd, if different): the inventory, checked.
    writes: int
    etcd_writes: int | None = None
    # What a retry answers once the killed attempt had done all its work (a delete: 404).
    done: int | None = None
    # What must be gone once it completed (a delete's object), or still there (refused).
    gone: str | None = None
    kept: str | None = None


def _network(api: Api, project: str, cidr: str = "10.7.0.0/24", **attrs: Any) -> tuple[str, str]:
    body: dict[str, Any] = {"name": "n", "project_id": project, **attrs}
    net_id = api.ok("POST", "networks", {"network": body})["network"]["id"]
    sub = {"network_id": net_id, "cidr": cidr, "ip_version": 4, "project_id": project}
    return net_id, api.ok("POST", "subnets", {"subnet": sub})["subnet"]["id"]


def _ports(api: Api, project: str, net_id: str, n: int, owner: str = "compute:nova") -> None:
    """Bulk creates of two (on etcd, six ports are more than one transaction may hold)."""
    port = {"network_id": net_id, "project_id": project, "device_owner": owner}
    for i in range(0, n, 2):
        api.ok("POST", "ports", {"ports": [port] * min(2, n - i)})


def _setup_cascade(api: Api, project: str) -> dict[str, str]:
    """A VLAN network (its segment claim must not leak) with six ports, one of them with a
    floating IP, and an interface of a router with a gateway: the cascade's ports take
    the router's interface and the floating IP's association with them."""
    vlan = {"provider:network_type": "vlan", "provider:physical_network": "physnet1"}
    net_id, sub_id = _network(api, project, **vlan, **{"provider:segmentation_id": 101})
    _ports(api, project, net_id, 6)
    ext_id, _ = _network(
        api,
        project,
        "172.24.9.0/24",
        **{
            "router:external": True,
            "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
        },
    )
    gateway = {"network_id": ext_id}
    body = {"router": {"name": "r", "project_id": project, "external_gateway_info": gateway}}
    router = api.ok("POST", "routers", body)["router"]["id"]
    api.ok("PUT", f"routers/{router}/add_router_interface", {"subnet_id": sub_id})
    # The floating IP's port is the last compute port in key order, so the chunks are the
    # same every round (two: whichever of a plain port or the interface comes first sets
    # their size, and the floating IP's port, the biggest, is in the last).
    ports = api.ok("GET", f"ports?network_id={net_id}&device_owner=compute:nova")["ports"]
    port = max(ports, key=lambda p: p["id"])
    fip = {"floating_network_id": ext_id, "port_id": port["id"], "project_id": project}
    api.ok("POST", "floatingips", {"floatingip": fip})
    return {"path": f"networks/{net_id}?cascade=true", "object": f"networks/{net_id}"}


def _setup_in_use(api: Api, project: str) -> dict[str, str]:
    net_id, _ = _network(api, project)
    _ports(api, project, net_id, 1)
    return {"path": f"networks/{net_id}", "object": f"networks/{net_id}"}


def _setup_subnet(api: Api, project: str) -> dict[str, str]:
    net_id, sub_id = _network(api, project)
    _ports(api, project, net_id, 1, owner="network:dhcp")
    return {"path": f"subnets/{sub_id}", "object": f"subnets/{sub_id}"}


def _setup_group(api: Api, project: str) -> dict[str, str]:
    """Group a with a rule, and group b with a rule naming a (deleted with a)."""
    ids = []
    for name in ("a", "b"):
        body = {"security_group": {"name": name, "project_id": project}}
        ids.append(api.ok("POST", "security-groups", body)["security_group"]["id"])
    for group, remote in ((ids[0], None), (ids[1], ids[0])):
        rule = {
            "security_group_id": group,
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 22,
            "port_range_max": 22,
            "remote_group_id": remote,
        }
        api.ok("POST", "security-group-rules", {"security_group_rule": rule})
    return {"path": f"security-groups/{ids[0]}", "object": f"security-groups/{ids[0]}"}


def _setup_qos_policy(api: Api, project: str) -> dict[str, str]:
    """A project's default QoS policy with a rule (its default claim must not leak)."""
    body = {"policy": {"name": "q", "project_id": project, "is_default": True}}
    pid = api.ok("POST", "qos/policies", body)["policy"]["id"]
    rule = {"bandwidth_limit_rule": {"max_kbps": 1000}}
    api.ok("POST", f"qos/policies/{pid}/bandwidth_limit_rules", rule)
    return {"path": f"qos/policies/{pid}", "object": f"qos/policies/{pid}"}


def _setup_address_group(api: Api, project: str) -> dict[str, str]:
    body = {"address_group": {"name": "ag", "project_id": project, "addresses": ["10.1.0.0/24"]}}
    ag_id = api.ok("POST", "address-groups", body)["address_group"]["id"]
    return {"path": f"address-groups/{ag_id}", "object": f"address-groups/{ag_id}"}


def _setup_port(api: Api, project: str) -> dict[str, str]:
    net_id, _ = _network(api, project)
    _ports(api, project, net_id, 1)
    port = api.ok("GET", f"ports?network_id={net_id}")["ports"][0]
    return {"path": f"ports/{port['id']}", "object": f"ports/{port['id']}"}


def _setup_port_create(api: Api, project: str) -> dict[str, str]:
    net_id, _ = _network(api, project)  # (creates no default group: ports do)
    return {"network": net_id, "project": project}


def _setup_router(api: Api, project: str) -> dict[str, str]:
    _, sub_id = _network(api, project)
    router = api.ok("POST", "routers", {"router": {"name": "r", "project_id": project}})
    return {"router": router["router"]["id"], "subnet": sub_id}


def _setup_interface(api: Api, project: str) -> dict[str, str]:
    ctx = _setup_router(api, project)
    api.ok("PUT", f"routers/{ctx['router']}/add_router_interface", {"subnet_id": ctx["subnet"]})
    return ctx


def _setup_external(api: Api, project: str) -> dict[str, str]:
    net_id, _ = _network(
        api,
        project,
        cidr="172.24.9.0/24",
        **{
            "router:external": True,
            "provider:network_type": "vlan",
            "provider:physical_network": "physnet1",
        },
    )
    return {"network": net_id, "project": project}


def _setup_share(api: Api, project: str, in_use: bool = False) -> dict[str, str]:
    """Project's network shared with another project by an RBAC policy (and, `in_use`,
    a port of that project on it: the delete is refused after its mark)."""
    net_id, _ = _network(api, project)
    target = f"t{project[:16]}"
    body = {
        "rbac_policy": {
            "object_type": "network",
            "object_id": net_id,
            "action": "access_as_shared",
            "target_tenant": target,
            "project_id": project,
        }
    }
    policy = api.ok("POST", "rbac-policies", body)["rbac_policy"]["id"]
    if in_use:
        api.ok("POST", "ports", {"port": {"network_id": net_id}}, project=target)
    return {"path": f"rbac-policies/{policy}", "object": f"rbac-policies/{policy}"}


def _delete(api: Api, ctx: dict[str, str]) -> requests.Response:
    return api.call("DELETE", ctx["path"])


def _create_ports(api: Api, ctx: dict[str, str]) -> requests.Response:
    body = {"ports": [{"network_id": ctx["network"]}] * 2}
    return api.call("POST", "ports", body, project=ctx["project"])


def _create_group(api: Api, ctx: dict[str, str]) -> requests.Response:
    return api.call("POST", "security-groups", {"security_group": {"name": "g"}}, ctx["project"])


def _add_interface(api: Api, ctx: dict[str, str]) -> requests.Response:
    body = {"subnet_id": ctx["subnet"]}
    return api.call("PUT", f"routers/{ctx['router']}/add_router_interface", body)


def _remove_interface(api: Api, ctx: dict[str, str]) -> requests.Response:
    body = {"subnet_id": ctx["subnet"]}
    return api.call("PUT", f"routers/{ctx['router']}/remove_router_interface", body)


def _create_fip(api: Api, ctx: dict[str, str]) -> requests.Response:
    body = {"floatingip": {"floating_network_id": ctx["network"], "project_id": ctx["project"]}}
    return api.call("POST", "floatingips", body)


OPS = [
    # More than one write: mark (grant, mark + intent), [chunks], delete (+ revoke).
    Op("network cascade delete", _setup_cascade, _delete, 204, 4, 6, 404, gone="object"),
    Op("network delete refused after its mark", _setup_in_use, _delete, 409, 4, kept="object"),
    Op("subnet delete", _setup_subnet, _delete, 204, 4, done=404, gone="object"),
    Op("security group delete", _setup_group, _delete, 204, 4, done=404, gone="object"),
    Op("address group delete", _setup_address_group, _delete, 204, 4, done=404, gone="object"),
    Op("qos policy delete", _setup_qos_policy, _delete, 204, 4, done=404, gone="object"),
    # Revocations (wyvern.api.resources.rbac_policies.revoke): grant, mark, change, revoke.
    Op("rbac policy delete", _setup_share, _delete, 204, 4, done=404, gone="object"),
    Op(
        "rbac policy delete refused after its mark",
        lambda api, p: _setup_share(api, p, in_use=True),
        _delete,
        409,
        4,
        kept="object",
    ),
    # The project's default group, then the objects.
    Op("first bulk port create", _setup_port_create, _create_ports, 201, 2),
    Op("first security group create", lambda api, p: {"project": p}, _create_group, 201, 2),
    # Controls: one transaction each (the inventory says so; the count proves it).
    Op("port delete", _setup_port, _delete, 204, 1, done=404, gone="object"),
    Op("router interface add", _setup_router, _add_interface, 200, 1, done=400),
    Op("router interface remove", _setup_interface, _remove_interface, 200, 1, done=404),
    Op("floating IP create", _setup_external, _create_fip, 201, 1),
]


# ----------------------------------------------------------------------------- invariants


def _keys(store: Store) -> dict[str, KeyValue]:
    return {kv.key: kv for kv in store.list(ROOT).items}


def store_problems(store: Store) -> list[str]:
    """What is wrong with the store's derived keys and objects (empty: consistent)."""
    kvs = _keys(store)
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    parent_of: dict[tuple[str, str], str] = {}
    for key, kv in kvs.items():
        parts = key[len(ROOT) :].split("/")
        if parts[0] in DERIVED:
            continue
        objects[(parts[0], parts[-1])] = orjson.loads(kv.value)
        if len(parts) == 3:
            parent_of[(parts[0], parts[-1])] = parts[1]
    ids = {id_ for _, id_ in objects}
    problems: list[str] = []

    def has(key: str, value: str | None = None) -> None:
        kv = kvs.get(key)
        if kv is None:
            problems.append(f"missing {key}")
        elif value is not None and kv.value.decode() != value:
            problems.append(f"{key} holds {kv.value.decode()!r}, not {value!r}")

    for (kind, id_), obj in objects.items():
        if obj.get("_deleting"):
            problems.append(f"zombie: {kind} {id_} still marked _deleting")
        if kind in PARENTS:
            parent = parent_of[(kind, id_)]
            has(index_key(kind, id_), parent)
            if (PARENTS[kind], parent) not in objects:
                problems.append(f"orphan: {kind} {id_} of missing {PARENTS[kind]} {parent}")
        if kind in OWNED and obj.get("project_id"):
            has(owner_key(obj["project_id"], kind, id_))
        if kind == "ports":
            for ip in obj.get("fixed_ips") or []:
                has(uniq_key("ip", ip["subnet_id"], ip["ip_address"]), id_)
                if ("subnets", ip["subnet_id"]) not in objects:
                    problems.append(f"port {id_} has an address on missing subnet")
            has(uniq_key("mac", obj["network_id"], obj["mac_address"]), id_)
            if obj.get("_key") is not None:
                has(uniq_key("portkey", obj["network_id"], obj["_key"]), id_)
        if kind == "networks":
            mine = {i for (k, i), p in parent_of.items() if k == "subnets" and p == id_}
            if set(obj.get("subnets") or []) != mine:
                problems.append(f"network {id_} lists subnets {obj.get('subnets')}, has {mine}")
            if obj.get("_key") is not None:
                has(uniq_key("netkey", obj["_key"]), id_)
            if obj.get("provider:network_type") == "vlan":
                seg = (obj["provider:physical_network"], obj["provider:segmentation_id"])
                has(uniq_key("vlan", *seg), id_)
        if kind == "routers":
            for iface in obj.get("_interfaces") or []:
                if ("ports", iface["port_id"]) not in objects:
                    problems.append(f"router {id_} has an interface on missing port")
            if obj.get("_gw_port_id") and ("ports", obj["_gw_port_id"]) not in objects:
                problems.append(f"router {id_} has a missing gateway port")
            for fip in obj.get("_floatingips") or []:
                if objects.get(("floatingips", fip), {}).get("router_id") != id_:
                    problems.append(f"router {id_} lists floating IP {fip}, not its router")
            if obj.get("_key") is not None:
                has(uniq_key("netkey", obj["_key"]), id_)
        if kind == "floatingips":
            if ("ports", obj.get("_port_id")) not in objects:
                problems.append(f"floating IP {id_} lost its own port")
            if obj.get("port_id"):
                if ("ports", obj["port_id"]) not in objects:
                    problems.append(f"floating IP {id_} associated with a missing port")
                fixed = (obj["port_id"], obj["fixed_ip_address"], obj["floating_network_id"])
                has(uniq_key("fip-assoc", *fixed), id_)
                router = objects.get(("routers", obj.get("router_id")), {})
                if id_ not in (router.get("_floatingips") or []):
                    problems.append(f"floating IP {id_} not on its router's list")
        if kind == "ports" and obj.get("device_owner") in L3_OWNERS:
            device = obj.get("device_id")
            if obj["device_owner"] == "network:router_interface":
                router = objects.get(("routers", device), {})
                if id_ not in {i["port_id"] for i in router.get("_interfaces") or []}:
                    problems.append(f"stale router interface port {id_}")
            elif obj["device_owner"] == "network:router_gateway":
                if objects.get(("routers", device), {}).get("_gw_port_id") != id_:
                    problems.append(f"stale router gateway port {id_}")
            elif objects.get(("floatingips", device), {}).get("_port_id") != id_:
                problems.append(f"stale floating IP port {id_}")
        if kind == "security_groups" and obj.get("_default"):
            has(uniq_key("default_sg", obj["project_id"]), id_)
        if kind == "qos_policies" and obj.get("is_default"):
            has(uniq_key("qos_default", obj["project_id"]), id_)
        if kind == "rbac_policies":  # on its object's record, with its claim
            otype = obj["object_type"]
            target = objects.get((rbac.TYPES[otype].kind, obj["object_id"]), {})
            entry = [obj["action"], obj["target_tenant"]]
            if (target.get("_rbac") or {}).get(id_) != entry:
                problems.append(f"rbac policy {id_} not on its {otype}'s record")
            has(uniq_key("rbac", otype, obj["object_id"], *entry), id_)
        for pid in obj.get("_rbac") or {}:
            if ("rbac_policies", pid) not in objects:
                problems.append(f"{kind} {id_} lists a missing rbac policy {pid}")
        if kind == "security_group_rules" and obj.get("_digest"):
            has(uniq_key("sgrule", obj["security_group_id"], obj["_digest"]), id_)

    for key, kv in kvs.items():
        parts = key[len(ROOT) :].split("/")
        if key.startswith(INTENTS_PREFIX):
            problems.append(f"intent left: {key}")
        elif parts[0] == "uniq" and kv.value.decode() not in ids:
            problems.append(f"leaked claim: {key} -> {kv.value.decode()}")
        elif parts[:2] == ["uniq", "fip-assoc"]:
            fip = objects.get(("floatingips", kv.value.decode()), {})
            if fip.get("port_id") != parts[2] or ("ports", parts[2]) not in objects:
                problems.append(f"leaked association claim: {key}")
        elif parts[:2] == ["index", "host_ports"]:
            if ("ports", parts[-1]) not in objects:
                problems.append(f"leaked host index: {key}")
        elif parts[0] == "index" and (parts[1], parts[2]) not in objects:
            problems.append(f"leaked index: {key}")
        elif parts[0] == "owner":
            obj = objects.get((parts[2], parts[3]))
            if obj is None or obj.get("project_id") != parts[1]:
                problems.append(f"leaked owner entry (quota count): {key}")
    return problems


def check_world(api: Api, store: Store, api_first: bool = False) -> None:
    """No zombie, no leak: the raw store's keys agree with its objects, every object the
    store holds is listed and GET-able through the API. `api_first`: the API reads (and so
    settles) before the store is inspected."""
    if not api_first:
        problems = store_problems(store)
        assert not problems, "\n".join(problems)
    stored: dict[str, set[str]] = {c: set() for c in COLLECTIONS}
    for key in _keys(store):
        parts = key[len(ROOT) :].split("/")
        if parts[0] in COLLECTIONS:
            stored[parts[0]].add(parts[-1])
    for kind, coll in COLLECTIONS.items():
        for id_ in stored[kind]:
            got = api.call("GET", f"{coll}/{id_}")
            assert got.status_code == 200, f"{coll}/{id_}: {got.status_code} {got.text}"
        listed = api.ok("GET", coll)[coll.split("/")[-1].replace("-", "_")]
        assert {o["id"] for o in listed} == stored[kind], f"{coll}: listed != stored"
    if api_first:
        check_world(api, store)


def clean_up(api: Api, store: Store, baseline: set[str]) -> None:
    """Delete through the API every object the round made: the store is then back to
    exactly its baseline key set (no claim, index or owner entry left behind)."""

    def made(kind: str) -> list[str]:
        return [
            key[len(ROOT) :].split("/")[-1]
            for key in sorted(_keys(store))
            if key[len(ROOT) :].split("/")[0] == kind and key not in baseline
        ]

    def gone(method: str, path: str, body: Any = None) -> None:
        resp = api.call(method, path, body)
        assert resp.status_code in (200, 204), f"{method} {path}: {resp.text}"

    for fip in made("floatingips"):
        gone("DELETE", f"floatingips/{fip}")
    for router in made("routers"):
        for port in api.ok("GET", f"ports?device_id={router}")["ports"]:
            if port["device_owner"] == "network:router_interface":
                body = {"port_id": port["id"]}
                gone("PUT", f"routers/{router}/remove_router_interface", body)
        gone("DELETE", f"routers/{router}")
    for net in made("networks"):
        gone("DELETE", f"networks/{net}?cascade=true")
    for group in made("security_groups"):
        gone("DELETE", f"security-groups/{group}")
    for ag in made("address_groups"):
        gone("DELETE", f"address-groups/{ag}")
    for qp in made("qos_policies"):
        gone("DELETE", f"qos/policies/{qp}")
    left = set(_keys(store))
    assert left == baseline, f"not back to baseline: +{sorted(left - baseline)}"


def end_dead_leases(store: Store) -> int:
    """What the store does once the killed process's lease runs out: its intents go."""
    leases = {kv.lease for kv in store.list(INTENTS_PREFIX).items if kv.lease}
    for lease in leases:
        store.revoke(lease)
    return len(leases)


# ----------------------------------------------------------------------------- the test


@contextlib.contextmanager
def backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Api, Store]]:
    run_dir = tmp_path / "api"
    if kind == "sqlite":
        api = Api(run_dir, {"WYVERN_STORE": "sqlite"})
        store: Store = SqliteStore(str(run_dir / "wyvern.db"))
    else:
        system.require(request)
        endpoint: str = request.getfixturevalue("etcd_endpoint")
        requests.post(
            f"{endpoint}/v3/kv/deleterange", json={"key": "AA==", "range_end": "AA=="}, timeout=10
        ).raise_for_status()
        env = {
            "WYVERN_STORE": "etcd",
            "WYVERN_ETCD_ENDPOINTS": orjson.dumps([endpoint]).decode(),
            "WYVERN_ETCD_MAX_TXN_OPS": str(ETCD_MAX_TXN_OPS),
        }
        api = Api(run_dir, env)
        store = EtcdStore([endpoint])
    try:
        yield api, store
    finally:
        api.stop()
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("etcd", marks=pytest.mark.system)])
def test_killed_after_every_write_of_every_operation(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    started = time.monotonic()
    with backend(kind, request, tmp_path) as (api, store):
        api.start()
        api.ok("GET", "security-groups")  # (the admin's default group: part of the baseline)
        baseline = set(_keys(store))
        writes: dict[str, int] = {}
        for op in OPS:
            n = 1
            while True:
                ctx = op.setup(api, uuid.uuid4().hex)
                api.arm(n)
                try:
                    resp: requests.Response | None = op.request(api, ctx)
                except requests.ConnectionError:
                    resp = None
                if resp is not None:  # it completed in fewer than n writes
                    assert api.alive()
                    api.arm(0)
                    assert resp.status_code == op.status, f"{op.name}: {resp.text}"
                    writes[op.name] = n - 1
                else:
                    assert api.server is not None
                    code = api.server.proc.process.wait(timeout=30)
                    assert code == -signal.SIGKILL, f"{op.name} at write {n}: exit {code}"
                    api.server = None
                    if n % 2:  # the dead process's lease ends, then an API starts (and
                        end_dead_leases(store)  # settles its marks) and the client retries
                        api.start()
                        check_world(api, store)
                        retry = op.request(api, ctx)
                    else:  # the client retries at once, while that lease still runs
                        api.start()
                        with ThreadPoolExecutor(1) as pool:
                            pending = pool.submit(op.request, api, ctx)
                            time.sleep(0.5)
                            end_dead_leases(store)
                            retry = pending.result(timeout=60)
                        check_world(api, store, api_first=True)
                    assert retry.status_code in (op.status, op.done), (
                        f"{op.name}, killed after write {n}: retry {retry.status_code} {retry.text}"
                    )
                if op.gone:  # (a retry that answered 404 said so: it must not come back)
                    assert api.call("GET", ctx[op.gone]).status_code == 404, (
                        f"{op.name}, killed after write {n}: still there after the retry"
                    )
                if op.kept:
                    assert api.call("GET", ctx[op.kept]).status_code == 200, (op.name, n)
                check_world(api, store)
                clean_up(api, store, baseline)
                if resp is not None:
                    break
                n += 1
        elapsed = time.monotonic() - started
        print(f"\n{kind}: writes per operation {writes}; {api.starts} API starts; {elapsed:.0f} s")
        expected = {
            op.name: op.etcd_writes if kind == "etcd" and op.etcd_writes else op.writes
            for op in OPS
        }
        assert writes == expected


def test_the_checks_see_a_zombie_a_leak_and_a_lost_index() -> None:
    """The harness's probe: silent on a consistent store, loud on each kind of damage."""
    store = MemoryStore()
    with make_client(store) as client:
        net = create(client, "networks", name="n")
        create(client, "subnets", network_id=net["id"], cidr="10.9.0.0/24", ip_version=4)
        port = create(client, "ports", network_id=net["id"])
        assert store_problems(store) == []
        repo = Repo(store)
        stored = repo.get("networks", net["id"])
        assert stored is not None
        stored.obj["_deleting"] = True
        txn = repo.txn()
        txn.update(stored)
        txn.puts[uniq_key("mac", net["id"], "fa:16:3e:00:00:01")] = b"gone-port"
        txn.deletes[index_key("ports", port["id"])] = None
        assoc = uniq_key("fip-assoc", port["id"], "10.9.0.9", net["id"])
        txn.puts[assoc] = net["id"].encode()  # (an owner that exists, but no floating IP)
        txn.commit()
        problems = "\n".join(store_problems(store))
        assert f"zombie: networks {net['id']}" in problems
        assert "leaked claim: " + uniq_key("mac", net["id"], "fa:16:3e:00:00:01") in problems
        assert f"missing {index_key('ports', port['id'])}" in problems
        assert f"leaked association claim: {assoc}" in problems


@pytest.mark.system
def test_a_projects_first_port_and_group_fit_the_smallest_etcd_max_txn_ops_allowed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Found by the harness: with etcd_max_txn_ops at its floor (16 then), a project's first
    port or group answered 400 every time: the default group it makes first, with its
    four rules, is 19 operations in one transaction."""
    floor = next(f.metadata["ge"] for f in fields(Settings) if f.name == "etcd_max_txn_ops")
    store = open_store("etcd", request, tmp_path)
    assert isinstance(store, EtcdStore)
    store.max_txn_ops = int(floor)
    with make_client(store) as client:
        net = create(client, "networks", name="n", project_id="p1")
        create(client, "subnets", network_id=net["id"], cidr="10.9.0.0/24", ip_version=4)
        port = client.post(
            "/v2.0/ports", json={"port": {"network_id": net["id"]}}, headers=as_project("p1")
        )
        assert port.status_code == 201, port.text
        group = client.post(
            "/v2.0/security-groups",
            json={"security_group": {"name": "g"}},
            headers=as_project("p2"),
        )
        assert group.status_code == 201, group.text


def test_a_delete_retried_while_the_dead_process_lease_runs_waits_then_deletes() -> None:
    """Found by the harness: a client retrying a delete cut by a crash got 404 while the
    dead process's lease still ran, and the network came back once it ran out."""
    store = MemoryStore()
    with make_client(store) as client, ThreadPoolExecutor(1) as pool:
        net = create(client, "networks", name="n")
        lease = store.grant(30)
        _marked_by_a_dead_process(store, "networks", net["id"], lease)
        retry = pool.submit(client.delete, f"/v2.0/networks/{net['id']}")
        time.sleep(0.3)
        assert not retry.done()  # (it waits for the other delete's outcome)
        store.revoke(lease)  # the lease runs out: the mark is undone, the retry deletes
        assert retry.result(timeout=10).status_code == 204
        assert client.get(f"/v2.0/networks/{net['id']}").status_code == 404
        assert store.list(ROOT + "networks/").items == []


def test_a_delete_meeting_a_live_delete_for_too_long_answers_409(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait is bounded: a delete whose process lives on (its lease kept) past
    INTENT_TTL and a margin is still running, and the other request is told so."""
    monkeypatch.setattr(resource, "INTENT_TTL", 0.3)
    monkeypatch.setattr(resource, "OTHER_DELETE_MARGIN", 0.2)
    store = MemoryStore()
    with make_client(store) as client:
        net = create(client, "networks", name="n")
        lease = store.grant(30)
        _marked_by_a_dead_process(store, "networks", net["id"], lease)
        started = time.monotonic()
        resp = client.delete(f"/v2.0/networks/{net['id']}")
        assert resp.status_code == 409, resp.text
        assert 0.5 <= time.monotonic() - started < 5
        store.revoke(lease)
        assert client.delete(f"/v2.0/networks/{net['id']}").status_code == 204


def test_a_delete_with_no_room_to_wait_answers_409_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting holds a worker thread, so only a few requests wait at once: the others
    are told at once that the delete is in progress."""
    monkeypatch.setattr(resource, "OTHER_DELETE_WAITERS", 0)
    store = MemoryStore()
    with make_client(store) as client:
        net = create(client, "networks", name="n")
        lease = store.grant(30)
        _marked_by_a_dead_process(store, "networks", net["id"], lease)
        started = time.monotonic()
        resp = client.delete(f"/v2.0/networks/{net['id']}")
        assert resp.status_code == 409, resp.text
        assert time.monotonic() - started < 1


@pytest.mark.system
def test_a_cascade_whose_last_transaction_is_exactly_at_the_limit_succeeds(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Found by the harness (a retry after a kill between chunks answered 400, needing 33
    operations of 32): whether the rest of a cascade fits in one transaction was judged
    without the intent the same transaction releases, one operation more. Every limit
    from etcd_max_txn_ops's old floor to well past the whole delete of four ports."""
    store = open_store("etcd", request, tmp_path)
    assert isinstance(store, EtcdStore)
    with make_client(store) as client:
        for limit in range(16, 48):
            store.max_txn_ops = 128
            net = create(client, "networks", name="n")
            create(client, "subnets", network_id=net["id"], cidr="10.9.0.0/24", ip_version=4)
            for _ in range(4):
                create(client, "ports", network_id=net["id"])
            store.max_txn_ops = limit
            resp = client.delete(f"/v2.0/networks/{net['id']}?cascade=true")
            assert resp.status_code == 204, f"limit {limit}: {resp.text}"
            assert store.list(ROOT + "ports/").items == []
