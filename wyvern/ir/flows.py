"""Flows and groups: validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from wyvern.ir import cookies, pipeline
from wyvern.ir.actions import Action, Conjunction
from wyvern.ir.checks import (
    _VALID_SHAPES,
    _VALID_SHAPES_MAX,
    _actions_shape,
    _match_shape,
    check_actions,
)
from wyvern.ir.fields import IRError, _setattr
from wyvern.ir.matches import Match
from wyvern.ir.pipeline import StageName

if TYPE_CHECKING:
    from wyvern.ir.templates import FlowTemplate


@dataclass(frozen=True, slots=True)
class Flow:
    """One OpenFlow flow. Identity for diffing is `key` (stage, priority, match); full
    equality (actions and cookie too) tells whether an installed flow must be modified."""

    stage: StageName
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int
    # The FlowTemplate that built it, if one did (render.py renders its flows by a plan
    # made once per template). Not part of the flow's value.
    template: FlowTemplate | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.template is not None:  # only a template sets it (dataclasses.replace of
            _setattr(self, "template", None)  # its flow may change the shape): render plain
        if type(self.match) is not Match or type(self.actions) is not tuple:
            pipeline.stage(self.stage)  # an unknown stage is named first
            raise IRError(f"stage {self.stage}: build flows with table(...).flow(...)")
        if not 0 <= self.priority <= 0xFFFF:
            pipeline.stage(self.stage)
            raise IRError(f"stage {self.stage}: priority {self.priority} outside 0..65535")
        # Validity depends only on the stage, the cookie's app, the match's shape and the
        # actions: each such combination is checked once (see _match_shape).
        acts = _actions_shape(self.actions)
        if acts is None:  # a value out of range, or unhashable: the full check says why
            self.validate()
            return
        shape = (self.stage, self.cookie >> cookies.OBJECT_BITS, _match_shape(self.match), acts)
        try:
            if shape in _VALID_SHAPES:
                return
        except TypeError:  # something unhashable in the actions: check it every time
            self.validate()
            return
        self.validate()
        if len(_VALID_SHAPES) >= _VALID_SHAPES_MAX:
            _VALID_SHAPES.clear()
        _VALID_SHAPES.add(shape)

    def validate(self) -> None:
        """Every check, uncached: raises IRError unless the flow is valid."""
        st = pipeline.stage(self.stage)
        where = f"stage {self.stage}"
        if type(self.match) is not Match or type(self.actions) is not tuple:
            raise IRError(f"{where}: build flows with table(...).flow(...)")
        if not 0 <= self.priority <= 0xFFFF:
            raise IRError(f"{where}: priority {self.priority} outside 0..65535")
        for name, _, _ in self.match.items:
            if name not in st.match:
                undeclared = sorted(self.match.names() - st.match)
                raise IRError(f"{where}: match on undeclared field(s) {undeclared}")
        try:
            app, _ = cookies.decode(self.cookie)
        except ValueError as exc:
            raise IRError(f"{where}: {exc}") from None
        if app not in (st.owner, "pipeline"):
            raise IRError(f"{where}: owned by {st.owner}, not {app}")
        if (
            "conj_id" in st.match
            and self.match.exact("conj_id") is not None
            and any(type(a) is Conjunction for a in self.actions)
        ):
            raise IRError(f"{where}: a conj_id flow cannot itself be a conjunction clause")
        check_actions(st, self.match, self.actions)

    @property
    def table(self) -> int:
        return pipeline.table_of(self.stage)

    @property
    def key(self) -> tuple[StageName, int, Match]:
        return (self.stage, self.priority, self.match)


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 100


@dataclass(frozen=True, slots=True)
class GroupDef:
    """An OpenFlow group. `stage` is the stage whose declaration its buckets obey."""

    group_id: int
    type: Literal["all", "select", "indirect"]
    buckets: tuple[Bucket, ...]
    stage: StageName

    def __post_init__(self) -> None:
        st = pipeline.stage(self.stage)
        if not 0 <= self.group_id <= 0xFFFFFF00:
            raise IRError(f"bad group id {self.group_id}")
        if self.type == "indirect" and len(self.buckets) != 1:
            raise IRError("an indirect group has exactly one bucket")
        for b in self.buckets:
            if b.weight < 0 or b.weight > 0xFFFF:
                raise IRError(f"bad bucket weight {b.weight}")
            # Buckets have no match of their own, and OVS does not check OpenFlow
            # prerequisites for them: the flows that reach the group must.
            check_actions(st, Match(), b.actions, in_group=True)
