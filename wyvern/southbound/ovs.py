"""A private Open vSwitch: our own ovsdb-server and ovs-vswitchd, optionally in a netns.

Why private: a chassis under test (or a developer box) must not share OVS with anything
else, and several chassis run side by side on one machine. Each instance keeps its
database, pidfiles, unixctl sockets, bridge management sockets and logs under one run
directory, and `ovs-vswitchd` runs with `--disable-system` (userspace datapath, no
kernel module) inside its own network namespace, because a netdev bridge creates tap
devices named after the bridge (`br-int`, `ovs-netdev`) that collide between instances
sharing a namespace.

    ovs = OvsInstance.start(netns="chassis-1")     # or attach to one already running
    ovs.ensure_bridge("br-int")
    ovs.set_controller_once("br-int", "tcp:127.0.0.1:6653")
    ovs.ofctl("dump-flows", "br-int")
    ovs.stop()

Rules this module keeps (each cost hours; docs/dataplane.md: private OVS):
- Processes are found and stopped by the PIDs in *our* pidfiles (checked against
  /proc/PID/cmdline, so a reused PID is never signalled), never by process name.
- A bridge is created once; an existing bridge is left exactly as it is.
- The controller is set only when it differs. Going from no controller to one (or the
  reverse) makes OVS flush every flow; changing one target to another does not.
- `ovs-ofctl` runs with OVS_RUNDIR set to the run dir, so `ovs-ofctl dump-flows br-int`
  talks to `<run>/br-int.mgmt` of this instance and no other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

LOG = logging.getLogger(__name__)

SCHEMA_CANDIDATES = (
    Path("/usr/share/openvswitch/vswitch.ovsschema"),
    Path("/usr/local/share/openvswitch/vswitch.ovsschema"),
)
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
# Protocols every bridge speaks: 1.3 for the basics, 1.4 for bundles, 1.5 for later use.
BRIDGE_PROTOCOLS = "OpenFlow13,OpenFlow14,OpenFlow15"
DEFAULT_TIMEOUT = 30.0


class OvsError(RuntimeError):
    """OVS could not be started, reached or stopped."""


class OvsCommandError(OvsError):
    """An OVS command-line tool failed; carries the command and what it printed."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(
            f"{' '.join(self.cmd[:6])}{' ...' if len(cmd) > 6 else ''}"
            f" failed with rc={returncode}: {detail}"
        )


def _schema_path() -> Path:
    for path in SCHEMA_CANDIDATES:
        if path.exists():
            return path
    raise OvsError("vswitch.ovsschema not found: is openvswitch-switch installed?")


def netns_exists(name: str) -> bool:
    """True if `ip netns` knows NAME (a bind mount under /run/netns)."""
    return Path("/run/netns", name).exists()


def run_cmd(
    cmd: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool, capture its output, and raise OvsCommandError on failure."""
    try:
        proc = subprocess.run(
            list(cmd),
            input=input,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OvsCommandError(cmd, -1, "", f"timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise OvsCommandError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def stream_cmd(
    cmd: Sequence[str],
    on_line: Callable[[str], None],
    *,
    input_lines: Sequence[str] | TextChunks | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Run a tool and hand each stdout line to ON_LINE while the tool is still printing.

    For big flow tables: OVS's C code and our Python parsing then overlap on two cores
    (100k flows: ~0.85 s instead of ~1.3 s). INPUT_LINES are fed from a thread; stderr
    goes to a file so a chatty tool can never block on it. Raises OvsCommandError on a
    non-zero exit or after TIMEOUT, and whatever ON_LINE raises (killing the tool).
    """
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE if input_lines is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errfile,
            text=True,
            env=dict(env) if env is not None else None,
        )
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        writer = None
        if input_lines is not None:
            assert proc.stdin is not None
            writer = threading.Thread(target=_feed, args=(proc.stdin, input_lines), daemon=True)
            writer.start()
        try:
            for line in proc.stdout:
                on_line(line)
            rc = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            if writer is not None:
                writer.join()
        if rc != 0:
            errfile.seek(0)
            stderr = errfile.read().decode(errors="replace")
            if rc == -signal.SIGKILL and not stderr:
                stderr = f"timed out after {timeout:.0f} s"
            raise OvsCommandError(cmd, rc, "", stderr)


class TextChunks:
    """A tool's input as chunks of text, each ending in a newline: a few large strings
    instead of a string per line (the agent's first install writes ~45 MiB of flows)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: Iterable[str]) -> None:
        self.chunks = chunks


def _feed(stdin: IO[str], lines: Sequence[str] | TextChunks) -> None:
    """Write LINES to a tool's stdin; the tool may stop reading early (a bad line)."""
    try:
        if isinstance(lines, TextChunks):
            for chunk in lines.chunks:
                stdin.write(chunk)
        else:
            for start in range(0, len(lines), 4096):
                stdin.write("\n".join(lines[start : start + 4096]))
                stdin.write("\n")
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _proc_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state follows the parenthesised command name, which may hold spaces.
        if stat[stat.rindex(")") + 2 :].startswith("Z"):
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class OvsInstance:
    """One private ovsdb-server + ovs-vswitchd pair, and the tools pointed at it."""

    def __init__(
        self,
        run_dir: Path | str,
        netns: str | None = None,
        *,
        owns_run_dir: bool = False,
        owns_netns: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.netns = netns
        self.owns_run_dir = owns_run_dir
        self.owns_netns = owns_netns

    # -- paths ---------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.run_dir / "conf.db"

    @property
    def db_sock(self) -> Path:
        return self.run_dir / "db.sock"

    def pidfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def ctl_path(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.ctl"

    def log_path(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.log"

    def mgmt_path(self, bridge: str) -> Path:
        """The bridge's OpenFlow management socket (what `ovs-ofctl BRIDGE` opens)."""
        return self.run_dir / f"{bridge}.mgmt"

    @property
    def env(self) -> dict[str, str]:
        """Environment for OVS tools and daemons: every default path is our run dir."""
        env = dict(os.environ)
        run = str(self.run_dir)
        env.update(OVS_RUNDIR=run, OVS_LOGDIR=run, OVS_DBDIR=run)
        return env

    def __repr__(self) -> str:
        return f"OvsInstance(run_dir={str(self.run_dir)!r}, netns={self.netns!r})"

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        run_dir: Path | str | None = None,
        netns: str | None = None,
        *,
        enable_dummy: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> OvsInstance:
        """Start the daemons that are not already running in RUN_DIR (or a new temp dir).

        Daemons still alive from an earlier start are attached to, not restarted: an
        agent restart must leave the datapath (and its flows) alone. The database is
        created only if absent, so configuration survives a restart too. NETNS is
        created if missing, and then deleted again by `stop()`.
        """
        owns_run_dir = run_dir is None
        if run_dir is None:
            # Short and under /tmp: unix socket paths are limited to 107 bytes.
            run_dir = tempfile.mkdtemp(prefix="wv-ovs-", dir="/tmp")
        owns_netns = False
        if netns is not None and not netns_exists(netns):
            run_cmd(["ip", "netns", "add", netns])
            run_cmd(["ip", "-n", netns, "link", "set", "lo", "up"])
            owns_netns = True
        self = cls(run_dir, netns, owns_run_dir=owns_run_dir, owns_netns=owns_netns)
        try:
            self._start_daemons(enable_dummy=enable_dummy, timeout=timeout)
        except BaseException:
            self.stop(keep_files=True)
            raise
        return self

    @classmethod
    def attach(cls, run_dir: Path | str, netns: str | None = None) -> OvsInstance:
        """An instance for daemons already running in RUN_DIR; raises if any is down."""
        self = cls(run_dir, netns)
        down = [d for d in DAEMONS if self.pid(d) is None]
        if down:
            raise OvsError(f"{self}: not running: {', '.join(down)}")
        return self

    def _start_daemons(self, *, enable_dummy: bool, timeout: float) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.pid("ovsdb-server") is None:
            if not self.db_path.exists():
                run_cmd(["ovsdb-tool", "create", str(self.db_path), str(_schema_path())])
            self._remove_stale("ovsdb-server", [self.db_sock])
            self._spawn(
                "ovsdb-server",
                [
                    "ovsdb-server",
                    str(self.db_path),
                    f"--remote=punix:{self.db_sock}",
                ],
                timeout,
            )
            self.vsctl("--no-wait", "init", timeout=timeout)
        if self.pid("ovs-vswitchd") is None:
            self._remove_stale("ovs-vswitchd", list(self.run_dir.glob("*.mgmt")))
            args = ["ovs-vswitchd", f"unix:{self.db_sock}", "--disable-system"]
            if enable_dummy:
                args.append("--enable-dummy")
            self._spawn("ovs-vswitchd", args, timeout)
        LOG.info(
            "ovs %s netns=%s: ovsdb-server pid %s, ovs-vswitchd pid %s",
            self.run_dir,
            self.netns,
            self.pid("ovsdb-server"),
            self.pid("ovs-vswitchd"),
        )

    def _remove_stale(self, daemon: str, extra: list[Path]) -> None:
        """Sockets and pidfile left by a daemon that died without cleaning up."""
        for path in [self.pidfile(daemon), self.ctl_path(daemon), *extra]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _spawn(self, daemon: str, args: list[str], timeout: float) -> None:
        """Run DAEMON with --detach: it returns once the daemon is up (or has failed)."""
        full = [
            *args,
            f"--pidfile={self.pidfile(daemon)}",
            f"--unixctl={self.ctl_path(daemon)}",
            f"--log-file={self.log_path(daemon)}",
            "--detach",
            "-vconsole:warn",
        ]
        if self.netns is not None:
            full = ["ip", "netns", "exec", self.netns, *full]
        console = self.run_dir / f"{daemon}.console"
        with console.open("ab") as out:
            try:
                rc = subprocess.run(
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=self.env,
                    timeout=timeout,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise OvsError(f"{self}: {daemon} did not start within {timeout:.0f} s") from exc
        if rc != 0 or self.pid(daemon) is None:
            raise OvsError(
                f"{self}: {daemon} failed to start (rc={rc}): "
                f"{self._tail(console)} {self._tail(self.log_path(daemon))}".strip()
            )

    @staticmethod
    def _tail(path: Path, lines: int = 5) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pid(self, daemon: str) -> int | None:
        """PID of our DAEMON if its pidfile names a live process that is really it."""
        try:
            pid = int(self.pidfile(daemon).read_text().strip())
        except (OSError, ValueError):
            return None
        argv = _proc_cmdline(pid)
        if not argv or not any(Path(a).name == daemon for a in argv[:4]):
            return None
        # The pidfile argument proves it is *this* instance's daemon.
        if f"--pidfile={self.pidfile(daemon)}" not in argv:
            return None
        return pid

    @property
    def running(self) -> bool:
        return all(self.pid(d) is not None for d in DAEMONS)

    def stop(self, *, timeout: float = 5.0, keep_files: bool = False) -> None:
        """Stop both daemons by PID: SIGTERM, wait, then SIGKILL. Safe to call twice.

        Removes the run dir and the netns when this instance created them (unless
        KEEP_FILES, which keeps the run dir and its logs for a post-mortem).
        """
        for daemon in reversed(DAEMONS):  # the switch first, then its database
            pid = self.pid(daemon)
            if pid is not None:
                _terminate(pid, timeout)
                LOG.info("ovs %s: stopped %s pid %d", self.run_dir, daemon, pid)
        if self.owns_netns and self.netns is not None and netns_exists(self.netns):
            run_cmd(["ip", "netns", "del", self.netns], check=False)
        if self.owns_run_dir and not keep_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> OvsInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tools ---------------------------------------------------------------------------
    def vsctl(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """`ovs-vsctl` against our database; returns stdout."""
        cmd = ["ovs-vsctl", f"--db=unix:{self.db_sock}", f"--timeout={max(1, int(timeout))}"]
        return run_cmd([*cmd, *args], env=self.env, timeout=timeout + 5).stdout

    def ofctl(self, *args: str, input: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
        """`ovs-ofctl` with OVS_RUNDIR set, so a bridge name means *our* bridge."""
        cmd = ["ovs-ofctl", f"--timeout={max(1, int(timeout))}", *args]
        return run_cmd(cmd, input=input, env=self.env, timeout=timeout + 5).stdout

    def ofctl_stream(
        self,
        *args: str,
        on_line: Callable[[str], None],
        input_lines: Sequence[str] | TextChunks | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """`ovs-ofctl` whose output is handed over line by line (see stream_cmd)."""
        cmd = ["ovs-ofctl", f"--timeout={max(1, int(timeout))}", *args]
        stream_cmd(cmd, on_line, input_lines=input_lines, env=self.env, timeout=timeout + 5)

    def appctl(
        self, *args: str, target: str = "ovs-vswitchd", timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """`ovs-appctl` to our vswitchd (or TARGET daemon, e.g. ovsdb-server)."""
        cmd = ["ovs-appctl", "-t", str(self.ctl_path(target)), f"--timeout={max(1, int(timeout))}"]
        return run_cmd([*cmd, *args], env=self.env, timeout=timeout + 5).stdout

    def netns_cmd(self, *args: str) -> list[str]:
        """ARGS prefixed to run inside this instance's namespace (if it has one)."""
        return ["ip", "netns", "exec", self.netns, *args] if self.netns else list(args)

    # -- configuration -------------------------------------------------------------------
    def bridge_exists(self, bridge: str) -> bool:
        proc = run_cmd(
            ["ovs-vsctl", f"--db=unix:{self.db_sock}", "br-exists", bridge],
            env=self.env,
            check=False,
        )
        if proc.returncode not in (0, 2):
            raise OvsCommandError(
                ["ovs-vsctl", "br-exists", bridge], proc.returncode, proc.stdout, proc.stderr
            )
        return proc.returncode == 0

    def ensure_frag_mode(self, bridge: str = "br-int") -> None:
        """OpenFlow's fragment handling `nx-match` on BRIDGE (idempotent; vswitchd keeps
        it in memory only, so it is set again after a restart). The default, `normal`,
        shows every fragment's L4 fields as 0, the first's too: a security group rule
        naming a port or an ICMP type would never admit a fragmented packet. With
        nx-match the first fragment keeps them, and `ip_frag` tells later fragments."""
        if self.ofctl("-O", "OpenFlow14", "get-frags", bridge).strip() != "nx-match":
            self.ofctl("-O", "OpenFlow14", "set-frags", bridge, "nx-match")

    def ensure_bridge(self, bridge: str = "br-int", *, datapath_type: str = "netdev") -> bool:
        """Create BRIDGE once, the way the agent needs it; returns True if it was created.

        An existing bridge is left exactly as is: re-setting fail_mode or protocols on
        a live bridge could reconnect or reconfigure it under traffic. fail_mode=secure
        means no flows are added behind our back when no controller is connected;
        disable-in-band keeps OVS from installing hidden in-band flows.
        """
        if self.bridge_exists(bridge):
            return False
        self.vsctl(
            "--may-exist",
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            f"datapath_type={datapath_type}",
            "fail_mode=secure",
            f"protocols={BRIDGE_PROTOCOLS}",
            "other_config:disable-in-band=true",
        )
        self._wait_for(self.mgmt_path(bridge), f"{bridge}.mgmt")
        LOG.info("ovs %s: created bridge %s (%s)", self.run_dir, bridge, datapath_type)
        return True

    def _wait_for(self, path: Path, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise OvsError(f"{self}: {what} did not appear within {timeout:.0f} s")
            time.sleep(0.02)

    def get_controllers(self, bridge: str = "br-int") -> list[str]:
        return self.vsctl("get-controller", bridge).split()

    def set_controller_once(self, bridge: str, target: str) -> bool:
        """Point BRIDGE at TARGET unless it already is; returns True if it changed.

        Never removes the controller: OVS flushes all flows when a bridge goes from
        some controller to none, or from none to some. Replacing one target by another
        keeps the flows (measured on OVS 3.1). A restarting agent therefore calls this
        with the same target and nothing happens.
        """
        current = self.get_controllers(bridge)
        if target in current:
            return False
        if not current:
            LOG.warning(
                "ovs %s: first controller on %s (OVS flushes its flows now): %s",
                self.run_dir,
                bridge,
                target,
            )
        else:
            LOG.info(
                "ovs %s: controller of %s changes %s -> %s", self.run_dir, bridge, current, target
            )
        self.vsctl("set-controller", bridge, target)
        return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM PID, wait up to TIMEOUT, then SIGKILL and wait for it to go."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            # A stopped process acts on SIGKILL at once; SIGCONT is harmless after it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _proc_cmdline(pid) is None:
                return
            time.sleep(0.02)
    raise OvsError(f"pid {pid} survived SIGKILL")
