"""The app contract: pure functions from the local view to IR flows, keyed by owner.

An owner is the API object a set of flows exists for, e.g. ("port", id) or
("network", id). An app says which owners exist (`owner_tables`: each owner kind is a
view table's keys) and each owner's complete flow list (`flows`); nothing else. The
engine records what each `flows()` call reads of the view and recomputes an owner when
one of those reads changed (wyvern.controller.deps); an owner that a change brings is
found from the change's table and key (`owners_of`), never by listing every owner. A full
recompute is `owners()` then `flows()` for each: the engine's hypothesis tests check that
incremental maintenance always equals it.

`flows()` must return [] for an owner `owns()` denies, and read the view only through
the view it is given (its reads are its dependencies): no state kept between calls but
memos of pure values keyed by their inputs (`view.derive` for values of the view).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from wyvern.ir import Flow
from wyvern.model.view import LocalView

Owner = tuple[str, str]


class App(abc.ABC):
    #: The app's name in wyvern.ir.cookies.APPS (its flows carry that cookie).
    name: str
    #: Owner kind -> the LocalView table whose keys are the ids of that kind's owners.
    owner_tables: ClassVar[Mapping[str, str]] = {}

    @abc.abstractmethod
    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        """All flows of one owner in `view`; [] when the owner is gone or needs none."""

    def owners(self, view: LocalView) -> Iterable[Owner]:
        """Every owner this app has in `view` (used by the full recompute)."""
        for kind, table in self.owner_tables.items():
            for id_ in sorted(getattr(view, table)):
                yield kind, id_

    def owner_sources(self) -> Iterable[str]:
        """The tables whose changed keys may bring owners (see owners_of)."""
        return set(self.owner_tables.values())

    def owners_of(self, view: LocalView, table: str, key: Any) -> Iterable[Owner]:
        """Owners that the entry `key` of `table` may bring (it just changed)."""
        return [(kind, key) for kind, t in self.owner_tables.items() if t == table]

    def owns(self, view: LocalView, owner: Owner) -> bool:
        """Whether `owner` is among owners(view)."""
        table = self.owner_tables.get(owner[0])
        return table is not None and owner[1] in getattr(view, table)

    def global_flows(self) -> list[Flow]:
        """Flows that depend on nothing in the view (stage defaults); owner ("app", name)."""
        return []
