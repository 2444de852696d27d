"""Gateway failover window: how long a VM loses the outside when its router's active
gateway chassis dies.

Not a test: it prints figures beside the goal and writes them as JSON under
benchmarks/results/.

    .venv/bin/python benchmarks/gateway_failover.py [--runs 3]

Each run builds the north-south test's world (tests/e2e/test_north_south.py): two
gateway chassis on a physical network (hv0 active, hv1 standby), a compute chassis
without it (hv2) whose VM pings a host on the physical network every 10 ms through
SNAT, and hv0's agent and ovs-vswitchd SIGKILLed one second in. The window is the lost
replies times ping's real spacing (its run time over the requests it sent). Goal:
<= 1 s (issue 12; OVN with default BFD settings takes about 3 s, as its documentation
gives it: no OVN HA cluster is run beside us here).

Needs root and openvswitch-switch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.test_north_south import outside_world, run_failover

INTERVAL = 0.01
GOAL_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    windows: list[float] = []
    for i in range(args.runs):
        with (
            tempfile.TemporaryDirectory(prefix="wv-failover-") as tmp,
            outside_world(Path(tmp), standby=True) as (cluster, _),
        ):
            result = run_failover(cluster, INTERVAL)
        # ping paces a little slower than asked: the real spacing is its time / sent
        ms = float(result.summary.rsplit("time ", 1)[1].rstrip("ms"))
        window = result.lost * ms / 1000 / result.sent
        windows.append(window)
        print(
            f"run {i + 1}: {result.summary}; lost {result.lost} -> window {window:.2f} s, "
            f"{result.duplicates} duplicate replies",
            flush=True,
        )
    median = statistics.median(windows)
    verdict = "met" if median <= GOAL_S else "MISSED"
    print(
        f"gateway failover window: median {median:.2f} s over {len(windows)} runs "
        f"(min {min(windows):.2f}, max {max(windows):.2f}); goal <= {GOAL_S:.1f} s: {verdict}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"gateway_failover-{stamp}.json").write_text(
        json.dumps({"windows_s": windows, "median_s": median, "goal_s": GOAL_S}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
