"""Real processes for tests and benchmarks: a `wyvern api` server, and a private etcd.

    with start_api(tmp_path) as server:          # its own run dir, free loopback port
        requests.get(server.url)

Every process we start leads its own process group, and `stop()` signals exactly that
group: SIGTERM, then SIGKILL after a grace period. Set WYVERN_KEEP=1 to leave servers
running after the test for poking at (their URL and run dir are printed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wyvern.nb.etcd_server import EtcdServer

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Loopback only: never route our own requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if the test process dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def wyvern_command() -> list[str]:
    """The `wyvern` command of the Python running the tests (installed or not)."""
    return [sys.executable, "-m", "wyvern.cli"]


def keep() -> bool:
    return os.environ.get("WYVERN_KEEP", "") not in ("", "0", "false")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without WYVERN_* settings (a test's own must not leak in;
    but noauth_trust_headers, which the suite's X-Project-Id headers need), with the repo
    importable and loopback exempt from proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WYVERN_")}
    trust = os.environ.get("WYVERN_NOAUTH_TRUST_HEADERS")  # tests/conftest.py: the suite's
    if trust is not None:
        env["WYVERN_NOAUTH_TRUST_HEADERS"] = trust
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    no_proxy = ",".join(p for p in (env.get("NO_PROXY", ""), "127.0.0.1,localhost") if p)
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def get_json(url: str, timeout: float = 5.0) -> object:
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Proc:
    """A process we started, in its own process group, with its output in a log file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    name: str = "process"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the group, wait, then SIGKILL; returns the exit code (-9 if killed)."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(timeout=10)


def spawn(
    args: Sequence[str], log_path: Path, env: Mapping[str, str], name: str = "process"
) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=REPO,
            start_new_session=True,  # own process group: signals reach only what we started
            preexec_fn=None if keep() else _die_with_parent,
        )
    return Proc(process, log_path, name)


def wait_http(url: str, proc: Proc, timeout: float = 30.0) -> None:
    """Until `url` answers HTTP (any status); fails early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.process.returncode} before answering "
                f"{url}:\n{proc.output()}"
            )
        try:
            with _OPENER.open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{proc.name} did not answer {url} in {timeout}s:\n{proc.output()}")
        time.sleep(0.05)


@dataclass
class ApiServer:
    """A live `wyvern api` process."""

    proc: Proc
    port: int
    run_dir: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        """The endpoint clients are given (the version document, with trailing slash)."""
        return f"http://{HOST}:{self.port}/"

    @property
    def log(self) -> str:
        return self.proc.output()

    def stop(self) -> int | None:
        if keep():
            print(f"\nWYVERN_KEEP: API left running at {self.url} (run dir {self.run_dir})")
            return None
        return self.proc.stop()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_api(
    run_dir: Path,
    *,
    store: str = "sqlite",
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    etcd_endpoints: Sequence[str] | None = None,
    args: Sequence[str] = (),
    access_log: bool = False,
    timeout: float = 30.0,
    attempts: int = 3,
    command: Sequence[str] | None = None,
) -> ApiServer:
    """Start `wyvern api` on a free loopback port with run_dir as its whole state.

    `env` adds WYVERN_* settings; `etcd_endpoints` (e.g. from `etcd_server()`) implies
    store="etcd". A port taken between probing and binding is retried on a fresh one.
    `command` replaces `wyvern` (e.g. tests/api/crashpoint.py's, which takes the same
    arguments).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(env or {})
    if etcd_endpoints is not None:
        store = "etcd"
        settings["WYVERN_ETCD_ENDPOINTS"] = json.dumps(list(etcd_endpoints))
    last: Exception | None = None
    for _ in range(attempts):
        port = free_port()
        full_env = process_env(
            {
                "WYVERN_RUN_DIR": str(run_dir),
                "WYVERN_STORE": store,
                "WYVERN_API_HOST": HOST,
                "WYVERN_API_PORT": str(port),
                "WYVERN_API_WORKERS": str(workers),
                **settings,
            }
        )
        cmd = [
            *(command or wyvern_command()),
            "api",
            "--access-log" if access_log else "--no-access-log",
        ]
        proc = spawn([*cmd, *args], run_dir / "api.out", full_env, name="wyvern api")
        try:
            wait_http(f"http://{HOST}:{port}/", proc, timeout)
        except RuntimeError as exc:
            last = exc
            proc.stop()
            if "address already in use" not in str(exc).lower():
                raise
            continue
        return ApiServer(proc, port, run_dir, full_env)
    raise RuntimeError(f"wyvern api did not start after {attempts} attempts: {last}")


@contextlib.contextmanager
def etcd_server(base_dir: Path | None = None, members: int = 1) -> Iterator[EtcdServer]:
    """A private etcd (wyvern.nb.etcd_server) on loopback, removed afterwards."""
    server = EtcdServer(base_dir, members, die_with_parent=not keep()).start()
    try:
        yield server
    finally:
        if keep():
            print(f"\nWYVERN_KEEP: etcd left running at {','.join(server.endpoints)}")
        else:
            server.stop()
