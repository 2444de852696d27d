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
