"""Stage defaults (cookie app "pipeline") for the stages the L2 family owns.

Each stage gets its defaults from exactly one place: the app family that owns it. These
are the L2 family's; the other owners emit their own:

- security_groups: pre_acl, acl, pre_acl_egress, acl_egress (pass-through when a port
  has no security group is theirs to decide);
- l3: router_input, routing, arp_resolve;
- nat: dnat, snat.

| stage                | default (priority 0)                                   |
|----------------------|--------------------------------------------------------|
| classification       | drop (unknown in_port)                                 |
| port_security        | drop (packet from no known port)                       |
| services             | goto l2_lookup (nothing to answer or punt)             |
| l2_lookup            | drop (no network flow: the network is not known here)  |
| port_security_egress | drop (destination port not local)                      |
| output               | drop (destination not local; TODO(tunnels))            |
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.ir import Action, Flow, Goto, table
from wyvern.ir.cookies import encode
from wyvern.ir.pipeline import StageName
from wyvern.model.view import Change, LocalView

DEFAULTS: tuple[tuple[StageName, tuple[Action, ...]], ...] = (
    ("classification", ()),
    ("port_security", ()),
    ("services", (Goto("l2_lookup"),)),
    ("l2_lookup", ()),
    ("port_security_egress", ()),
    ("output", ()),
)


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
        return [
            table(stage).flow(
                priority=0, cookie=encode("pipeline", f"default:{stage}"), actions=acts
            )
            for stage, acts in DEFAULTS
        ]
