"""Client-side hook scripts for real dhclient and busybox udhcpc in test VMs.

Each records what the client was told (its environment, per reason) under `dir` and
applies the address (and MTU) to the interface, so tests assert on the lease itself.
"""

DHCLIENT_SCRIPT = """#!/bin/sh
env > "{dir}/dhclient.$reason"
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_interface_mtu" ] && ip link set dev "$interface" mtu "$new_interface_mtu"
    ;;
esac
exit 0
"""

UDHCPC_SCRIPT = """#!/bin/sh
env > "{dir}/udhcpc.$1"
[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"
exit 0
"""
