"""The chassis agent (one per chassis): the store in, flows on br-int out.

`agent` runs the loop: `sync` follows the parts of the store that `interest` selects into
the local `view`, `bindings` adds the ports plugged on this OVS, the incremental `engine`
turns changes into the apps' desired flows, and the OVS driver installs them. `chassis`
keeps this chassis's record alive; `packetin` answers punted packets (`dhcp`, `nd`,
`icmp_errors`). `trace` is an offline tool built on the same view.
"""
