"""A bounded schemathesis pass against a live `wyvern api`, from its unpatched /openapi.json.

Every operation gets a few generated requests (fuzzing), and the stateful phase follows the
document's links from each create to the new object's operations. Required: no 5xx and no
response that the document does not describe (status, content type, headers, body).
`benchmarks/schemathesis_run.py` runs the same checks with >= 10,000 cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.schemathesis_run import run
from tests.harness import ApiServer, start_api


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
    # It did reach the server's logic: creates succeeded and their links were followed.
    log = server.log
    assert "Traceback" not in log, log
