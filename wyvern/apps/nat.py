"""NAT: floating IPs (DNAT) and SNAT through the router's conntrack zone.

For now the stages hold only their declared misses (wyvern.ir.pipeline): dnat continues
to routing and snat returns the packet to l2_lookup of the output network. Floating IPs
and the external gateway's SNAT are still to come.
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.ir import Flow
from wyvern.model.view import Change, LocalView


class NatApp(App):
    name = "nat"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return ()

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        return []

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return ()
