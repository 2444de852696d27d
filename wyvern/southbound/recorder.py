"""A southbound that records instead of programming OVS: the fake chassis's "switch".

A fake chassis (`wyvern agent --fake`) runs the same sync, apps and engine as a real
one, and hands its rendered flows here. The recorder keeps the flow lines a switch would
hold, applying the same deltas the FlowInstaller would send, so a test or benchmark can
check what a chassis would have installed, and when, with hundreds of chassis on one
machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from wyvern.southbound.flowtext import RenderedLines
from wyvern.southbound.installer import SyncStats


class RecordingInstaller:
    """FlowInstaller's interface (sync, resync_from_switch, installed) over a set of lines."""

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self.syncs = 0
        self._synced: object = None
        # Called with the lines each sync added (a benchmark times installs by it).
        self.on_added: Callable[[list[str]], None] | None = None

    @property
    def installed(self) -> set[str]:
        return self.lines

    def resync_from_switch(self) -> int:
        return len(self.lines)

    def sync(self, desired_lines: Iterable[str]) -> SyncStats:
        start = time.monotonic()
        self.syncs += 1
        rendered = desired_lines if isinstance(desired_lines, RenderedLines) else None
        if rendered is not None and self._synced is not None and rendered.base == self._synced:
            added = [line for line in rendered.added if line not in self.lines]
            removed = [line for line in rendered.removed if line in self.lines]
            self.lines.difference_update(removed)
            self.lines.update(added)
        else:
            desired = set(desired_lines)
            added = [line for line in desired if line not in self.lines]
            removed = [line for line in self.lines if line not in desired]
            self.lines = desired
        self._synced = rendered.generation if rendered is not None else None
        if added and self.on_added is not None:
            self.on_added(added)
        return SyncStats(
            added=len(added),
            deleted=len(removed),
            unchanged=len(self.lines) - len(added),
            seconds=time.monotonic() - start,
        )
