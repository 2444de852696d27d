"""Tempest's own network API tests against Wyvern with a real Keystone, in CI.

A subset of classes (networks and subnets, ports, routers, security groups, floating
IPs) through the same code as `scripts/tempest` (tests/tempest.py), which runs the whole
of tempest.api.network and neutron_tempest_plugin.api (too long for CI). The first run
installs tempest into .tempest-venv from PyPI (~40 s); the run itself takes one to two
minutes on 2 cores (56 tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tempest import cloud, collect, install, run_tempest, summary, tempest_conf

pytestmark = pytest.mark.compat

SUBSET = (
    "tempest.api.network.test_networks.NetworksTest",
    "tempest.api.network.test_ports.PortsTestJSON",
    "tempest.api.network.test_routers.RoutersTest",
    "tempest.api.network.test_security_groups.SecGroupTest",
    "tempest.api.network.test_floating_ips.FloatingIPTestJSON",
)


def test_tempest_network_subset_passes(tmp_path: Path) -> None:
    """Every test of the subset passes (tempest's own assertions check what the API
    returned), or skips only for an extension Wyvern does not advertise."""
    venv = install()
    regex = "^(" + "|".join(c.replace(".", r"\.") for c in SUBSET) + r")\."
    with cloud(tmp_path / "cloud") as c:
        workspace = tmp_path / "workspace"
        rc = run_tempest(venv, workspace, tempest_conf(c, workspace), regex, 2, 900)
        tests = collect(venv, workspace, tmp_path / "results")
        advertised = set(c.extensions)
    report = summary(tests)
    classes = {t["id"].rsplit(".", 1)[0] for t in tests}
    assert classes == set(SUBSET), report
    bad = [
        f"{t['id']}: {t['status']}: {t['reason']}"
        for t in tests
        if t["status"] != "success" and not _unadvertised(t, advertised)
    ]
    assert bad == [], report + "\n" + "\n".join(bad)
    assert rc == 0, (workspace / "tempest-run.out").read_text()[-4000:]


def _unadvertised(test: dict[str, str], advertised: set[str]) -> bool:
    """A skip for an extension we do not advertise (tempest: "X extension not enabled.")."""
    m = re.fullmatch(r"(\S+) extension not enabled\.?", test["reason"].strip())
    return test["status"] == "skip" and m is not None and m.group(1) not in advertised
