"""The pipeline's own flows (cookie app "pipeline"): every stage's default, made from the
miss its declaration names (wyvern.ir.pipeline, wyvern.ir.misses). No other app writes a
stage default; `wyvern pipeline` and docs/architecture.md list them.
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow
from wyvern.ir.misses import miss_flows
from wyvern.model.view import Change, LocalView


class PipelineDefaults(App):
    """No owners: only global flows (owner ("app", "pipeline") for the engine)."""

    name = "pipeline"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return ()

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        return []

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return ()

    def global_flows(self) -> list[Flow]:
        return miss_flows()
