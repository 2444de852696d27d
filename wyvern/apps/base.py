"""The app contract: pure functions from the local view to IR flows, keyed by owner.

An owner is the API object a set of flows exists for, e.g. ("port", id) or
("network", id). The engine asks an app which owners a change affects, then asks for
each owner's complete flow list and replaces that owner's flows in the desired table.
A full recompute is `owners()` then `flows()` for each: the engine's hypothesis test
checks that incremental maintenance always equals it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

from wyvern.ir import Flow
from wyvern.model.view import Change, LocalView

Owner = tuple[str, str]


class App(abc.ABC):
    #: The app's name in wyvern.ir.cookies.APPS (its flows carry that cookie).
    name: str

    @abc.abstractmethod
    def owners(self, view: LocalView) -> Iterable[Owner]:
        """Every owner this app has flows for in `view` (used by the full recompute)."""

    @abc.abstractmethod
    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        """All flows of one owner in `view`; [] when the owner is gone or needs none."""

    @abc.abstractmethod
    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        """Owners whose flows may differ after `change` (view already updated; the change
        carries the old record, so owners that only the old state names can be found)."""

    def global_flows(self) -> list[Flow]:
        """Flows that depend on nothing in the view (stage defaults); owner ("app", name)."""
        return []
