"""Every stage's default: one priority-0 flow per stage, made from the miss its pipeline
declaration names (cookie app "pipeline", object "default:<stage>"). The only place a
stage default is written; apps write none."""

from __future__ import annotations

from wyvern.ir import pipeline
from wyvern.ir.actions import Action, Goto, Resubmit
from wyvern.ir.cookies import encode
from wyvern.ir.flows import Flow
from wyvern.ir.pipeline import Miss
from wyvern.ir.templates import table

PRIORITY = 0


def miss_actions(miss: Miss) -> tuple[Action, ...]:
    if miss.target is None:
        return ()  # drop
    if miss.action == "goto":
        return (Goto(miss.target),)
    return (Resubmit(miss.target),)


def miss_flows() -> list[Flow]:
    """The default flow of every stage, in pipeline order."""
    return [
        table(st.name).flow(
            priority=PRIORITY,
            cookie=encode("pipeline", f"default:{st.name}"),
            actions=miss_actions(st.miss),
        )
        for st in pipeline.PIPELINE
    ]
