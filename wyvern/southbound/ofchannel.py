"""The agent's own OpenFlow connection to br-int: packet-ins in, packet-outs out.

Like ovn-controller's pinctrl, the channel opens the bridge's management socket
(`unix:<ovs run dir>/br-int.mgmt`) instead of configuring a controller target: adding or
removing a controller flushes every flow (docs/dataplane.md: controller flush), a
management connection changes nothing on the switch. The price is that OVS treats it as
a *service* connection, which gets no asynchronous messages until it asks for them; the
handshake therefore sends:

- OFPT_SET_CONFIG with miss_send_len=0xffff (a service connection with miss_send_len 0
  never receives packet-ins; 0xffff = whole packet, no buffering) and the fragment
  handling `nx-match` (the flags are the switch's, not the connection's: `normal` would
  undo OvsInstance.ensure_frag_mode, and hide a first fragment's ports and ICMP type
  from the security groups),
- NXT_SET_PACKET_IN_FORMAT(NXPIF_NXT_PACKET_IN2), so a `controller(userdata=..)` punt
  arrives as NXT_PACKET_IN2 carrying the userdata and the registers/metadata,
- a barrier, whose reply proves the switch accepted both.

The messages are plain struct codecs (openflow.py, with os-ken as the test oracle); the
socket, the handshake, echo, barriers and reconnects are plain asyncio, so neither os-ken
nor eventlet is imported (docs/dataplane.md: os-ken and eventlet) and the loop stays
responsive (docs/dataplane.md: inactivity probe: OVS drops a management connection that
does not answer its echo probes).

    async with OfChannel(ovs.mgmt_path("br-int")) as channel:
        await channel.wait_connected()
        async for pin in channel.packet_ins():
            await channel.packet_out(pin.in_port, reply)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from wyvern.ir.registers import RegisterName, register
from wyvern.southbound import openflow as ofp
from wyvern.southbound.openflow import OFP_VERSION

LOG = logging.getLogger(__name__)

_HEADER = ofp.HEADER
NO_BUFFER_MISS_SEND_LEN = 0xFFFF

# OXM classes seen in an NXT_PACKET_IN2 metadata property.
_OXM_NXM_1 = 0x0001  # NXM_NX_REG0..15 (field number = register number)
_OXM_OPENFLOW_BASIC = 0x8000  # in_port = field 0, metadata = field 2
_OXM_PACKET_REGS = 0x8001  # OXM_OF_PKT_REG(N) = xreg N, 64 bits


class ChannelError(RuntimeError):
    """The switch is not connected, or it rejected a request."""


@dataclass(frozen=True, slots=True)
class PacketIn:
    """One punted packet: where it came from, the pipeline state, userdata and bytes."""

    in_port: int
    data: bytes
    userdata: bytes = b""
    # Field values at the punt: "in_port", "metadata", "reg0".."reg15" (when non-zero).
    fields: Mapping[str, int] = field(default_factory=dict)
    table_id: int | None = None
    cookie: int | None = None
    reason: int | None = None

    def register(self, name: RegisterName | str) -> int:
        """The value of a named register (registers.py), e.g. "src_port_key"."""
        reg = register(name)
        value = 0
        for seg in reg.segments():
            raw = self.fields.get(seg.field, 0)
            value |= ((raw >> seg.start) & ((1 << seg.width) - 1)) << seg.offset
        return value

    @property
    def src_port_key(self) -> int:
        return self.register("src_port_key")

    @property
    def network_key(self) -> int:
        return self.register("network_key")

    @property
    def punt(self) -> int | None:
        """The first userdata byte (wyvern/apps/punts.py), None without userdata."""
        return self.userdata[0] if self.userdata else None


@dataclass(frozen=True, slots=True)
class Inject:
    """Where a packet-out enters the pipeline instead of leaving by a port: REGISTERS
    (named, wyvern.ir.registers) set, then resubmit to TABLE. A frame a logical port
    sends without a VIF (a router interface asking for a neighbour) takes the path a VM's
    would: l2_lookup floods it to the network's ports here and on every other chassis."""

    table: int
    registers: tuple[tuple[str, int], ...]

    def fields(self) -> dict[str, int]:
        """The physical fields (metadata, regN) the registers live in, and their values."""
        out: dict[str, int] = {}
        for name, value in self.registers:
            for seg in register(name).segments():
                part = (value >> seg.offset) & ((1 << seg.width) - 1)
                out[seg.field] = out.get(seg.field, 0) | (part << seg.start)
        return dict(sorted(out.items()))

    def actions(self) -> bytes:
        out = b"".join(ofp.set_pipeline_field(f, v) for f, v in self.fields().items())
        return out + ofp.resubmit_table(self.table)

    def ofctl_actions(self) -> str:
        """The same actions in ovs-ofctl's syntax."""
        sets = [f"set_field:{v:#x}->{f}" for f, v in self.fields().items()]
        return ",".join([*sets, f"resubmit(,{self.table})"])


def decode_oxm_fields(buf: bytes) -> dict[str, int]:
    """The OXM/NXM TLVs of a packet-in2 metadata property -> {"reg14": 7, ...}."""
    out: dict[str, int] = {}
    offset = 0
    while offset + 4 <= len(buf):
        (header,) = struct.unpack_from("!I", buf, offset)
        oxm_class, oxm_field = header >> 16, (header >> 9) & 0x7F
        hasmask, length = (header >> 8) & 1, header & 0xFF
        body = buf[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if oxm_class == 0xFFFF:  # experimenter OXM: 4-byte experimenter id first
            continue
        if hasmask:
            body = body[: len(body) // 2]
        value = int.from_bytes(body, "big")
        if oxm_class == _OXM_NXM_1 and oxm_field < 16:
            out[f"reg{oxm_field}"] = value
        elif oxm_class == _OXM_PACKET_REGS and oxm_field < 8:
            out[f"reg{2 * oxm_field}"] = value >> 32
            out[f"reg{2 * oxm_field + 1}"] = value & 0xFFFFFFFF
        elif oxm_class == _OXM_OPENFLOW_BASIC and oxm_field == 0:
            out["in_port"] = value
        elif oxm_class == _OXM_OPENFLOW_BASIC and oxm_field == 2:
            out["metadata"] = value
    return out


_hello = ofp.hello
_simple = ofp.message


class OfChannel:
    """An auto-reconnecting OpenFlow 1.4 connection to one bridge's management socket.

    Packet-ins are queued (bounded: when the consumer falls behind, new packet-ins are
    dropped and counted rather than growing memory or stalling the reader). Requests
    made while disconnected raise ChannelError: punt services simply drop the reply and
    the client retransmits.
    """

    def __init__(
        self,
        mgmt_path: Path | str,
        *,
        queue_size: int = 1024,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        probe_interval: float = 15.0,
        name: str = "",
    ) -> None:
        self.mgmt_path = Path(mgmt_path)
        self.name = name or self.mgmt_path.stem
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.probe_interval = probe_interval
        self._queue: asyncio.Queue[PacketIn] = asyncio.Queue(maxsize=queue_size)
        self._xids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.datapath_id: int | None = None
        self.connections = 0  # successful handshakes so far (reconnects = this - 1)
        self.dropped_packet_ins = 0
        self.received_packet_ins = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ofchannel-{self.name}"
            )

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop_connection(ChannelError("channel closed"))

    async def __aenter__(self) -> OfChannel:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise ChannelError(
                f"{self.name}: no OpenFlow connection to {self.mgmt_path} within {timeout} s"
            ) from None

    # -- public API ----------------------------------------------------------------------
    async def packet_ins(self) -> AsyncIterator[PacketIn]:
        """Every packet-in, in arrival order, across reconnects (one consumer)."""
        while True:
            yield await self._queue.get()

    async def packet_out(self, ofport: int | Inject, data: bytes) -> None:
        """Send DATA out of OpenFlow port OFPORT (as if from the controller), or into the
        pipeline (an Inject)."""
        if isinstance(ofport, Inject):
            await self._send(ofp.packet_out_actions(next(self._xids), ofport.actions(), data))
            return
        await self._send(ofp.packet_out(next(self._xids), ofport, data))

    async def barrier(self, timeout: float = 10.0) -> None:
        """Wait until the switch has processed everything sent before this call."""
        xid = next(self._xids)
        fut = self._expect(xid)
        try:
            await self._send(_simple(ofp.OFPT_BARRIER_REQUEST, xid))
            await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(xid, None)

    # -- connection ------------------------------------------------------------------------
    async def _send(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or not self._connected.is_set():
            raise ChannelError(f"{self.name}: not connected to {self.mgmt_path}")
        writer.write(data)
        await writer.drain()

    def _expect(self, xid: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[xid] = fut
        return fut

    async def _run(self) -> None:
        delay = self.reconnect_min
        while not self._closing:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.mgmt_path))
            except OSError as exc:
                LOG.debug("ofchannel %s: connect %s: %s", self.name, self.mgmt_path, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            try:
                await self._session(reader, writer)
                delay = self.reconnect_min
            except (OSError, EOFError, asyncio.IncompleteReadError, ChannelError) as exc:
                LOG.warning("ofchannel %s: connection lost: %s", self.name, exc)
            except TimeoutError:
                LOG.warning("ofchannel %s: switch stopped answering; reconnecting", self.name)
            except Exception:  # a bug or a malformed message: reconnect, never die silently
                LOG.exception("ofchannel %s: session failed; reconnecting", self.name)
            finally:
                self._drop_connection(ChannelError(f"{self.name}: connection lost"))
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)

    def _drop_connection(self, exc: Exception) -> None:
        self._connected.clear()
        self._writer = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
        head = await reader.readexactly(8)
        version, msg_type, length, xid = _HEADER.unpack(head)
        if length < 8:
            raise ChannelError(f"{self.name}: bad OpenFlow length {length}")
        return version, msg_type, xid, head + await reader.readexactly(length - 8)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Handshake: hello both ways, then features (the datapath id).
        writer.write(_hello(next(self._xids)))
        version, msg_type, _, _ = await asyncio.wait_for(self._read(reader), 10)
        if msg_type != ofp.OFPT_HELLO:
            raise ChannelError(f"{self.name}: expected HELLO, got type {msg_type}")
        if version < OFP_VERSION:
            raise ChannelError(f"{self.name}: switch speaks OpenFlow 0x{version:02x} only")
        xid = next(self._xids)
        writer.write(_simple(ofp.OFPT_FEATURES_REQUEST, xid))
        while True:
            _, msg_type, rxid, buf = await asyncio.wait_for(self._read(reader), 10)
            if msg_type == ofp.OFPT_FEATURES_REPLY and rxid == xid:
                self.datapath_id = ofp.datapath_id(buf)
                break
            if msg_type == ofp.OFPT_ERROR:
                raise ChannelError(f"{self.name}: features request failed")
            if msg_type == ofp.OFPT_ECHO_REQUEST:
                writer.write(_simple(ofp.OFPT_ECHO_REPLY, rxid, buf[8:]))
        # Ask for packet-ins (a service connection gets none with miss_send_len 0) in
        # the NXT_PACKET_IN2 format (userdata + registers), then prove it with a barrier.
        setup: list[Callable[[int], bytes]] = [
            lambda xid: ofp.set_config(xid, NO_BUFFER_MISS_SEND_LEN, ofp.OFPC_FRAG_NX_MATCH),
            lambda xid: ofp.set_packet_in_format(xid, ofp.NXPIF_NXT_PACKET_IN2),
        ]
        # Neither request has a reply: an error for its xid (which the switch sends
        # before the barrier reply) fails its future; success leaves it pending.
        handshake: dict[int, asyncio.Future[Any]] = {}
        for encode in setup:
            xid = next(self._xids)
            handshake[xid] = self._expect(xid)
            writer.write(encode(xid))
        barrier_xid = next(self._xids)
        barrier = handshake[barrier_xid] = self._expect(barrier_xid)
        writer.write(_simple(ofp.OFPT_BARRIER_REQUEST, barrier_xid))
        await writer.drain()
        self._writer = writer
        reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader, writer))
        try:
            try:
                done, _ = await asyncio.wait(
                    [reader_task, barrier], timeout=10, return_when=asyncio.FIRST_COMPLETED
                )
                if reader_task in done:
                    reader_task.result()  # raises why the session ended
                    raise ChannelError(f"{self.name}: connection closed during handshake")
                if barrier not in done:
                    raise ChannelError(f"{self.name}: handshake barrier unanswered")
                for fut in handshake.values():
                    if fut.done():
                        fut.result()  # the switch refused a request: raises ChannelError
            finally:
                for xid, fut in handshake.items():
                    self._pending.pop(xid, None)
                    if not fut.done():
                        fut.cancel()
                    elif not fut.cancelled():
                        fut.exception()  # retrieved: no "never retrieved" noise
            self.connections += 1
            self._connected.set()
            LOG.info(
                "ofchannel %s: connected to %s (dpid %016x, connection #%d)",
                self.name,
                self.mgmt_path,
                self.datapath_id or 0,
                self.connections,
            )
            await reader_task
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader_task

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        probe_xid: int | None = None
        while True:
            try:
                _, msg_type, xid, buf = await asyncio.wait_for(
                    self._read(reader), self.probe_interval
                )
            except TimeoutError:
                if probe_xid is not None:
                    raise
                probe_xid = next(self._xids)  # idle: make sure the switch is still there
                writer.write(_simple(ofp.OFPT_ECHO_REQUEST, probe_xid))
                continue
            probe_xid = None
            self._dispatch(msg_type, xid, buf, writer)

    def _dispatch(self, msg_type: int, xid: int, buf: bytes, writer: asyncio.StreamWriter) -> None:
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            writer.write(_simple(ofp.OFPT_ECHO_REPLY, xid, buf[8:]))
        elif msg_type == ofp.OFPT_EXPERIMENTER:
            if ofp.experimenter(buf) == (ofp.NX_EXPERIMENTER_ID, ofp.NXT_PACKET_IN2):
                self._packet_in2(buf)
        elif msg_type == ofp.OFPT_BARRIER_REPLY:
            self._resolve(xid, None)
        elif msg_type == ofp.OFPT_ERROR:
            err_type, code = ofp.error_type_code(buf)
            exc = ChannelError(f"{self.name}: switch error type={err_type} code={code} xid={xid}")
            fut = self._pending.pop(xid, None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            else:
                LOG.warning("%s", exc)
        elif msg_type == ofp.OFPT_PACKET_IN:
            LOG.debug("ofchannel %s: ignoring a plain OFPT_PACKET_IN", self.name)

    def _resolve(self, xid: int, value: Any) -> None:
        fut = self._pending.pop(xid, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _packet_in2(self, buf: bytes) -> None:
        msg = ofp.parse_packet_in2(buf)
        if msg.data is None:
            return
        fields = decode_oxm_fields(msg.metadata or b"")
        pin = PacketIn(
            in_port=fields.get("in_port", 0),
            data=msg.data,
            userdata=msg.userdata or b"",
            fields=fields,
            table_id=msg.table_id,
            cookie=msg.cookie,
            reason=msg.reason,
        )
        self.received_packet_ins += 1
        try:
            self._queue.put_nowait(pin)
        except asyncio.QueueFull:
            self.dropped_packet_ins += 1
            if self.dropped_packet_ins % 1000 == 1:
                LOG.warning(
                    "ofchannel %s: packet-in queue full, %d dropped so far",
                    self.name,
                    self.dropped_packet_ins,
                )
