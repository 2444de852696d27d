"""The DHCPv6 options a port's `extra_dhcp_opts` (ip_version 6) may set, and their bytes.

One table for the API, which refuses an option it cannot encode, and for the agent's
DHCPv6 server, which sends it: what is accepted is exactly what is served. The names are
those dnsmasq knows for `option6:` (Neutron's DHCP agent hands them to dnsmasq as they
are; its OVN driver knows a subset of them), and each may also be given by its code
("23") or with dnsmasq's `option6:` prefix. Values are Neutron's strings: lists are
comma-separated, IPv6 addresses may be bracketed as dnsmasq writes them (`[2001:db8::1]`).

Options the server computes itself (client and server identifiers, IA_NA/IA address,
status, preference, rapid commit...) cannot be set: they are refused like unknown names.
"""

from __future__ import annotations

import ipaddress
import struct

OPTION6_PREFIX = "option6:"

# Value encodings.
ADDRS = "addresses"  # IPv6 addresses, 16 bytes each
NAMES = "names"  # domain names, DNS wire format (RFC 1035, no compression)
TEXT = "text"  # a UTF-8 string (a URL)
U32 = "u32"  # an unsigned 32-bit number (seconds)
NTP = "ntp"  # RFC 5908 NTP server addresses (suboption 1 each)
PARAMS = "params"  # RFC 5970 boot file parameters (2-byte length each)

# dnsmasq's option6 names -> (code, encoding).
OPTIONS: dict[str, tuple[int, str]] = {
    "sip-server-domain": (21, NAMES),
    "sip-server": (22, ADDRS),
    "dns-server": (23, ADDRS),
    "domain-search": (24, NAMES),
    "nis-server": (27, ADDRS),
    "nis+-server": (28, ADDRS),
    "nis-domain": (29, NAMES),
    "nis+-domain": (30, NAMES),
    "sntp-server": (31, ADDRS),
    "information-refresh-time": (32, U32),
    "ntp-server": (56, NTP),
    "bootfile-url": (59, TEXT),
    "bootfile-param": (60, PARAMS),
}
BY_CODE: dict[int, tuple[str, str]] = {code: (name, enc) for name, (code, enc) in OPTIONS.items()}

OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
NTP_SUBOPTION_SRV_ADDR = 1
MAX_NAME = 255  # octets of a domain name in wire format (RFC 1035)


class Dhcp6OptionError(ValueError):
    """An extra_dhcp_opt (ip_version 6) that the DHCPv6 server cannot send."""


def lookup(opt_name: str) -> tuple[int, str]:
    """OPT_NAME (a name, a code, either with `option6:`) -> (code, encoding)."""
    name = opt_name.strip()
    if name.startswith(OPTION6_PREFIX):
        name = name[len(OPTION6_PREFIX) :].strip()
    if name.isdigit() and int(name) in BY_CODE:
        return int(name), BY_CODE[int(name)][1]
    if name in OPTIONS:
        return OPTIONS[name]
    known = ", ".join(OPTIONS)
    raise Dhcp6OptionError(
        f"DHCPv6 option {opt_name!r} is not supported; supported options are {known}, "
        "or their codes"
    )


def split_values(value: str) -> list[str]:
    return [v.strip() for v in value.strip().strip("{}").split(",") if v.strip()]


def encode_addresses(values: list[str]) -> bytes:
    out = bytearray()
    for v in values:
        try:
            out += ipaddress.IPv6Address(v.strip("[]")).packed
        except ValueError:
            raise Dhcp6OptionError(f"{v!r} is not an IPv6 address") from None
    if not out:
        raise Dhcp6OptionError("an IPv6 address list must not be empty")
    return bytes(out)


def encode_names(names: list[str]) -> bytes:
    """Domain names in DNS wire format (RFC 8415 section 10: no compression)."""
    out = bytearray()
    for name in names:
        wire = bytearray()
        for label in name.strip().strip(".").split("."):
            try:
                raw = label.encode("idna")
            except UnicodeError:
                raise Dhcp6OptionError(f"{name!r} is not a domain name") from None
            if not raw or len(raw) > 63:
                raise Dhcp6OptionError(f"{name!r} is not a domain name")
            wire.append(len(raw))
            wire += raw
        wire.append(0)
        if len(wire) > MAX_NAME:
            raise Dhcp6OptionError(f"{name!r} is longer than {MAX_NAME} octets")
        out += wire
    if not out:
        raise Dhcp6OptionError("a domain name list must not be empty")
    return bytes(out)


def decode_names(raw: bytes) -> list[str]:
    """The inverse of encode_names (for tests, logs and trace); ValueError if malformed."""
    names: list[str] = []
    labels: list[str] = []
    i = 0
    while i < len(raw):
        n = raw[i]
        if n == 0:
            names.append(".".join(labels))
            labels = []
            i += 1
            continue
        if n > 63 or i + 1 + n > len(raw):
            raise ValueError("malformed domain name")
        labels.append(raw[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if labels:
        raise ValueError("unterminated domain name")
    return names


def encode(opt_name: str, opt_value: str) -> tuple[int, bytes]:
    """One extra_dhcp_opt -> (option code, option data); Dhcp6OptionError if it cannot
    be sent exactly."""
    code, encoding = lookup(opt_name)
    value = opt_value.strip()
    if encoding == ADDRS:
        return code, encode_addresses(split_values(value))
    if encoding == NAMES:
        return code, encode_names(split_values(value))
    if encoding == NTP:
        addrs = encode_addresses(split_values(value))
        return code, b"".join(
            struct.pack("!HH", NTP_SUBOPTION_SRV_ADDR, 16) + addrs[i : i + 16]
            for i in range(0, len(addrs), 16)
        )
    if encoding == U32:
        try:
            number = int(value, 0)
        except ValueError:
            number = -1
        if not 0 <= number <= 0xFFFFFFFF:
            raise Dhcp6OptionError(f"{opt_value!r} is not a number of seconds (32 bits)")
        return code, struct.pack("!I", number)
    if encoding == PARAMS:
        params = [p.encode() for p in split_values(value)]
        if not params:
            raise Dhcp6OptionError("boot file parameters must not be empty")
        return code, b"".join(struct.pack("!H", len(p)) + p for p in params)
    text = value.strip('"').encode()
    if not text:
        raise Dhcp6OptionError(f"option {opt_name!r} needs a value")
    return code, text
