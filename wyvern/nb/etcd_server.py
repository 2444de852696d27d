"""Launch private etcd servers (one member or a cluster) on loopback for tests and dev runs.

Every member binds only 127.0.0.1 on free ports, keeps its data under a directory we own
and runs in its own process group, so `stop()` / `kill()` reach exactly the processes we
started. Auto-compaction is off: the store's callers decide when history goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import urllib.request

HOST = "127.0.0.1"


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """Loopback only: never route health checks through an HTTP proxy from the environment.

    Imported on first use: the agent imports this module for kill_with_parent, and
    urllib.request (http.client, email...) would cost it ~3 MiB of RSS for nothing.
    """
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


# Fast but sane timing for loopback: a leader is elected in well under a second and a
# killed leader is replaced within ~1 s, without spurious elections on a busy CI box.
FAST_FLAGS: tuple[str, ...] = (
    "--heartbeat-interval=50",
    "--election-timeout=500",
    "--snapshot-count=10000",
    "--quota-backend-bytes=2147483648",
    "--max-request-bytes=10485760",
    "--auto-compaction-retention=0",
    # Lets an idle watch learn the current revision, so a reconnect after a member
    # failure does not report a spurious Gap once history has been compacted.
    "--experimental-watch-progress-notify-interval=5s",
)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


# Loaded up front: between fork and exec the child must not import or take Python locks.
_LIBC = _libc()
_PR_SET_PDEATHSIG = 1


def kill_with_parent() -> None:
    """Runs in a child before exec (preexec_fn): the kernel SIGKILLs the child when the
    thread that started it dies (Linux), so no helper process outlives its owner."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class EtcdStartError(RuntimeError):
    """A member exited or did not become healthy in time."""


@dataclass
class EtcdMember:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _free_ports(count: int) -> list[int]:
    """Ports the kernel reports free; all held open together so they are distinct."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get_json(url: str, timeout: float) -> dict[str, object]:
    with _opener().open(url, timeout=timeout) as resp:
        data = json.loads(resp.read())
    return data if isinstance(data, dict) else {}


class EtcdServer:
    """An N-member etcd cluster on loopback, e.g.

    with EtcdServer(tmp_path, members=3) as server:
        store = EtcdStore(server.endpoints)
        server.kill(server.leader())
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        members: int = 1,
        *,
        etcd: str = "etcd",
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 30.0,
        log_level: str = "warn",
        die_with_parent: bool = False,
        max_txn_ops: int | None = 4096,
    ) -> None:
        """base_dir: where data dirs and logs go (a temp dir, removed on stop, if None).

        max_txn_ops: etcd's --max-txn-ops; None leaves etcd's default (128), which is what a
        stock cluster has and what Wyvern's etcd_max_txn_ops assumes.

        die_with_parent: have the kernel SIGKILL the members when the thread that started
        them dies (Linux), so a killed test run leaves no etcd behind.
        """
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        binary = shutil.which(etcd)
        if binary is None:
            raise FileNotFoundError(f"etcd binary {etcd!r} not found on PATH")
        self.binary = binary
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="wyvern-etcd-"))
        self.size = members
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.die_with_parent = die_with_parent
        self.max_txn_ops = max_txn_ops
        self.members: list[EtcdMember] = []

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> EtcdServer:
        """Start every member and wait until all are healthy.

        Free ports can be taken by someone else between probing and etcd binding them,
        so a failed start is retried on fresh ports.
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        last: Exception | None = None
        for _ in range(attempts):
            try:
                self._launch()
                self.wait_healthy(self.startup_timeout)
                return self
            except EtcdStartError as exc:
                last = exc
                self._terminate_all(signal.SIGKILL)
                self._remove_data()
        self.stop()
        raise EtcdStartError(f"etcd did not start after {attempts} attempts: {last}")

    def _launch(self) -> None:
        ports = _free_ports(2 * self.size)
        token = f"wyvern-{uuid.uuid4().hex[:12]}"
        self.members = []
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(
                EtcdMember(
                    name=name,
                    client_url=f"http://{HOST}:{ports[2 * i]}",
                    peer_url=f"http://{HOST}:{ports[2 * i + 1]}",
                    data_dir=self.base_dir / f"{name}-{token}.etcd",
                    log_path=self.base_dir / f"{name}-{token}.log",
                )
            )
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.args = [
                self.binary,
                f"--name={m.name}",
                f"--data-dir={m.data_dir}",
                f"--listen-client-urls={m.client_url}",
                f"--advertise-client-urls={m.client_url}",
                f"--listen-peer-urls={m.peer_url}",
                f"--initial-advertise-peer-urls={m.peer_url}",
                f"--initial-cluster={cluster}",
                "--initial-cluster-state=new",  # ignored once the data dir exists
                f"--initial-cluster-token={token}",
                "--logger=zap",
                "--log-outputs=stderr",
                f"--log-level={self.log_level}",
                *FAST_FLAGS,
                *([] if self.max_txn_ops is None else [f"--max-txn-ops={self.max_txn_ops}"]),
                *self.extra_args,
            ]
            self._spawn(m)

    def _spawn(self, m: EtcdMember) -> None:
        with open(m.log_path, "ab") as log:
            m.process = subprocess.Popen(
                m.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach only etcd
                preexec_fn=kill_with_parent if self.die_with_parent else None,
            )

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        """Block until the given (default: all live) members report /health true."""
        deadline = time.monotonic() + timeout
        indexes = (
            members if members is not None else [i for i, m in enumerate(self.members) if m.alive]
        )
        pending = set(indexes)
        while pending:
            for i in sorted(pending):
                m = self.members[i]
                if m.process is not None and m.process.poll() is not None:
                    raise EtcdStartError(f"{m.name} exited ({m.process.returncode}): {self.log(i)}")
                with contextlib.suppress(OSError, ValueError):
                    if _get_json(m.client_url + "/health", 1.0).get("health") == "true":
                        pending.discard(i)
            if pending and time.monotonic() > deadline:
                names = ", ".join(self.members[i].name for i in sorted(pending))
                raise EtcdStartError(f"etcd members not healthy after {timeout}s: {names}")
            if pending:
                time.sleep(0.05)

    def status(self, member: int, timeout: float = 1.0) -> dict[str, object]:
        """The member's /v3/maintenance/status answer (raises OSError if unreachable)."""
        import urllib.request

        req = urllib.request.Request(
            self.members[member].client_url + "/v3/maintenance/status", data=b"{}", method="POST"
        )
        with _opener().open(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
        return data if isinstance(data, dict) else {}

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the live member that is currently raft leader."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[str, int] = {}
            leaders: set[str] = set()
            for i, m in enumerate(self.members):
                if not m.alive:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    status = self.status(i)
                    header = status.get("header")
                    if isinstance(header, dict):
                        ids[str(header.get("member_id"))] = i
                    leaders.add(str(status.get("leader", "0")))
            if len(leaders) == 1:
                (leader_id,) = leaders
                if leader_id in ids:
                    return ids[leader_id]
            if time.monotonic() > deadline:
                raise EtcdStartError("no etcd leader elected")
            time.sleep(0.05)

    def index_of(self, endpoint: str) -> int:
        return self.endpoints.index(endpoint.rstrip("/"))

    def kill(self, member: int, sig: int = signal.SIGKILL) -> None:
        """Signal one member's process group (SIGKILL: a crash) and reap it."""
        m = self.members[member]
        self._signal(m, sig)
        if m.process is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.process.wait(timeout=10)

    def restart(self, member: int, timeout: float = 30.0) -> None:
        """Start a stopped member again on its old ports and data, and wait until healthy."""
        m = self.members[member]
        if m.alive:
            raise RuntimeError(f"{m.name} is still running")
        self._spawn(m)
        self.wait_healthy(timeout, [member])

    def stop(self, graceful: bool = False) -> None:
        """End every member and remove its data.

        The data is thrown away, so by default members are SIGKILLed: a graceful stop of a
        cluster that already lost members can spend seconds trying to hand over leadership.
        """
        self._terminate_all(signal.SIGTERM if graceful else signal.SIGKILL)
        self._remove_data()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log(self, member: int, tail: int = 4000) -> str:
        try:
            return self.members[member].log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    @staticmethod
    def _signal(m: EtcdMember, sig: int) -> None:
        if m.process is None or m.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(m.process.pid, sig)  # the member leads its own group (start_new_session)

    def _terminate_all(self, sig: int) -> None:
        for m in self.members:
            self._signal(m, sig)
        deadline = time.monotonic() + 10
        for m in self.members:
            if m.process is None:
                continue
            try:
                m.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(m, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.process.wait(timeout=5)

    def _remove_data(self) -> None:
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)


def start_etcd(
    base_dir: str | os.PathLike[str] | None = None,
    members: int = 1,
    *,
    etcd: str = "etcd",
    extra_args: tuple[str, ...] = (),
    startup_timeout: float = 30.0,
    die_with_parent: bool = False,
) -> EtcdServer:
    """Start an etcd cluster of `members` members and return it (call `stop()` when done)."""
    server = EtcdServer(
        base_dir,
        members,
        etcd=etcd,
        extra_args=extra_args,
        startup_timeout=startup_timeout,
        die_with_parent=die_with_parent,
    )
    return server.start()
