"""The all-in-one supervisor: start in order, stop in reverse, fail loudly."""

from __future__ import annotations

import threading

from wyvern.supervisor import Component, Supervisor


class Part:
    """A component that records what happens to it in a shared journal."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        fail_start: bool = False,
        dies: bool = False,
        stop_while_starting: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.dies = dies
        self.stop_while_starting = stop_while_starting

    def start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.stop_while_starting is not None:  # (a SIGTERM arriving mid-start)
            self.stop_while_starting.set()
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    def check(self) -> str | None:
        return "died" if self.dies else None

    def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


def test_components_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    stop = threading.Event()
    parts: list[Component] = [Part(n, journal) for n in ("ovs", "api", "agent")]
    sup = Supervisor(parts, stop, poll=0.01)
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    assert sup.run() == 0
    assert journal == [
        "start ovs",
        "start api",
        "start agent",
        "stop agent",
        "stop api",
        "stop ovs",
    ]


def test_a_failed_start_stops_what_started_and_exits_1() -> None:
    journal: list[str] = []
    parts: list[Component] = [
        Part("ovs", journal),
        Part("api", journal, fail_start=True),
        Part("agent", journal),
    ]
    assert Supervisor(parts, threading.Event(), poll=0.01).run() == 1
    assert journal == ["start ovs", "start api", "stop api", "stop ovs"]


def test_a_component_dying_stops_the_rest_and_exits_1() -> None:
    journal: list[str] = []
    parts: list[Component] = [Part("ovs", journal), Part("api", journal, dies=True)]
    assert Supervisor(parts, threading.Event(), poll=0.01).run() == 1
    assert journal == ["start ovs", "start api", "stop api", "stop ovs"]


def test_stop_requested_before_start_starts_nothing() -> None:
    journal: list[str] = []
    stop = threading.Event()
    stop.set()
    assert Supervisor([Part("api", journal)], stop).run() == 0
    assert journal == []


def test_a_start_that_fails_because_a_stop_was_asked_for_is_a_clean_stop() -> None:
    """SIGTERM reaches a starting part's children too, so its start fails: exit 0 then."""
    journal: list[str] = []
    stop = threading.Event()
    parts: list[Component] = [
        Part("ovs", journal),
        Part("agent", journal, fail_start=True, stop_while_starting=stop),
    ]
    assert Supervisor(parts, stop, poll=0.01).run() == 0
    assert journal == ["start ovs", "start agent", "stop agent", "stop ovs"]
