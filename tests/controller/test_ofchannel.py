"""The agent's OpenFlow channel against a real userspace OVS, over br-int.mgmt.

No controller target is configured anywhere: the channel uses the bridge's management
socket, so these tests also prove that a service connection receives NXT_PACKET_IN2
(userdata + registers) once it asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import uuid

import pytest

from tests.southbound.conftest import VM, VmFactory, ovs, vms  # noqa: F401
from wyvern.southbound.ofchannel import ChannelError, OfChannel, PacketIn, decode_oxm_fields
from wyvern.southbound.ovs import OvsInstance

MARK_ETHERTYPE = 0x88B5  # IEEE local experimental: never sent by the kernel itself

# Prints "ready", then the hex of the first frame with our ethertype received on eth0.
SNIFFER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
s.bind(("eth0", 0))
s.settimeout(10)
print("ready", flush=True)
while True:
    frame = s.recv(65535)
    if frame[12:14] == bytes.fromhex("88b5"):
        print(frame.hex(), flush=True)
        break
"""

# Sends one raw frame (hex in argv[1]) out of eth0.
SENDER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(bytes.fromhex(sys.argv[1]))
"""


def punt_flow(ovs_: OvsInstance, vm: VM, *, port_key: int, net_key: int, userdata: str) -> None:
    ovs_.ofctl(
        "-O",
        "OpenFlow14",
        "add-flow",
        "br-int",
        f"table=0,priority=100,in_port={vm.ofport},dl_type=0x88b5,"
        f"actions=load:{port_key}->NXM_NX_REG14[],load:{net_key}->OXM_OF_METADATA[],"
        f"controller(userdata={userdata})",
    )


def marked_frame(src: str, dst: str, payload: bytes) -> bytes:
    mac = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
    return (mac + struct.pack("!H", MARK_ETHERTYPE) + payload).ljust(60, b"\0")


async def send_from(vm: VM, frame: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", vm.netns, sys.executable, "-c", SENDER, frame.hex()
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def next_packet_in(channel: OfChannel, timeout: float = 10.0) -> PacketIn:
    async def first() -> PacketIn:
        async for pin in channel.packet_ins():
            return pin
        raise AssertionError("unreachable")

    return await asyncio.wait_for(first(), timeout)


@pytest.mark.system
def test_packet_in_with_userdata_and_registers_then_packet_out(
    ovs: OvsInstance,  # noqa: F811
    vms: VmFactory,  # noqa: F811
) -> None:
    vm1, vm2 = vms(1), vms(2)
    punt_flow(ovs, vm1, port_key=7, net_key=0x1003E9, userdata="01.02.03")

    async def scenario() -> None:
        async with OfChannel(ovs.mgmt_path("br-int")) as channel:
            await channel.wait_connected()
            dpid = ovs.vsctl("get", "Bridge", "br-int", "datapath_id").strip().strip('"')
            assert channel.datapath_id == int(dpid, 16)
            await channel.barrier()

            frame = marked_frame(vm1.mac, vm2.mac, b"hello wyvern")
            await send_from(vm1, frame)
            pin = await next_packet_in(channel)
            assert pin.in_port == vm1.ofport
            assert pin.userdata == b"\x01\x02\x03"
            assert pin.punt == 1
            assert pin.src_port_key == 7
            assert pin.network_key == 0x1003E9
            assert pin.fields["metadata"] == 0x1003E9
            assert pin.table_id == 0
            assert pin.data[: len(frame)] == frame

            # Packet-out to VM 2's port: the frame arrives in its namespace.
            sniffer = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", vm2.netns, sys.executable, "-c", SNIFFER,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert sniffer.stdout is not None
                line = await asyncio.wait_for(sniffer.stdout.readline(), 20)
                assert line.strip() == b"ready"
                out = marked_frame(vm1.mac, vm2.mac, b"back from the controller")
                await channel.packet_out(vm2.ofport, out)
                await channel.barrier()
                got = await asyncio.wait_for(sniffer.stdout.readline(), 15)
                assert bytes.fromhex(got.decode().strip())[: len(out)] == out
            finally:
                if sniffer.returncode is None:
                    sniffer.kill()
                await sniffer.wait()

    asyncio.run(scenario())


@pytest.mark.system
def test_echo_probes_keep_the_connection(ovs: OvsInstance) -> None:  # noqa: F811
    async def scenario() -> None:
        async with OfChannel(ovs.mgmt_path("br-int"), probe_interval=0.1) as channel:
            await channel.wait_connected()
            await asyncio.sleep(0.8)  # several idle probes, each answered by OVS
            assert channel.connected
            assert channel.connections == 1
            await channel.barrier()
            # Its SET_CONFIG sets the switch's fragment handling to nx-match (never back
            # to normal, which would hide a first fragment's ports from the ACLs).
            assert ovs.ofctl("-O", "OpenFlow14", "get-frags", "br-int").strip() == "nx-match"

    asyncio.run(scenario())


@pytest.mark.system
def test_reconnects_after_vswitchd_restart(ovs: OvsInstance, vms: VmFactory) -> None:  # noqa: F811
    vm1 = vms(1)

    async def scenario() -> None:
        async with OfChannel(ovs.mgmt_path("br-int"), reconnect_max=0.2) as channel:
            await channel.wait_connected()
            ovs.appctl("exit")
            for _ in range(100):
                if not channel.connected:
                    break
                await asyncio.sleep(0.05)
            assert not channel.connected
            with pytest.raises(ChannelError):
                await channel.packet_out(1, b"\0" * 60)
            await asyncio.to_thread(OvsInstance.start, ovs.run_dir, ovs.netns)
            await asyncio.to_thread(ovs._wait_for, ovs.mgmt_path("br-int"), "br-int.mgmt")
            for _ in range(200):
                if channel.connections == 2:
                    break
                await asyncio.sleep(0.05)
            assert channel.connections == 2 and channel.connected
            await channel.barrier()  # (the handshake's SET_CONFIG is in)
            assert ovs.ofctl("-O", "OpenFlow14", "get-frags", "br-int").strip() == "nx-match"
            # Packet-ins flow again on the new connection.
            punt_flow(ovs, vm1, port_key=9, net_key=5, userdata="01")
            await send_from(vm1, marked_frame(vm1.mac, "02:00:00:00:00:99", b"again"))
            pin = await next_packet_in(channel)
            assert (pin.in_port, pin.src_port_key, pin.network_key) == (vm1.ofport, 9, 5)

    asyncio.run(scenario())


def test_not_connected_raises() -> None:
    async def scenario() -> None:
        path = f"/tmp/wv-no-such-{uuid.uuid4().hex[:8]}.mgmt"
        async with OfChannel(path, reconnect_max=0.05) as channel:
            with pytest.raises(ChannelError):
                await channel.packet_out(1, b"\0" * 60)
            with pytest.raises(ChannelError):
                await channel.barrier()
            with pytest.raises(ChannelError):
                await channel.wait_connected(timeout=0.2)

    asyncio.run(scenario())


def test_decode_oxm_fields() -> None:
    # NXM_NX_REG14 (class 1, field 14), OXM metadata (0x8000/2), in_port (0x8000/0),
    # a masked reg0 and an OXM_OF_PKT_REG(7) (xreg7 = reg14:reg15).
    buf = (
        struct.pack("!I", (0x0001 << 16) | (14 << 9) | 4) + struct.pack("!I", 7)
        + struct.pack("!I", (0x8000 << 16) | (2 << 9) | 8) + struct.pack("!Q", 1001)
        + struct.pack("!I", (0x8000 << 16) | (0 << 9) | 4) + struct.pack("!I", 3)
        + struct.pack("!I", (0x0001 << 16) | (0 << 9) | (1 << 8) | 8)
        + struct.pack("!II", 0x55, 0xFF)
        + struct.pack("!I", (0x8001 << 16) | (7 << 9) | 8) + struct.pack("!Q", (4 << 32) | 5)
    )  # fmt: skip
    assert decode_oxm_fields(buf) == {
        "reg14": 4,
        "metadata": 1001,
        "in_port": 3,
        "reg0": 0x55,
        "reg15": 5,
    }


# -- a scripted fake switch: what real OVS will not do on demand ------------------------------
class FakeSwitch:
    """A unix-socket 'switch' that completes the handshake and then runs a script."""

    def __init__(self, path: str, *, refuse_format: bool = False) -> None:
        self.path = path
        self.refuse_format = refuse_format
        self.connections = 0
        self.echo_replies: list[tuple[int, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeSwitch:
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readexactly(8)
                _, mtype, length, xid = struct.unpack("!BBHI", head)
                body = await reader.readexactly(length - 8)
                if mtype == 0:  # HELLO
                    writer.write(struct.pack("!BBHI", 5, 0, 8, 0))
                elif mtype == 5:  # FEATURES_REQUEST -> FEATURES_REPLY
                    reply = struct.pack("!QIBBxxII", 0xABC, 0, 254, 0, 0, 0)
                    writer.write(struct.pack("!BBHI", 5, 6, 8 + len(reply), xid) + reply)
                elif mtype == 4 and self.refuse_format:  # experimenter: refuse it
                    err = struct.pack("!HH", 1, 3) + head + body[:56]
                    writer.write(struct.pack("!BBHI", 5, 1, 8 + len(err), xid) + err)
                elif mtype == 20:  # BARRIER_REQUEST
                    writer.write(struct.pack("!BBHI", 5, 21, 8, xid))
                elif mtype == 3:  # ECHO_REPLY to our probe
                    self.echo_replies.append((xid, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def probe(self, xid: int, data: bytes) -> None:
        w = self.writers[-1]
        w.write(struct.pack("!BBHI", 5, 2, 8 + len(data), xid) + data)
        await w.drain()

    def drop(self) -> None:
        self.writers[-1].transport.abort()


def fake_path() -> str:
    return f"/tmp/wv-fake-{uuid.uuid4().hex[:8]}.mgmt"


def test_answers_the_switch_echo_probe() -> None:
    async def scenario() -> None:
        async with FakeSwitch(fake_path()) as switch, OfChannel(switch.path) as channel:
            await channel.wait_connected()
            assert channel.datapath_id == 0xABC
            await switch.probe(77, b"are you there")
            for _ in range(100):
                if switch.echo_replies:
                    break
                await asyncio.sleep(0.01)
            assert switch.echo_replies == [(77, b"are you there")]

    asyncio.run(scenario())


def test_reconnects_when_the_connection_drops() -> None:
    async def scenario() -> None:
        switch = FakeSwitch(fake_path())
        async with switch, OfChannel(switch.path, reconnect_min=0.01) as channel:
            await channel.wait_connected()
            switch.drop()
            for _ in range(200):
                if channel.connections == 2:
                    break
                await asyncio.sleep(0.01)
            assert channel.connections == 2 and switch.connections == 2
            await channel.barrier()

    asyncio.run(scenario())


def test_refused_packet_in_format_fails_the_handshake() -> None:
    async def scenario() -> None:
        switch = FakeSwitch(fake_path(), refuse_format=True)
        async with switch, OfChannel(switch.path, reconnect_min=0.05) as channel:
            with pytest.raises(ChannelError):
                await channel.wait_connected(timeout=0.5)
            assert switch.connections >= 2  # it keeps retrying
            assert channel.connections == 0

    asyncio.run(scenario())
