"""The stage declaration: derived, unique table numbers and only declared continuations."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from wyvern import ir
from wyvern.ir import cookies, pipeline, registers
from wyvern.ir.pipeline import PIPELINE, PipelineError, StageName


def test_table_numbers_are_unique_and_derived_from_order() -> None:
    tables = [pipeline.table_of(s.name) for s in PIPELINE]
    assert len(set(tables)) == len(PIPELINE)
    assert tables == list(range(pipeline.TABLE_BASE, pipeline.TABLE_BASE + len(PIPELINE)))
    assert pipeline.table_of("classification") == 0  # OVS starts every packet in table 0


def test_stage_of_inverts_table_of() -> None:
    for s in PIPELINE:
        assert pipeline.stage_of(pipeline.table_of(s.name)) is s
    with pytest.raises(KeyError):
        pipeline.stage_of(len(PIPELINE) + pipeline.TABLE_BASE)
    with pytest.raises(KeyError):
        pipeline.table_of("nonesuch")


def test_every_continuation_target_is_declared() -> None:
    names = {s.name for s in PIPELINE}
    for s in PIPELINE:
        assert set(s.next) <= names, s.name


def test_validate_rejects_duplicates_and_undeclared_targets() -> None:
    acl = pipeline.stage("acl")
    with pytest.raises(PipelineError, match="declared twice"):
        pipeline.validate([*PIPELINE, acl])
    bad = dataclasses.replace(acl, next=("services", "nonesuch"))  # type: ignore[arg-type]
    with pytest.raises(PipelineError, match="undeclared next"):
        pipeline.validate([s if s.name != "acl" else bad for s in PIPELINE])
    loop = dataclasses.replace(acl, next=("acl",))
    with pytest.raises(PipelineError, match="itself"):
        pipeline.validate([s if s.name != "acl" else loop for s in PIPELINE])


def test_stage_name_literal_lists_the_pipeline_in_order() -> None:
    assert get_args(StageName) == tuple(s.name for s in PIPELINE)


def test_declarations_name_known_fields_registers_and_apps() -> None:
    known = set(ir.FIELDS) | set(registers.BY_NAME)
    for s in PIPELINE:
        assert s.match <= known, (s.name, s.match - known)
        assert s.writes <= known, (s.name, s.writes - known)
        assert s.owner in cookies.APPS


def test_every_stage_is_reachable_from_table_0() -> None:
    seen = {"classification"}
    todo = ["classification"]
    while todo:
        for nxt in pipeline.stage(todo.pop()).next:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == {s.name for s in PIPELINE}


def test_describe_rows() -> None:
    rows = pipeline.describe()
    assert [(r.table, r.stage) for r in rows] == [
        (pipeline.table_of(s.name), s.name) for s in PIPELINE
    ]
    acl = next(r for r in rows if r.stage == "acl")
    assert acl.owner == "security_groups" and acl.direction == "ingress" and acl.description


def test_every_stage_declares_its_miss_and_its_only_default_comes_from_it() -> None:
    from wyvern.controller.engine import compute_full, default_apps
    from wyvern.ir import cookies
    from wyvern.ir.misses import miss_actions
    from wyvern.model.view import LocalView

    defaults: dict[str, list[tuple[str, object]]] = {}
    for (_, _), flows in compute_full(default_apps(), LocalView()).items():
        for f in flows:
            if f.priority == 0:
                defaults.setdefault(f.stage, []).append((cookies.decode(f.cookie)[0], f.actions))
    assert defaults == {st.name: [("pipeline", miss_actions(st.miss))] for st in PIPELINE}, (
        "one default per stage, the pipeline's, made from the declared miss"
    )
    # (the check sees a wrong default: the ingress ACL's miss is a drop, pre_acl's a goto)
    assert miss_actions(pipeline.stage("acl").miss) == ()
    assert miss_actions(pipeline.stage("pre_acl").miss) != ()


def test_a_miss_must_name_a_declared_next_stage_forward() -> None:
    import dataclasses

    import pytest

    acl = pipeline.stage("acl")
    bad = [
        dataclasses.replace(acl, miss=pipeline.goto("output")),  # not in next
        dataclasses.replace(acl, miss=pipeline.Miss("drop", "services")),
    ]
    for stage in bad:
        stages = [stage if s.name == "acl" else s for s in PIPELINE]
        with pytest.raises(pipeline.PipelineError):
            pipeline.validate(stages)
    pipeline.validate(PIPELINE)  # (and the real declaration passes the same check)
