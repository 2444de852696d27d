"""Output (the last stage): logical destination port → OpenFlow port.

For every local port (bound here, admin up, network admin up)::

    network_key=N, dst_port_key=K                                  → output:<ofport>
    network_key=N, dst_port_key=K, in_port=<ofport>, flag_allow_loopback=1 → output:in_port

OpenFlow never sends a packet back out of its input port unless told `in_port`: that
is what keeps a flood from echoing to its sender, and `flag_allow_loopback` is how a
stage that answers a packet (router_input's ARP/ICMP replies) asks for hairpin.

TODO(tunnels): a destination port bound on another chassis (in view.ports, with a
view.port_chassis entry that is not us) gets `tun_id=<network key>,
tun_metadata0=<src key:dst key>, tun_dst=<chassis tunnel IP>, output:<tunnel ofport>`.
Until then such packets hit the stage default and are dropped.
Owner: ("port", id) of local ports.
"""

from __future__ import annotations

from collections.abc import Iterable

from wyvern.apps.base import App, Owner
from wyvern.apps.classifier import local_port, per_port_affected, per_port_owners, port_is_up
from wyvern.controller.view import Change, LocalView
from wyvern.southbound.cookies import encode
from wyvern.southbound.ir import PORT_IN_PORT, Flow, Output, match, table

P_LOOPBACK = 110
P_PORT = 100


class OutputApp(App):
    name = "output"

    def owners(self, view: LocalView) -> Iterable[Owner]:
        return per_port_owners(view)

    def affected(self, view: LocalView, change: Change) -> Iterable[Owner]:
        return per_port_affected(view, change)

    def flows(self, view: LocalView, owner: Owner) -> list[Flow]:
        kind, port_id = owner
        found = local_port(view, port_id) if kind == "port" else None
        if found is None:
            return []
        port, net, ofport = found
        if not port_is_up(port, net):
            return []
        cookie = encode("output", port_id)
        st = table("output")
        return [
            st.flow(
                priority=P_LOOPBACK,
                cookie=cookie,
                match=match(
                    network_key=net.key,
                    dst_port_key=port.key,
                    in_port=ofport,
                    flag_allow_loopback=1,
                ),
                actions=(Output(PORT_IN_PORT),),
            ),
            st.flow(
                priority=P_PORT,
                cookie=cookie,
                match=match(network_key=net.key, dst_port_key=port.key),
                actions=(Output(ofport),),
            ),
        ]
