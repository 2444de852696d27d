"""schemathesis against a live `wyvern api`, driven only by its served /openapi.json.

Not patched in any way: what the document says is what is checked. The checks are the
response-conformance ones (no 5xx, only documented statuses, content types, headers and
bodies); the stateful phase follows the document's links (create -> show/update/delete by
id, and the actions). Prints the figures and exits non-zero on any failure or error.

    .venv/bin/python benchmarks/schemathesis_run.py                    # >= 10,000 cases
    .venv/bin/python benchmarks/schemathesis_run.py --max-examples 3 --phases fuzzing,stateful
    .venv/bin/python benchmarks/schemathesis_run.py --store etcd       # on a private etcd
    .venv/bin/python benchmarks/schemathesis_run.py --url http://127.0.0.1:9696/

tests/api/test_schemathesis.py runs the bounded pass in CI through `run()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import etcd_server, process_env, start_api  # noqa: E402

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@dataclass
class Result:
    cases: int
    failures: int
    errors: int
    seconds: float
    report: dict[str, Any]
    output: str

    def summary(self) -> str:
        stateful = self.report.get("phases", {}).get("stateful", {}).get("status")
        return (
            f"{self.cases} cases, {self.failures} with failures, {self.errors} errored, "
            f"stateful phase: {stateful} (links: {self.links}), {self.seconds:.1f} s"
        )

    @property
    def links(self) -> str:
        """The stateful phase's "N covered / M selected / M total" line."""
        lines = [x for x in self.output.splitlines() if "API Links:" in x]
        return lines[-1].split(":", 1)[1].strip() if lines else "none"


def run(
    url: str,
    *,
    max_examples: int,
    phases: tuple[str, ...] = PHASES,
    seed: int | None = None,
    workers: int = 1,
    report_dir: Path,
    timeout: float | None = None,
    document: Path | None = None,
    operation_ids: tuple[str, ...] = (),
) -> Result:
    """One `st run` of the checks above against the server at `url`, from the document
    it serves (or `document`, a file: the tests' negative control uses a wrong one)."""
    report = report_dir / "schemathesis.json"
    location = [str(document), "--url", url] if document else [f"{url.rstrip('/')}/openapi.json"]
    cmd = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(CONFIG),
        "run",
        *location,
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(phases),
        "--max-examples",
        str(max_examples),
        "--workers",
        str(workers),
        "--generation-database",
        "none",  # every run starts fresh: no examples replayed from an earlier run
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    for op_id in operation_ids:
        cmd += ["--include-operation-id", op_id]
    env = process_env()  # (keeps any HTTP proxy off loopback)
    start = time.monotonic()
    proc = subprocess.run(
        cmd,
        env=env,
        cwd=report_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {proc.returncode}):\n{output}")
    data = json.loads(report.read_text())
    cases = data["test_cases"]
    return Result(
        cases=int(cases["generated"]),
        failures=int(cases["with_failures"]),
        errors=int(cases["errored"]) + len(data.get("errors", [])),
        seconds=seconds,
        report=data,
        output=output,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100, help="cases per operation")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--store", choices=("sqlite", "etcd"), default="sqlite")
    args = parser.parse_args()
    phases = tuple(p for p in args.phases.split(",") if p)
    with tempfile.TemporaryDirectory(prefix="wyvern-schemathesis-") as tmp:
        work = Path(tmp)
        load = os.getloadavg()[0]
        with contextlib.ExitStack() as stack:
            url = args.url
            if not url:
                endpoints = None
                if args.store == "etcd":
                    endpoints = stack.enter_context(etcd_server(work / "etcd")).endpoints
                url = stack.enter_context(start_api(work / "api", etcd_endpoints=endpoints)).url
            result = run(
                url,
                max_examples=args.max_examples,
                phases=phases,
                seed=args.seed,
                workers=args.workers,
                report_dir=work,
            )
        if result.failures or result.errors:
            print(result.output)
        print(f"schemathesis: {result.summary()} (load average {load:.2f} at start)")
        return 1 if result.failures or result.errors or result.report["exit_code"] else 0


if __name__ == "__main__":
    sys.exit(main())
