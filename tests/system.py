"""One marker for what the machine must provide, and CI's rule that nothing skips.

`@pytest.mark.system` gates every test that needs root and the packages ./scripts/install
puts on the machine (Open vSwitch, etcd, iproute2, the DHCP clients...). Without them a
developer gets one clear skip reason; with CI=true any skip, of any test, fails the run:
CI has everything, so a skip there means a test silently stopped testing.

Loaded by tests/conftest.py (`pytest_plugins`), so it works under pytest-xdist too: the
workers build the reports, and a report is already failed when it reaches the controller.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import settings

MARKER = "system"
# The binaries of ./scripts/install's apt packages that tests run.
TOOLS = (
    "ovsdb-tool",
    "ovsdb-server",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ovs-ofctl",
    "ovs-appctl",
    "etcd",
    "ip",
    "ethtool",
    "ping",
    "tcpdump",
    "busybox",
    "dhclient",
)


def in_ci() -> bool:
    """CI=true (or any value but 0/false/no): the environment that must skip nothing."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# CI runs the same examples every time (a red CI must be reproducible, and a green local
# run must mean a green CI); developers' runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if in_ci():
    settings.load_profile("ci")


@functools.cache
def missing() -> str | None:
    """Why system tests cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, Open vSwitch)"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not on PATH (run ./scripts/install)"
    return None


def require(request: pytest.FixtureRequest) -> None:
    """Called by fixtures that start system services: their tests must carry the marker,
    so that the marker alone decides what is skipped (never an ad-hoc check)."""
    if request.node.get_closest_marker(MARKER) is None:
        pytest.fail(
            f"{request.node.nodeid} uses the {request.fixturename!r} fixture: "
            f"mark it @pytest.mark.{MARKER}",
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: needs root and the system packages ./scripts/install provides "
        "(Open vSwitch, etcd, iproute2, DHCP clients); skipped without them, never in CI",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = missing()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(pytest.mark.skip(reason=f"system test: {reason}"))


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    reason = str(reason).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where nothing may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[Any]:
    outcome = yield
    _fail_skip(outcome.get_result())
