"""Attribute types shared by the resource definitions (pydantic Annotated types)."""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema

_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"'{value}' is not a valid UUID") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP address") from None


def _cidr(value: str) -> str:
    """Canonicalise as Neutron does: host bits are rejected, not silently cleared."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP subnet") from None
    if "/" not in value:
        raise ValueError(f"'{value}' is not a valid IP subnet: a prefix length is required")
    return str(net)


def _ip_or_cidr(value: str) -> str:
    if "/" in value:
        return _cidr(value)
    return _ip(value)


def _mac(value: str) -> str:
    if not _MAC_RE.match(value):
        raise ValueError(f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise ValueError(f"'{value}' is not a valid unicast MAC address")
    return mac


def _no_duplicates(values: Any) -> Any:
    """neutron-lib's list validators refuse a list that names an item twice (as sent,
    before any normalisation)."""
    if not isinstance(values, list):
        return values  # (the type's own validation refuses it)
    dups: list[Any] = []
    for i, value in enumerate(values):
        if value in values[:i] and value not in dups:
            dups.append(value)
    if dups:
        raise ValueError("Duplicate items in the list: '{}'".format(", ".join(map(str, dups))))
    return values


NoDuplicates = BeforeValidator(_no_duplicates)


def _strict_bool(value: Any) -> Any:
    """Neutron's convert_to_boolean: bools, 0/1 and 'true'/'false' strings only."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ValueError(f"'{value}' cannot be converted to boolean")


# What the API document says of these (pydantic sees only `str`): the syntax the
# validators require, so generated requests can be valid ones. A CIDR's host bits, a MAC's
# multicast bit and IPv6's finer syntax are left to the validators.
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_CIDR = f"^{_OCTET}(\\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])$"
_V6_CIDR = "^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"
UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid"}
IP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": 64,
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
}
CIDR_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": 64,
    "anyOf": [{"pattern": _V4_CIDR}, {"pattern": _V6_CIDR}],
}
MAC_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": 32,
    "pattern": "^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$",
}

Uuid = Annotated[str, AfterValidator(_uuid), WithJsonSchema(UUID_SCHEMA)]
IpAddress = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_ip), WithJsonSchema(IP_SCHEMA)
]
Cidr = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_cidr), WithJsonSchema(CIDR_SCHEMA)
]
IpOrCidr = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_ip_or_cidr),
    WithJsonSchema({"anyOf": [IP_SCHEMA, CIDR_SCHEMA]}),
]
MacAddress = Annotated[
    str, StringConstraints(max_length=32), AfterValidator(_mac), WithJsonSchema(MAC_SCHEMA)
]
Bool = Annotated[bool, BeforeValidator(_strict_bool)]
ShortStr = Annotated[str, StringConstraints(max_length=255)]
DeviceOwner = Annotated[str, StringConstraints(max_length=255)]
NonNegInt = Annotated[int, Field(ge=0)]
