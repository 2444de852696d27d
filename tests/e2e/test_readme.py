"""The README's "Use it" walkthrough, run as written against a real `wyvern up`.

The block runs in a second shell (bash -e), as a reader pastes it. Only what would make
two runs on one machine collide is changed: the all-in-one's run directory and port
(set in both shells, as the README says to move them), the two namespaces' names and
the web root's path.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import system
from tests.harness import Proc, free_port, process_env, spawn, wyvern_command
from tests.southbound.conftest import unique
from wyvern.southbound.ovs import netns_exists

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    """The first sh block under "## Use it"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use it") :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no sh block under ## Use it"
    return match.group(1)


@pytest.fixture
def all_in_one(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """`wyvern up` on a private run directory and port; the environment of both shells."""
    system.require(request)
    port = free_port()
    env = process_env({"WYVERN_RUN_DIR": str(tmp_path / "run"), "WYVERN_API_PORT": str(port)})
    proc: Proc = spawn([*wyvern_command(), "up"], tmp_path / "up.out", env, "wyvern up")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.alive(), (tmp_path / "up.out").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2.0/networks", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.3)
        yield env
    finally:
        proc.stop()


def test_the_readme_walkthrough_works_as_written(
    all_in_one: dict[str, str], tmp_path: Path
) -> None:
    vm, world = unique("wrd-vm-"), unique("wrd-out-")
    script = walkthrough()
    port = all_in_one["WYVERN_API_PORT"]
    script = script.replace("127.0.0.1:9696", f"127.0.0.1:{port}")
    script = re.sub(r"\bdemo-vm\b", vm, script)
    script = re.sub(r"\bworld\b", world, script)
    script = script.replace("/tmp/demo-www", str(tmp_path / "www"))
    try:
        out = subprocess.run(
            ["bash", "-e", "-x", "-c", script],
            cwd=REPO,
            env=all_in_one,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        log = out.stdout + out.stderr
        assert out.returncode == 0, log
        assert "hello from the VM" in out.stdout, log  # TCP in through the floating IP
        assert "\nACTIVE\n" in out.stdout, log  # the floating IP's status
        # the all-in-one hosts the gateway; the trace names the floating IP's DNAT and
        # delivers to the port
        assert "| active" in out.stdout, log
        assert "(dnat) priority" in out.stdout and "nat: floating IP 203.0.113." in out.stdout
        assert "delivered to port vm1-port" in out.stdout, log
        # the metadata service, with no Nova configured: its clear 404
        assert '"type":"MetadataNotConfigured"' in out.stdout, log
        # IPv6 by SLAAC: the kernel configured exactly the address the API allocated
        # (fixed_ips as printed), with a default route via the router's link-local
        allocated = re.search(r"'ip_address': '(2001:db8:10:[0-9a-f:]+)'", out.stdout)
        assert allocated is not None, log
        assert f"inet6 {allocated.group(1)}/64 scope global" in out.stdout, log
        assert re.search(r"default via fe80::[0-9a-f:]+ dev eth0", out.stdout), log
    finally:
        for ns in (vm, world):
            if netns_exists(ns):
                pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
                for pid in pids.stdout.split():
                    subprocess.run(["kill", "-9", pid], check=False)
                subprocess.run(["ip", "netns", "del", ns], check=False)


def keystone_blocks() -> list[str]:
    """The three sh blocks under "## With Keystone": Keystone, the all-in-one, the client."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## With Keystone") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3, blocks
    return blocks


def test_the_readme_keystone_section_works_as_written(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Its Keystone and all-in-one run as its first two blocks say (on a private dir and
    free ports), then its client block runs as written."""
    system.require(request)
    ks_block, up_block, client_block = keystone_blocks()
    ks_dir, ks_port, api_port = tmp_path / "ks", free_port(), free_port()
    readme_dir = "/tmp/wyvern-keystone"
    # Shell 1: scripts/keystone-dev, moved to a free port and our API's port.
    ks_cmd = ks_block.split("#")[0].split()
    assert ks_cmd == ["./scripts/keystone-dev", readme_dir], ks_block
    env = process_env({"WYVERN_RUN_DIR": str(tmp_path / "run"), "WYVERN_API_PORT": str(api_port)})
    env.pop("WYVERN_NOAUTH_TRUST_HEADERS", None)
    ks = spawn(
        [
            str(REPO / ks_cmd[0]),
            str(ks_dir),
            "--port",
            str(ks_port),
            "--network-url",
            f"http://127.0.0.1:{api_port}/",
        ],
        tmp_path / "keystone-dev.out",
        env,
        "keystone-dev",
    )
    up: Proc | None = None
    try:
        deadline = time.monotonic() + 120
        while "clouds.yaml" not in ks.output():
            assert ks.alive() and time.monotonic() < deadline, ks.output()
            time.sleep(0.3)
        # Shell 2: `WYVERN_CONFIG=<its settings> wyvern up` (the script runs exactly that).
        setting, script = up_block.strip().split()
        assert script == "./scripts/wyvern-up", up_block
        key, value = setting.split("=", 1)
        env_up = {**env, key: value.replace(readme_dir, str(ks_dir))}
        up = spawn([*wyvern_command(), "up"], tmp_path / "up.out", env_up, "wyvern up")
        while True:
            assert up.alive() and time.monotonic() < deadline, up.output()
            try:
                # answered at all, with a 401: the API is up and asks for a token
                if (
                    requests.get(
                        f"http://127.0.0.1:{api_port}/v2.0/networks", timeout=2
                    ).status_code
                    == 401
                ):
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        # Shell 3: as written, but for the directory.
        out = subprocess.run(
            ["bash", "-e", "-x", "-c", client_block.replace(readme_dir, str(ks_dir))],
            cwd=REPO,
            env={k: v for k, v in env.items() if not k.startswith("OS_")},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        log = out.stdout + out.stderr
        assert out.returncode == 0, log
        assert out.stdout.count("demo-net") >= 3, log  # created, then in both lists
        assert "ForbiddenException: 403" in out.stderr and "refused, as expected" in out.stdout, log
    finally:
        if up is not None:
            up.stop()
        ks.stop()
