"""Notice at once when ovs-vswitchd restarts: an idle OpenFlow connection that drops.

A restarted vswitchd comes back from the same database with every bridge and port, but
with none of what lived only in its memory: br-int's flows, the Geneve option map
(`add-tlv-map`), the underlay bridge's tap device and thus the tunnel IP on it, the
tunnel neighbour cache. The database shows nothing of it (measured: no row of any table
changes across a SIGKILL and restart on the same database), so an OVSDB monitor cannot
tell (docs/dataplane.md: vswitchd restart). What always tells is the OpenFlow
connection: a killed vswitchd closes it at once, and the next successful handshake is
with the new one.

SwitchWatch holds one such connection to the bridge's management socket (like the
packet-in channel, it changes nothing on the switch), answers the switch's echo
probes, and retries a lost connection every `retry` seconds (connecting to a dead
socket fails at once). Every handshake after the first calls `on_reconnect`: the owner
then restores the switch. A connection dropped without a restart costs the owner one
needless check (read the flows, send nothing).

    watch = SwitchWatch(ovs.mgmt_path("br-int"), on_reconnect=agent_wakeup)
    watch.start()         # returns once connected (or after TIMEOUT without)
    ...
    watch.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wyvern.southbound import openflow as ofp

LOG = logging.getLogger(__name__)


class _Lost(Exception):
    """The connection ended (EOF, or the switch stopped answering)."""


class SwitchWatch:
    """A thread keeping an OpenFlow connection to a bridge; counts its handshakes."""

    def __init__(
        self,
        mgmt_path: Path | str,
        on_reconnect: Callable[[], None],
        *,
        retry: float = 0.05,
        probe_interval: float = 5.0,
        name: str = "",
    ) -> None:
        self.mgmt_path = Path(mgmt_path)
        self.on_reconnect = on_reconnect
        self.retry = retry
        self.probe_interval = probe_interval
        self.name = name or self.mgmt_path.stem
        self.connections = 0  # handshakes so far: 1 + the reconnections seen
        self.datapath_id: int | None = None
        self._xids = itertools.count(1)
        self._stop = threading.Event()
        self._first = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None and self.connections > 0

    def start(self, timeout: float = 5.0) -> bool:
        """Start watching; True once the first handshake is done (False after TIMEOUT)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"switch-watch-{self.name}", daemon=True
            )
            self._thread.start()
        return self._first.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        lost_at: float | None = None
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.probe_interval)
                sock.connect(str(self.mgmt_path))
                self._handshake(sock)
                self._sock = sock
                self.connections += 1
                self._first.set()
                if self.connections > 1:
                    down = f" after {time.monotonic() - lost_at:.2f} s" if lost_at else ""
                    LOG.warning(
                        "switch %s: OpenFlow connection back%s (dpid %016x): restoring it",
                        self.name,
                        down,
                        self.datapath_id or 0,
                    )
                    self.on_reconnect()
                self._serve(sock)
            except (OSError, _Lost) as exc:
                if self._sock is not None and not self._stop.is_set():
                    LOG.warning("switch %s: OpenFlow connection lost: %s", self.name, exc)
                    lost_at = time.monotonic()
            except Exception:  # a bug: keep watching, never die silently
                LOG.exception("switch %s: watch failed; reconnecting", self.name)
            finally:
                self._sock = None
                sock.close()
            self._stop.wait(self.retry)

    def _read(self, sock: socket.socket) -> tuple[int, int, bytes]:
        """One message: (type, xid, whole message)."""
        head = _recv_exactly(sock, ofp.HEADER.size)
        _, msg_type, length, xid = ofp.HEADER.unpack(head)
        if length < ofp.HEADER.size:
            raise _Lost(f"bad OpenFlow length {length}")
        try:
            return msg_type, xid, head + _recv_exactly(sock, length - ofp.HEADER.size)
        except TimeoutError:
            raise _Lost("a message stopped half-way") from None

    def _handshake(self, sock: socket.socket) -> None:
        sock.sendall(ofp.hello(next(self._xids)))
        msg_type, _, _ = self._read(sock)
        if msg_type != ofp.OFPT_HELLO:
            raise _Lost(f"expected HELLO, got type {msg_type}")
        xid = next(self._xids)
        sock.sendall(ofp.message(ofp.OFPT_FEATURES_REQUEST, xid))
        while True:
            msg_type, rxid, buf = self._read(sock)
            if msg_type == ofp.OFPT_FEATURES_REPLY and rxid == xid:
                self.datapath_id = ofp.datapath_id(buf)
                return
            if msg_type == ofp.OFPT_ECHO_REQUEST:
                sock.sendall(ofp.message(ofp.OFPT_ECHO_REPLY, rxid, buf[8:]))
            elif msg_type == ofp.OFPT_ERROR:
                raise _Lost("features request refused")

    def _serve(self, sock: socket.socket) -> None:
        """Answer echoes; probe the switch when idle; return or raise when it is gone."""
        probing = False
        while not self._stop.is_set():
            try:
                msg_type, xid, buf = self._read(sock)
            except TimeoutError:
                if probing:
                    raise _Lost(f"no answer to an echo in {self.probe_interval:.0f} s") from None
                probing = True
                sock.sendall(ofp.message(ofp.OFPT_ECHO_REQUEST, next(self._xids)))
                continue
            probing = False
            if msg_type == ofp.OFPT_ECHO_REQUEST:
                sock.sendall(ofp.message(ofp.OFPT_ECHO_REPLY, xid, buf[8:]))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """N bytes; TimeoutError only if none came (else the stream is out of step)."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            if buf:
                raise _Lost("a message stopped half-way") from None
            raise
        if not chunk:
            raise _Lost("closed by the switch")
        buf += chunk
    return bytes(buf)
