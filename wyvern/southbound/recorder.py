"""A southbound that records instead of programming OVS: the fake chassis's "switch".

A fake chassis (`wyvern agent --fake`) runs the same sync, apps and engine as a real
one, and hands its rendered flows here. The recorder keeps the flow lines a switch would
hold, applying the same deltas the FlowInstaller would send, so a test or benchmark can
check what a chassis would have installed, and when, with hundreds of chassis on one
machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from wyvern.southbound.flowtext import FlowChanges, rendered_cookie
from wyvern.southbound.installer import SwitchUnknownError, SyncStats


class RecordingInstaller:
    """FlowInstaller's interface (apply, resync_from_switch, installed) over a set of
    lines, kept by cookie (a fake chassis is for tests: it keeps what a switch would)."""

    def __init__(self) -> None:
        self.by_cookie: dict[int, list[str]] = {}
        self.syncs = 0
        self._known = False
        # Called with the lines each sync added (a benchmark times installs by it).
        self.on_added: Callable[[list[str]], None] | None = None

    @property
    def installed(self) -> set[str]:
        return {line for lines in self.by_cookie.values() for line in lines}

    def resync_from_switch(self) -> int:
        return sum(map(len, self.by_cookie.values()))

    def mark_stale(self) -> None:
        self._known = False

    def apply(self, changes: FlowChanges) -> SyncStats:
        start = time.monotonic()
        if not changes.complete and not self._known:
            raise SwitchUnknownError("a fake switch whose flows are unknown")
        self.syncs += 1
        old = self.by_cookie
        if changes.complete:
            self.by_cookie = {}
        removed = 0
        for cookie in changes.replaced:
            removed += len(self.by_cookie.pop(cookie, ()))
        added = list(changes.lines())
        for line in added:
            self.by_cookie.setdefault(rendered_cookie(line), []).append(line)
        if changes.complete:  # what a reconcile would have sent
            same = {
                c for c, lines in self.by_cookie.items() if sorted(old.get(c, ())) == sorted(lines)
            }
            removed = sum(len(v) for c, v in old.items() if c not in same)
            added = [line for line in added if rendered_cookie(line) not in same]
        self._known = True
        if added and self.on_added is not None:
            self.on_added(added)
        return SyncStats(
            added=len(added),
            deleted=removed,
            seconds=time.monotonic() - start,
        )
