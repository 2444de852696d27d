"""The few OpenFlow 1.4 messages the packet-in channel speaks, as plain struct codecs.

os-ken's message classes did this before, but importing them loads every OpenFlow
version's parser, its packet library and oslo.config (~14 MiB of the agent's RSS) for a
handful of fixed layouts. tests/southbound/test_openflow.py keeps os-ken as the oracle:
each message here encodes to the same bytes as os-ken's, and packet-ins decode alike.

Sent: HELLO (with a version bitmap), FEATURES_REQUEST, ECHO_REQUEST/REPLY, BARRIER_REQUEST,
SET_CONFIG, Nicira SET_PACKET_IN_FORMAT, PACKET_OUT with one output action, and
PACKET_OUT with set_field actions on registers and a Nicira resubmit(,table): a frame
injected into the pipeline as if a logical port had sent it. Read: the
header of anything, FEATURES_REPLY's datapath id, ERROR's type and code, and Nicira
PACKET_IN2 (a list of 8-byte aligned properties).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFP_VERSION = 0x05  # OpenFlow 1.4 (every br-int speaks 1.3-1.5)

OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_FEATURES_REQUEST = 5
OFPT_FEATURES_REPLY = 6
OFPT_SET_CONFIG = 9
OFPT_PACKET_IN = 10
OFPT_PACKET_OUT = 13
OFPT_BARRIER_REQUEST = 20
OFPT_BARRIER_REPLY = 21

OFPC_FRAG_NORMAL = 0
OFPC_FRAG_NX_MATCH = 3  # first fragments keep their L4 fields; nw_frag tells later ones
OFPP_CONTROLLER = 0xFFFFFFFD
OFP_NO_BUFFER = 0xFFFFFFFF
OFPAT_OUTPUT = 0
OFPHET_VERSIONBITMAP = 1

NX_EXPERIMENTER_ID = 0x00002320
NXT_SET_PACKET_IN_FORMAT = 16
NXT_PACKET_IN2 = 30
NXPIF_NXM = 1
NXPIF_NXT_PACKET_IN2 = 2

# NXT_PACKET_IN2 property types.
NXPINT_PACKET = 0
NXPINT_FULL_LEN = 1
NXPINT_BUFFER_ID = 2
NXPINT_TABLE_ID = 3
NXPINT_COOKIE = 4
NXPINT_REASON = 5
NXPINT_METADATA = 6
NXPINT_USERDATA = 7

HEADER = struct.Struct("!BBHI")  # version, type, length, xid
_EXPERIMENTER = struct.Struct("!II")  # experimenter id, subtype
_PROP = struct.Struct("!HH")  # type, length (header included, padding not)
_PACKET_OUT = struct.Struct("!IIH6x")  # buffer_id, in_port, actions_len
_OUTPUT = struct.Struct("!HHIH6x")  # type, len, port, max_len


class OpenFlowError(ValueError):
    """A message too short or malformed to decode."""


def message(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    """A message of MSG_TYPE: the header and BODY."""
    return HEADER.pack(OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def hello(xid: int) -> bytes:
    """HELLO with a version-bitmap element announcing exactly OpenFlow 1.4."""
    return message(OFPT_HELLO, xid, struct.pack("!HHI", OFPHET_VERSIONBITMAP, 8, 1 << OFP_VERSION))


def set_config(xid: int, miss_send_len: int, flags: int = OFPC_FRAG_NORMAL) -> bytes:
    return message(OFPT_SET_CONFIG, xid, struct.pack("!HH", flags, miss_send_len))


def set_packet_in_format(xid: int, packet_in_format: int = NXPIF_NXT_PACKET_IN2) -> bytes:
    body = _EXPERIMENTER.pack(NX_EXPERIMENTER_ID, NXT_SET_PACKET_IN_FORMAT)
    return message(OFPT_EXPERIMENTER, xid, body + struct.pack("!I", packet_in_format))


def packet_out(xid: int, ofport: int, data: bytes) -> bytes:
    """PACKET_OUT of DATA (unbuffered, from the controller) out of OFPORT."""
    action = _OUTPUT.pack(OFPAT_OUTPUT, _OUTPUT.size, ofport, 0)
    return message(
        OFPT_PACKET_OUT,
        xid,
        _PACKET_OUT.pack(OFP_NO_BUFFER, OFPP_CONTROLLER, len(action)) + action + data,
    )


OFPAT_SET_FIELD = 25
OFPAT_EXPERIMENTER = 0xFFFF
NXAST_RESUBMIT_TABLE = 14
OFPP_IN_PORT_16 = 0xFFF8  # (Nicira actions take OpenFlow 1.0's 16-bit port numbers)
OXM_NXM_1 = 0x0001  # NXM_NX_REG0..15: field number = register number, 4 bytes
OXM_OPENFLOW_BASIC = 0x8000
OXM_OF_METADATA = 2  # 8 bytes
_RESUBMIT_TABLE = struct.Struct("!HHIHHB3x")  # type, len, vendor, subtype, in_port, table


def set_field(oxm_class: int, oxm_field: int, value: int, size: int) -> bytes:
    """OFPAT_SET_FIELD of one OXM field (no mask) to VALUE, padded to 8 bytes."""
    oxm = struct.pack("!I", (oxm_class << 16) | (oxm_field << 9) | size)
    oxm += value.to_bytes(size, "big")
    length = (4 + len(oxm) + 7) // 8 * 8
    return struct.pack("!HH", OFPAT_SET_FIELD, length) + oxm.ljust(length - 4, b"\0")


def set_pipeline_field(name: str, value: int) -> bytes:
    """set_field of a pipeline field: "metadata" or "reg0".."reg15"."""
    if name == "metadata":
        return set_field(OXM_OPENFLOW_BASIC, OXM_OF_METADATA, value, 8)
    if name.startswith("reg") and name[3:].isdigit() and int(name[3:]) < 16:
        return set_field(OXM_NXM_1, int(name[3:]), value, 4)
    raise ValueError(f"cannot set {name!r} in a packet-out")


def resubmit_table(table: int) -> bytes:
    """Nicira resubmit(,TABLE): run the packet through the pipeline from TABLE."""
    return _RESUBMIT_TABLE.pack(
        OFPAT_EXPERIMENTER,
        _RESUBMIT_TABLE.size,
        NX_EXPERIMENTER_ID,
        NXAST_RESUBMIT_TABLE,
        OFPP_IN_PORT_16,
        table,
    )


def packet_out_actions(xid: int, actions: bytes, data: bytes) -> bytes:
    """PACKET_OUT of DATA (unbuffered, from the controller) with ACTIONS (encoded)."""
    return message(
        OFPT_PACKET_OUT,
        xid,
        _PACKET_OUT.pack(OFP_NO_BUFFER, OFPP_CONTROLLER, len(actions)) + actions + data,
    )


def datapath_id(features_reply: bytes) -> int:
    """The datapath id of a FEATURES_REPLY (the whole message, header included)."""
    if len(features_reply) < HEADER.size + 8:
        raise OpenFlowError("FEATURES_REPLY too short")
    (dpid,) = struct.unpack_from("!Q", features_reply, HEADER.size)
    return int(dpid)


def error_type_code(error: bytes) -> tuple[int, int]:
    """(type, code) of an ERROR message."""
    if len(error) < HEADER.size + 4:
        raise OpenFlowError("ERROR too short")
    err_type, code = struct.unpack_from("!HH", error, HEADER.size)
    return int(err_type), int(code)


def experimenter(msg: bytes) -> tuple[int, int]:
    """(experimenter id, subtype) of an EXPERIMENTER message."""
    if len(msg) < HEADER.size + _EXPERIMENTER.size:
        raise OpenFlowError("EXPERIMENTER too short")
    exp, subtype = _EXPERIMENTER.unpack_from(msg, HEADER.size)
    return int(exp), int(subtype)


@dataclass(frozen=True, slots=True)
class PacketIn2:
    """The properties of one NXT_PACKET_IN2 (None: absent)."""

    data: bytes | None = None
    full_len: int | None = None
    buffer_id: int | None = None
    table_id: int | None = None
    cookie: int | None = None
    reason: int | None = None
    metadata: bytes | None = None
    userdata: bytes | None = None


def parse_packet_in2(msg: bytes) -> PacketIn2:
    """Decode an NXT_PACKET_IN2 (the whole message); unknown properties are skipped."""
    offset = HEADER.size + _EXPERIMENTER.size
    end = min(len(msg), HEADER.unpack_from(msg)[2]) if len(msg) >= HEADER.size else 0
    if end < offset:
        raise OpenFlowError("NXT_PACKET_IN2 too short")
    found: dict[int, bytes] = {}
    while offset < end:
        if offset + _PROP.size > end:
            raise OpenFlowError("NXT_PACKET_IN2: truncated property header")
        prop_type, length = _PROP.unpack_from(msg, offset)
        if length < _PROP.size or offset + length > end:
            raise OpenFlowError(f"NXT_PACKET_IN2: bad property length {length}")
        found[prop_type] = msg[offset + _PROP.size : offset + length]
        offset += (length + 7) // 8 * 8
    return PacketIn2(
        data=found.get(NXPINT_PACKET),
        full_len=_uint(found, NXPINT_FULL_LEN, "!I"),
        buffer_id=_uint(found, NXPINT_BUFFER_ID, "!I"),
        table_id=_uint(found, NXPINT_TABLE_ID, "!B"),
        cookie=_uint(found, NXPINT_COOKIE, "!Q"),
        reason=_uint(found, NXPINT_REASON, "!B"),
        metadata=found.get(NXPINT_METADATA),
        userdata=found.get(NXPINT_USERDATA),
    )


def _uint(found: dict[int, bytes], prop_type: int, fmt: str) -> int | None:
    raw = found.get(prop_type)
    if raw is None:
        return None
    if len(raw) < struct.calcsize(fmt):
        raise OpenFlowError(f"NXT_PACKET_IN2: property {prop_type} too short")
    (value,) = struct.unpack_from(fmt, raw)
    return int(value)
