"""The OVS driver: everything that talks to Open vSwitch.

`ovs` (private ovsdb-server/ovs-vswitchd pairs, commands), `installer` and `flowtext`
(desired vs installed flows, bundles), `ofchannel` (the OpenFlow packet-in channel),
`vif` (plugging VMs), `tunnels` and `physnets` (chassis setup), `recorder` (a switch
that only records, for fake chassis). The pure vocabulary it drives is `wyvern.ir`.
"""
