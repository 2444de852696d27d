"""A bounded schemathesis pass against a live `wyvern api`, from its unpatched /openapi.json.

Every operation gets a few generated requests (fuzzing), and the stateful phase follows the
document's links from each create to the new object's operations. Required: no 5xx and no
response that the document does not describe (status, content type, headers, body).
`benchmarks/schemathesis_run.py` runs the same checks with >= 10,000 cases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.schemathesis_run import run
from tests.harness import ApiServer, get_json, start_api


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with start_api(tmp_path_factory.mktemp("schemathesis-api")) as api:
        yield api


def test_bounded_schemathesis_pass(server: ApiServer, tmp_path: Path) -> None:
    result = run(
        server.url,
        max_examples=3,
        phases=("fuzzing", "stateful"),
        seed=11,
        report_dir=tmp_path,
        timeout=300,
    )
    assert result.failures == 0 and result.errors == 0, result.output
    assert result.report["exit_code"] == 0, result.output
    assert 200 <= result.cases <= 1000, result.summary()
    assert result.report["phases"]["stateful"]["status"] == "success", result.output
    assert result.report["test_cases"]["without_checks"] == 0
    # It reached the server's logic: creates succeeded and their links were followed.
    assert int(result.links.split()[0]) >= 3, result.summary()
    assert "Traceback" not in server.log, server.log


def test_the_pass_fails_on_a_document_that_misdescribes_the_server(
    server: ApiServer, tmp_path: Path
) -> None:
    """The negative control: the same run, from a copy of the document that forgets one
    attribute a created network shows, fails (so the pass above checks bodies)."""
    doc = cast(dict[str, Any], get_json(f"{server.url}openapi.json"))
    created = doc["paths"]["/v2.0/networks"]["post"]["responses"]["201"]
    single = created["content"]["application/json"]["schema"]["oneOf"][0]
    del single["properties"]["network"]["properties"]["mtu"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    args = {"max_examples": 5, "phases": ("fuzzing",), "seed": 11, "timeout": 300}
    ok = run(server.url, report_dir=tmp_path, operation_ids=("create_network",), **args)
    assert ok.failures == 0 and ok.cases > 0, ok.output
    bad = run(
        server.url,
        report_dir=tmp_path,
        operation_ids=("create_network",),
        document=wrong,
        **args,
    )
    assert bad.failures > 0, bad.output
    assert "mtu" in bad.output
