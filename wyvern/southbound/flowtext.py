"""Flows as `ovs-ofctl` text, reduced to one comparable form: identity plus value.

The installer must tell whether the flow it wants is the flow OVS has. Text written by
hand or by a renderer (`dl_type=0x0800,nw_dst=10.0.0.0/255.255.255.0`, `reg0=1`,
`load:1->NXM_NX_REG0[]`) and text printed by `ovs-ofctl dump-flows` (`ip,nw_dst=10.0.0.0/24`,
`reg0=0x1`, `load:0x1->NXM_NX_REG0[]`) differ for the same flow. Rather than re-implement
OVS's normaliser in Python (field aliases, prerequisite order, masks, action spellings),
we let OVS do it: `ovs-ofctl -O OpenFlow14 parse-flows` encodes every line to the wire
format and prints it back with the same formatter `dump-flows` uses. That costs
0.08-0.2 s per 10,000 lines (we parse its output while it still prints), and the
installer caches the result per line text.

Identity is what OpenFlow itself uses to tell flows apart: (table, priority, match).
Everything else (cookie, actions, timeouts, importance, flags) is the flow's value.

Limits: port and table *names* cannot be resolved offline, so rendered flows use numbers.
OVS prints some masked `tun_metadata` matches without their mask (two flows then print
alike); render those masks full-width or exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wyvern.southbound.ovs import OvsCommandError, stream_cmd

DEFAULT_PRIORITY = 32768
DEFAULT_PROTOCOL = "OpenFlow14"
FLAGS = frozenset(
    {"send_flow_rem", "check_overlap", "reset_counts", "no_packet_counts", "no_byte_counts"}
)
# Both spellings: dump-flows prints `idle_timeout=30`, a printed flow_mod `idle:30`.
_VALUE_KEYS = {
    "table": "table",
    "cookie": "cookie",
    "idle_timeout": "idle_timeout",
    "idle": "idle_timeout",
    "hard_timeout": "hard_timeout",
    "hard": "hard_timeout",
    "importance": "importance",
}
_STATS_KEYS = frozenset({"duration", "n_packets", "n_bytes", "idle_age", "hard_age"})
_OFCTL_LINE_ERR_RE = re.compile(r"^ovs-ofctl: -:(\d+): (.*)$", re.MULTILINE)


class FlowSyntaxError(ValueError):
    """OVS rejected a flow line; names the line so the renderer's bug is easy to find."""

    def __init__(self, message: str, line: str | None = None, lineno: int | None = None) -> None:
        self.line = line
        self.lineno = lineno
        self.message = message
        where = ""
        if line is not None:
            where = f" in flow {lineno}: {line!r}" if lineno else f" in {line!r}"
        super().__init__(f"{message}{where}")


@dataclass(frozen=True, slots=True, order=True)
class FlowKey:
    """A flow's identity in OpenFlow: no two flows in a switch share one."""

    table: int
    priority: int
    match: str  # OVS's canonical text, "" for match-all


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow in canonical form. TEXT keeps the line it came from, if any."""

    key: FlowKey
    cookie: int = 0
    actions: str = "drop"
    idle_timeout: int = 0
    hard_timeout: int = 0
    importance: int = 0
    flags: frozenset[str] = frozenset()
    text: str | None = field(default=None, compare=False)

    @property
    def value(self) -> tuple[int, str, int, int, int, frozenset[str]]:
        """Everything but the identity: a flow whose value differs must be rewritten."""
        return (
            self.cookie,
            self.actions,
            self.idle_timeout,
            self.hard_timeout,
            self.importance,
            self.flags,
        )

    def spec(self) -> str:
        """The flow as `ovs-ofctl` text in canonical form (re-parseable by OVS)."""
        parts = [
            f"table={self.key.table}",
            f"priority={self.key.priority}",
            f"cookie={self.cookie:#x}",
        ]
        if self.idle_timeout:
            parts.append(f"idle_timeout={self.idle_timeout}")
        if self.hard_timeout:
            parts.append(f"hard_timeout={self.hard_timeout}")
        if self.importance:
            parts.append(f"importance={self.importance}")
        parts.extend(sorted(self.flags))
        if self.key.match:
            parts.append(self.key.match)
        return ",".join(parts) + f" actions={self.actions}"

    def add_line(self) -> str:
        """An `add` for a bundle: the original text when we have it (what was meant)."""
        return f"add {self.text if self.text is not None else self.spec()}"

    def delete_line(self) -> str:
        """A strict delete of exactly this identity (cookie deliberately not matched)."""
        key = self.key
        match = f",{key.match}" if key.match else ""
        return f"delete_strict table={key.table},priority={key.priority}{match}"


_NO_FLAGS: frozenset[str] = frozenset()


def parse_fields(head: str, actions: str, text: str | None = None) -> Flow:
    """Build a Flow from the part before ` actions=` of a dump-flows or flow_mod line.

    Hot path (100k flows on every resync): plain string operations, no regex.
    """
    table = cookie = idle = hard = importance = 0
    flags: set[str] | None = None
    match = ""
    seen_match = False
    for tok in head.split():
        if tok[-1] == ",":
            tok = tok[:-1]
            if not tok:
                continue
        name, sep, value = tok.partition("=")
        if not sep:
            name, sep, value = tok.partition(":")
        key = _VALUE_KEYS.get(name) if sep else None
        if key is not None:
            number = int(value, 0)
            if key == "table":
                table = number
            elif key == "cookie":
                cookie = number
            elif key == "idle_timeout":
                idle = number
            elif key == "hard_timeout":
                hard = number
            else:
                importance = number
        elif sep and name in _STATS_KEYS:
            continue
        elif tok in FLAGS:
            if flags is None:
                flags = set()
            flags.add(tok)
        elif not seen_match:
            match = tok
            seen_match = True
        else:
            raise FlowSyntaxError(
                f"cannot read flow text (two match fields: {match!r}, {tok!r})", head
            )
    priority = DEFAULT_PRIORITY
    if match.startswith("priority="):
        first, _, match = match.partition(",")
        priority = int(first[9:], 0)
    return Flow(
        FlowKey(table, priority, match),
        cookie,
        actions,
        idle,
        hard,
        importance,
        frozenset(flags) if flags else _NO_FLAGS,
        text,
    )


@dataclass(frozen=True)
class FlowChanges:
    """The desired flows that changed since the last render, entry by entry.

    Every flow of an entry carries that entry's cookie (wyvern.ir.cookies.entry_cookie),
    so an installer replaces an entry by deleting `cookie=C/-1` and adding its lines, and
    needs no copy of what it installed: the switch holds the text. REPLACED are the
    cookies whose flows go first (entries changed or gone); TEXT the flows to add, in
    blocks of lines joined by newlines (a few large strings rather than one per line).
    COMPLETE: TEXT holds every desired flow and REPLACED is empty; whatever else the
    switch holds is not wanted (a first install, or after the switch was lost).
    """

    replaced: Sequence[int] = ()
    text: Sequence[str] = ()
    complete: bool = False

    def lines(self) -> Iterator[str]:
        for block in self.text:
            if block:
                yield from block.split("\n")

    @property
    def flow_count(self) -> int:
        return sum(block.count("\n") + 1 for block in self.text if block)

    def __bool__(self) -> bool:
        return self.complete or bool(self.replaced or self.text)


def rendered_cookie(line: str) -> int:
    """The cookie of a line render_flow wrote: `table=T,priority=P,cookie=C[,MATCH] ...`."""
    field = line.split(",", 3)[2] if line.count(",") >= 2 else ""
    if not field.startswith("cookie="):
        raise FlowSyntaxError("not a rendered flow line", line)
    return int(field.split(" ", 1)[0][7:], 16)


def _split_actions(line: str) -> tuple[str, str]:
    line = line.strip()
    if line.startswith("actions="):
        return "", line.removeprefix("actions=")
    head, sep, actions = line.partition(" actions=")
    if not sep:
        raise FlowSyntaxError("no actions in flow text", line)
    return head, actions


def parse_dump_line(line: str) -> Flow | None:
    """The flow on one line of `dump-flows` output (None for headers and blanks)."""
    if not line.strip() or line.startswith(("OFPST_", "NXST_")):
        return None
    head, actions = _split_actions(line)
    return parse_fields(head, actions)


def parse_dump(text: str) -> list[Flow]:
    """Flows from `ovs-ofctl --no-names [--no-stats] dump-flows` output."""
    return [f for f in map(parse_dump_line, text.splitlines()) if f is not None]


def clean_lines(lines: Sequence[str]) -> list[str]:
    """Stripped flow lines, without blanks and comments; rejects what would confuse OVS."""
    out = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\n" in line or line.endswith("\\"):
            raise FlowSyntaxError("a flow must be one line", raw)
        first = line.split(None, 1)[0].split(",", 1)[0]
        if first in ("add", "modify", "modify_strict", "delete", "delete_strict"):
            raise FlowSyntaxError("give the flow, not a command", raw)
        out.append(line)
    return out


def canonicalize(lines: Sequence[str], protocol: str = DEFAULT_PROTOCOL) -> list[Flow]:
    """Parse flow lines with OVS itself and return them in the form dump-flows prints.

    LINES must already be clean (see clean_lines). Raises FlowSyntaxError naming the
    first line OVS rejects. Needs only the ovs-ofctl binary, no switch. The output is
    read while ovs-ofctl still prints it, so its C and our Python run on two cores.
    """
    if not lines:
        return []
    flows: list[Flow] = []
    try:
        stream_cmd(
            ["ovs-ofctl", "-O", protocol, "parse-flows", "-"],
            lambda out: _read_flow_mod(out, lines, flows),
            input_lines=lines,
        )
    except OvsCommandError as exc:
        m = _OFCTL_LINE_ERR_RE.search(exc.stderr)
        if m:
            lineno = int(m.group(1))
            bad = lines[lineno - 1] if 0 < lineno <= len(lines) else None
            raise FlowSyntaxError(m.group(2).strip(), bad, lineno) from None
        raise FlowSyntaxError(exc.stderr.strip().removeprefix("ovs-ofctl: ") or str(exc)) from exc
    if len(flows) != len(lines):
        raise FlowSyntaxError(
            f"ovs-ofctl parse-flows printed {len(flows)} flows for {len(lines)} lines"
        )
    return flows


def _read_flow_mod(out: str, lines: Sequence[str], flows: list[Flow]) -> None:
    """Append the flow in one printed flow_mod line (other lines are headers)."""
    # OFPT_FLOW_MOD (OF1.4) (xid=0x1): ADD table:3 priority=5,ip cookie:0x2 actions=drop
    if not out.startswith("OFPT_FLOW_MOD "):
        return
    xid = out.find("(xid=0x")
    add = out.find("): ADD", xid)
    if xid < 0 or add < 0:
        raise FlowSyntaxError(f"unexpected ovs-ofctl parse-flows output: {out!r}")
    index = int(out[xid + 7 : add], 16) - 1
    if index != len(flows):
        raise FlowSyntaxError(f"ovs-ofctl parse-flows printed flows out of order: {out!r}")
    head, actions = _split_actions(out[add + 6 :])
    flows.append(parse_fields(head, actions, text=lines[index]))
