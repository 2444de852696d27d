"""NAT: floating IPs (DNAT) and SNAT through the router's conntrack zone.

For now only the pass-through: dnat continues to routing and snat returns the packet to
l2_lookup of the output network (a resubmit: l2_lookup is an earlier table). Floating
IPs and the external gateway's SNAT are still to come.
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow, Goto, Resubmit, table
from wyvern.ir.cookies import encode
from wyvern.model.view import Change, LocalView

# The stage defaults (priority 0): below every NAT rule to come.
PRIO_PASS = 0


class NatApp(App):
    name = "nat"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return ()

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        return []

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return ()

    def global_flows(self) -> list[Flow]:
        return [
            table("dnat").flow(
                priority=PRIO_PASS,
                cookie=encode("pipeline", "default:dnat"),
                actions=(Goto("routing"),),
            ),
            table("snat").flow(
                priority=PRIO_PASS,
                cookie=encode("pipeline", "default:snat"),
                actions=(Resubmit("l2_lookup"),),
            ),
        ]
