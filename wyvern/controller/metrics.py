"""The agent's counters as a Prometheus textfile (node_exporter's textfile collector).

No listening socket: the agent writes `<dir>/wyvern-agent-<chassis>.prom` (a temporary
file renamed over it, so a reader never sees half of it), node_exporter's
`--collector.textfile.directory` serves it, and `wyvern punts` reads it back. The text
exposition format is a few lines, written here by hand: no client library in the agent
(docs/architecture.md: Memory).

    families = agent_families("chassis-1", stats, flows=120, local_ports=3, ...)
    MetricsFile(path).write(render(families))
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LOG = logging.getLogger(__name__)

PREFIX = "wyvern_agent_"
# The dispatcher's counters (wyvern/controller/packetin.py): those named after a punt kind
# (apps/punts.py NAMES) count the punts passed to its handler, every other one an outcome.
PACKET_IN_HANDLED = PREFIX + "packet_in_handled_total"
PACKET_IN_OUTCOMES = PREFIX + "packet_in_outcomes_total"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Family:
    """One metric: its samples are (labels, value), labels in the order given."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format (version 0.0.4): HELP and TYPE, then the samples."""
    out: list[str] = []
    for fam in families:
        if not _NAME.match(fam.name):
            raise ValueError(f"bad metric name {fam.name!r}")
        out.append(f"# HELP {fam.name} {_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            bad = [k for k in labels if not _LABEL.match(k) or k.startswith("__")]
            if bad:
                raise ValueError(f"bad label name {bad[0]!r} in {fam.name}")
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            series = f"{fam.name}{{{inner}}}" if inner else fam.name
            out.append(f"{series} {_value(value)}")
    return "\n".join(out) + "\n" if out else ""


@dataclass
class AgentFigures:
    """What the agent's loop knows, at one moment (a copy: rendered off the loop's data)."""

    counters: Mapping[str, int]  # AgentStats' counters, by field name
    installed_revision: int
    store_revision: int
    last_install_seconds: float
    flows: int
    local_ports: int
    packet_in: Mapping[str, int] | None  # the dispatcher's Counter; None: no service


# AgentStats field -> HELP of its counter (wyvern_agent_<field>_total).
COUNTERS = {
    "loops": "Iterations of the agent's loop (flat: the loop is stuck).",
    "changes": "Store and binding changes the loop applied to the view and the engine.",
    "installs": "Flow installs (one atomic OpenFlow bundle each).",
    "flows_sent": "Flow adds, modifies and deletes sent to the switch.",
    "install_errors": "Flow installs that failed (nothing applied; retried).",
    "switch_restores": "ovs-vswitchd restarts or reconnections put right.",
    "status_writes": "Port, floating IP and gateway status keys written to the store.",
}


def agent_families(chassis: str, figures: AgentFigures, punt_kinds: Iterable[str]) -> list[Family]:
    """Every wyvern_agent_* family for CHASSIS; PUNT_KINDS: the punt names (their counters
    are the handled family's, the rest of the dispatcher's the outcomes')."""
    me = {"chassis": chassis}
    fams = [
        Family(f"{PREFIX}{name}_total", "counter", text, [(me, figures.counters.get(name, 0))])
        for name, text in COUNTERS.items()
    ]
    fams += [
        Family(
            PREFIX + "installed_revision",
            "gauge",
            "Store revision whose flows are installed (behind store_revision: the agent lags).",
            [(me, figures.installed_revision)],
        ),
        Family(
            PREFIX + "store_revision",
            "gauge",
            "Store revision the agent's view has applied.",
            [(me, figures.store_revision)],
        ),
        Family(
            PREFIX + "last_install_seconds",
            "gauge",
            "Seconds the last flow install took (compute of a full recompute included).",
            [(me, figures.last_install_seconds)],
        ),
        Family(PREFIX + "flows", "gauge", "Flows desired (and installed).", [(me, figures.flows)]),
        Family(
            PREFIX + "local_ports",
            "gauge",
            "Ports bound to this chassis.",
            [(me, figures.local_ports)],
        ),
    ]
    if figures.packet_in is not None:
        kinds = set(punt_kinds)
        handled = Family(
            PACKET_IN_HANDLED,
            "counter",
            "Punts the packet-in dispatcher passed to a handler, by punt kind.",
        )
        outcomes = Family(
            PACKET_IN_OUTCOMES,
            "counter",
            "What came of the punts: rate_limited and unknown were refused before any "
            "handler; dhcp4_*/dhcp6_* replies sent, *_malformed and icmp6_error_dropped "
            "dropped, nd_na, arp_who_has, mac_learned...",
        )
        for key, count in sorted(figures.packet_in.items()):
            if key in kinds:
                handled.samples.append(({**me, "kind": key}, count))
            else:
                outcomes.samples.append(({**me, "outcome": key}, count))
        fams += [handled, outcomes]
    return fams


class MetricsFile:
    """One .prom file, replaced atomically and only when its text changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: str | None = None
        self._failed = False

    def write(self, text: str) -> bool:
        """True if the file was (re)written. A failure is logged once, never raised: the
        counters are not worth the agent's loop."""
        if text == self._last:
            return False
        tmp: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # (not *.prom: the textfile collector reads only those, never the temp file)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # (node_exporter may run as another user)
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if not self._failed:
                LOG.warning("metrics file %s not written: %s", self.path, exc)
            self._failed = True
            return False
        self._failed = False
        self._last = text
        return True

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._last = None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a text exposition (ours: `wyvern punts` reads it back); comments and
    lines it cannot read are skipped."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None or line.startswith("#"):
            continue
        labels = {k: _unescape(v) for k, v in _PAIR.findall(m.group(2) or "")}
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


def packet_in_counters(text: str) -> dict[str, int]:
    """The dispatcher's counters (its Counter's keys) from a file of agent_families."""
    out: dict[str, int] = {}
    for name, labels, value in parse_samples(text):
        if name == PACKET_IN_HANDLED and "kind" in labels:
            out[labels["kind"]] = int(value)
        elif name == PACKET_IN_OUTCOMES and "outcome" in labels:
            out[labels["outcome"]] = int(value)
    return out
