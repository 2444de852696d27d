"""auth_strategy=keystone against a real Keystone: the stock clients with a clouds.yaml.

A live `wyvern api` whose [keystone_authtoken] names a service user of the session's
Keystone (tests/conftest.py: `keystone`), whose catalog's `network` endpoint is that API.
Projects A and B; alice is a member of A, rita a reader of A, bob a member of B.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import openstack.exceptions
import pytest
import requests

from tests.harness import REPO, ApiServer, process_env, start_api
from tests.keystone import KeystoneServer, authtoken_env

OPENSTACK = Path(sys.executable).parent / "openstack"
PW = "pw-" + secrets.token_hex(4)
NO_PROXY = {"http": "", "https": ""}


@dataclass
class Cloud:
    keystone: KeystoneServer
    api: ApiServer
    clouds_yaml: Path
    project_a: str
    project_b: str
    tag: str

    def token(self, user: str) -> str:
        """A fresh token of a user (alice, rita, bob, root) in their project."""
        project = "b" if user == "bob" else "a"
        return str(
            self.keystone.session(f"{user}-{self.tag}", PW, f"{project}-{self.tag}").get_token()
        )

    def conn(self, cloud: str) -> openstack.connection.Connection:
        """openstacksdk from the clouds.yaml: password auth, the catalog's endpoint."""
        config = openstack.config.OpenStackConfig(config_files=[str(self.clouds_yaml)])
        return openstack.connection.Connection(config=config.get_one(cloud=cloud))

    def osc(self, cloud: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The stock `openstack` CLI, as a user runs it: --os-cloud, no --os-endpoint."""
        env = {k: v for k, v in process_env().items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_yaml)
        return subprocess.run(
            [str(OPENSTACK), "--os-cloud", cloud, *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def osc_json(self, cloud: str, *args: str) -> Any:
        out = self.osc(cloud, *args, "-f", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def get(self, path: str, token: str | None, **headers: str) -> requests.Response:
        if token is not None:
            headers["X-Auth-Token"] = token
        return requests.get(
            self.api.url + path.lstrip("/"), headers=headers, timeout=60, proxies=NO_PROXY
        )


@pytest.fixture(scope="module")
def cloud(keystone: KeystoneServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    tag = secrets.token_hex(3)  # the session's Keystone is shared: unique names
    a = keystone.add_project(f"a-{tag}")
    b = keystone.add_project(f"b-{tag}")
    keystone.add_user(f"alice-{tag}", PW, a, ["member"])
    keystone.add_user(f"rita-{tag}", PW, a, ["reader"])
    keystone.add_user(f"bob-{tag}", PW, b, ["member"])
    keystone.add_user(f"root-{tag}", PW, a, ["admin"])
    options = keystone.service_user(f"wyvern-{tag}", PW)
    env = authtoken_env({**options, "http_connect_timeout": "2"})
    env["WYVERN_NOAUTH_TRUST_HEADERS"] = "false"
    run_dir = tmp_path_factory.mktemp("ks-api")
    with start_api(run_dir, env=env) as api:
        keystone.register_network(api.url)
        path = keystone.clouds_yaml(
            run_dir / "clouds.yaml",
            {
                "alice": (f"alice-{tag}", PW, f"a-{tag}"),
                "rita": (f"rita-{tag}", PW, f"a-{tag}"),
                "bob": (f"bob-{tag}", PW, f"b-{tag}"),
                "root": (f"root-{tag}", PW, f"a-{tag}"),
            },
        )
        yield Cloud(keystone, api, path, a, b, tag)


def test_cli_member_creates_and_lists_networks_through_the_catalog(cloud: Cloud) -> None:
    net = cloud.osc_json("alice", "network", "create", "cli-net")
    assert net["project_id"] == cloud.project_a
    listed = cloud.osc_json("alice", "network", "list")
    assert net["id"] in [n["ID"] for n in listed]


def test_sdk_member_of_a_sees_its_network_and_b_does_not(cloud: Cloud) -> None:
    alice, bob = cloud.conn("alice"), cloud.conn("bob")
    net = alice.network.create_network(name="sdk-net")
    assert net.project_id == cloud.project_a
    assert net.id in [n.id for n in alice.network.networks()]
    # Project B: the same probe that succeeds for A is a 404 (and absent from its list).
    assert bob.network.get_network(bob.network.create_network(name="b-net").id)
    with pytest.raises(openstack.exceptions.NotFoundException):
        bob.network.get_network(net.id)
    assert net.id not in [n.id for n in bob.network.networks()]


def test_reader_lists_but_cannot_create(cloud: Cloud) -> None:
    seen = cloud.osc_json("alice", "network", "create", "for-reader")
    rita = cloud.conn("rita")
    assert seen["id"] in [n.id for n in rita.network.networks()]
    with pytest.raises(openstack.exceptions.ForbiddenException) as refused:
        rita.network.create_network(name="nope")
    # Neutron's policy refused it, by name; nothing was made.
    assert "rule:create_network is disallowed by policy" in str(refused.value)
    assert "nope" not in [n.name for n in rita.network.networks()]
    # The reader sees alice's network, without the admin-only attributes an admin sees.
    path = f"/v2.0/networks/{seen['id']}"
    as_reader = cloud.get(path, cloud.token("rita")).json()["network"]
    as_admin = cloud.get(path, cloud.token("root")).json()["network"]
    assert "provider:network_type" in as_admin and "provider:network_type" not in as_reader


def test_admin_only_attribute_is_admins(cloud: Cloud) -> None:
    root = cloud.conn("root").network.create_network(
        name="prov", provider_network_type="vlan", provider_physical_network="physnet1"
    )
    assert root.provider_network_type == "vlan"
    out = cloud.osc(
        "alice",
        "network",
        "create",
        "--provider-network-type",
        "vlan",
        "--provider-physical-network",
        "physnet1",
        "mine",
    )
    assert out.returncode != 0
    assert "403" in out.stderr or "policy" in out.stderr.lower(), out.stderr


def test_client_supplied_identity_headers_are_not_trusted(cloud: Cloud) -> None:
    """auth_token's headers make the context: a member naming admin / project B is still
    a member of A."""
    token = cloud.token("alice")
    b_net = cloud.conn("bob").network.create_network(name="b-private")
    assert cloud.get(f"v2.0/networks/{b_net.id}", cloud.token("bob")).status_code == 200
    forged = {"X-Project-Id": cloud.project_b, "X-Roles": "admin", "X-Is-Admin-Project": "True"}
    resp = cloud.get(f"v2.0/networks/{b_net.id}", token, **forged)
    assert resp.status_code == 404, resp.text
    body = requests.post(
        cloud.api.url + "v2.0/networks",
        json={"network": {"name": "x", "provider:network_type": "vlan"}},
        headers={"X-Auth-Token": token, **forged},
        timeout=60,
        proxies=NO_PROXY,
    )
    assert body.status_code == 403, body.text


def test_missing_or_bad_token_is_401_with_www_authenticate(cloud: Cloud) -> None:
    token = cloud.token("alice")
    assert cloud.get("v2.0/networks", token).status_code == 200
    for bad in (None, "not-a-token", token[:-4] + "AAAA"):
        resp = cloud.get("v2.0/networks", bad)
        assert resp.status_code == 401, resp.text
        assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.keystone.url}"'
        assert resp.json()["NeutronError"]["type"] == "NotAuthorized"
    # The version list is public, as neutron-server's.
    assert cloud.get("", None).status_code == 200


def test_revoked_token_is_401(cloud: Cloud) -> None:
    """A token Keystone no longer honours (revoked, as an expired one) is refused once
    auth_token asks Keystone about it; another token of the same user still works."""
    token, other = cloud.token("alice"), cloud.token("alice")
    assert cloud.get("v2.0/networks", other).status_code == 200
    resp = requests.delete(
        f"{cloud.keystone.url}/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
        timeout=30,
        proxies=NO_PROXY,
    )
    assert resp.status_code == 204, resp.text
    resp = cloud.get("v2.0/networks", token)
    assert resp.status_code == 401, resp.text
    assert resp.json()["NeutronError"]["type"] == "NotAuthorized"
    assert cloud.get("v2.0/networks", other).status_code == 200


def test_keystone_down_is_503_and_back_is_200(cloud: Cloud) -> None:
    """A token Wyvern never saw cannot be validated while Keystone is away: 503 (the
    client's timeout is the hang check), then it works once Keystone is back."""
    token = cloud.token("alice")
    later = cloud.token("bob")
    assert cloud.get("v2.0/networks", token).status_code == 200  # (now cached)
    cloud.keystone.stop()
    try:
        resp = cloud.get("v2.0/networks", later)
        assert resp.status_code == 503, resp.text
        assert resp.json()["NeutronError"]["type"] == "ServiceUnavailable"
        # auth_token's cache: a token validated before still works (token_cache_time).
        assert cloud.get("v2.0/networks", token).status_code == 200
    finally:
        cloud.keystone.start()
    assert cloud.get("v2.0/networks", later).status_code == 200


def test_keystone_hung_is_503_not_a_hang(cloud: Cloud) -> None:
    """Keystone accepts connections but never answers (SIGSTOP): http_connect_timeout
    bounds the wait."""
    later = cloud.token("bob")
    assert cloud.keystone.proc is not None
    cloud.keystone.proc.signal(signal.SIGSTOP)
    try:
        resp = cloud.get("v2.0/networks", later)
        assert resp.status_code == 503, resp.text
    finally:
        cloud.keystone.proc.signal(signal.SIGCONT)
    assert cloud.get("v2.0/networks", later).status_code == 200


@pytest.fixture(autouse=True)
def _no_proxy_for_sdk() -> Iterator[None]:
    saved = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost" + (f",{saved}" if saved else "")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("NO_PROXY", None)
        else:
            os.environ["NO_PROXY"] = saved


def test_cli_network_rbac_shares_a_network_with_another_project(cloud: Cloud) -> None:
    """`openstack network rbac create --target-project B` as alice (member of A) does it:
    bob (member of B) then sees and uses the network, and alice cannot take the share away
    while bob's port is there."""
    net = cloud.osc_json("alice", "network", "create", "rbac-net")
    cloud.osc_json(
        "alice", "subnet", "create", "--network", net["id"], "--subnet-range", "10.77.0.0/24",
        "rbac-sub",
    )  # fmt: skip
    hidden = cloud.osc("bob", "network", "show", net["id"])
    assert hidden.returncode != 0 and "No Network found" in hidden.stderr
    pol = cloud.osc_json(
        "alice", "network", "rbac", "create", "--target-project", cloud.project_b,
        "--action", "access_as_shared", "--type", "network", net["id"],
    )  # fmt: skip
    assert pol["target_project_id"] == cloud.project_b and pol["project_id"] == cloud.project_a
    assert [p["ID"] for p in cloud.osc_json("alice", "network", "rbac", "list")] == [pol["id"]]
    assert cloud.osc_json("alice", "network", "rbac", "show", pol["id"])["object_id"] == net["id"]
    assert cloud.osc_json("bob", "network", "show", net["id"])["shared"] is True
    port = cloud.osc_json("bob", "port", "create", "--network", net["id"], "bob-port")
    assert port["project_id"] == cloud.project_b
    refused = cloud.osc("alice", "network", "rbac", "delete", pol["id"])
    assert refused.returncode != 0 and "cannot be removed" in refused.stderr
    assert cloud.osc("bob", "port", "delete", port["id"]).returncode == 0
    assert cloud.osc("alice", "network", "rbac", "delete", pol["id"]).returncode == 0
    assert cloud.osc("bob", "network", "show", net["id"]).returncode != 0
    assert cloud.osc("alice", "network", "delete", net["id"]).returncode == 0
