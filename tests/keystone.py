"""A real, private Keystone for tests and development (the `keystone` package from PyPI).

    ks = KeystoneServer(tmp_dir).start()       # SQLite, gunicorn, a free loopback port
    a = ks.add_project("a"); ks.add_user("alice", "pw", a, ["member"])
    ks.register_network("http://127.0.0.1:9696/")   # the catalog's `network` endpoint
    ks.clouds_yaml(path, {"alice": ("alice", "pw", "a")})   # for openstack / openstacksdk

Bootstrapped as a deployment is (`keystone-manage db_sync`, `fernet_setup`,
`credential_setup`, `bootstrap`: admin user, project and role, the member and reader
roles, region RegionOne, the identity endpoint). Everything lives in its directory; the
port is a free one, so xdist workers each run their own. `stop()`/`start()` keep the
database: a test can take Keystone away and bring it back.

`python -m tests.keystone DIR` (scripts/keystone-dev) runs one in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

from tests.harness import HOST, Proc, free_port, keep, process_env, spawn, wait_http

BIN = Path(sys.executable).parent
REGION = "RegionOne"
ROLES = ("admin", "member", "reader")
WSGI_ENTRY = """\
import sys

sys.argv = sys.argv[:1]  # oslo.config parses sys.argv: hide gunicorn's from it
from keystone.server.wsgi import initialize_public_application

application = initialize_public_application()
"""


class KeystoneServer:
    """One Keystone: SQLite database, fernet keys and logs in `base`."""

    # gunicorn threads. Concurrent writers on SQLite fail with "database is locked"
    # (a 500): a client that creates projects and users in parallel (Tempest) wants 1.
    threads = 8

    def __init__(
        self, base: Path, port: int | None = None, admin_password: str | None = None
    ) -> None:
        self.base = base.resolve()
        self.port = port or free_port()
        self.admin_password = admin_password or secrets.token_hex(8)
        self.proc: Proc | None = None
        self._admin: ks_client.Client | None = None

    @property
    def url(self) -> str:
        """The identity endpoint (auth_url)."""
        return f"http://{HOST}:{self.port}/v3"

    @property
    def conf(self) -> Path:
        return self.base / "keystone.conf"

    def _manage(self, *args: str) -> None:
        cmd = [str(BIN / "keystone-manage"), "--config-file", str(self.conf), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.base)
        if out.returncode != 0:
            raise RuntimeError(f"keystone-manage {args[0]} failed:\n{out.stdout}{out.stderr}")

    def bootstrap(self) -> None:
        """A new deployment's steps, as a deployment guide has them."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                [DEFAULT]
                log_file = {self.base / "keystone.log"}
                [database]
                connection = sqlite:///{self.base / "keystone.db"}
                [fernet_tokens]
                key_repository = {self.base / "fernet-keys"}
                [credential]
                key_repository = {self.base / "credential-keys"}
                [identity]
                # the fewest bcrypt rounds: password checks are fast (tests only)
                password_hash_rounds = 4
                """
            )
        )
        (self.base / "keystone_wsgi.py").write_text(WSGI_ENTRY)
        self._manage("db_sync")
        user = ["--keystone-user", "root", "--keystone-group", "root"]
        if os.getuid() != 0:
            import grp
            import pwd

            user = [
                "--keystone-user",
                pwd.getpwuid(os.getuid()).pw_name,
                "--keystone-group",
                grp.getgrgid(os.getgid()).gr_name,
            ]
        self._manage("fernet_setup", *user)
        self._manage("credential_setup", *user)
        self._manage(
            "bootstrap",
            "--bootstrap-password",
            self.admin_password,
            "--bootstrap-admin-url",
            self.url,
            "--bootstrap-internal-url",
            self.url,
            "--bootstrap-public-url",
            self.url,
            "--bootstrap-region-id",
            REGION,
        )

    def start(self, timeout: float = 60.0) -> KeystoneServer:
        """Bootstrap on first start, then serve under gunicorn (threads, one worker)."""
        if not self.conf.exists():
            self.bootstrap()
        args = [
            str(BIN / "gunicorn"),
            "--chdir",
            str(self.base),
            "--bind",
            f"{HOST}:{self.port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(self.threads),
            "--timeout",
            "120",
            "keystone_wsgi:application",
        ]
        env = process_env({"OS_KEYSTONE_CONFIG_DIR": str(self.base)})
        self.proc = spawn(args, self.base / "gunicorn.log", env, name="keystone")
        wait_http(self.url, self.proc, timeout)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> KeystoneServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if keep():
            print(f"\nWYVERN_KEEP: Keystone left running at {self.url} (dir {self.base})")
            return
        self.stop()

    # ---- identity objects -------------------------------------------------------------
    def session(self, user: str, password: str, project: str) -> ks_session.Session:
        auth = v3.Password(
            auth_url=self.url,
            username=user,
            password=password,
            project_name=project,
            user_domain_id="default",
            project_domain_id="default",
        )
        return ks_session.Session(auth=auth)

    @property
    def admin(self) -> ks_client.Client:
        if self._admin is None:
            sess = self.session("admin", self.admin_password, "admin")
            self._admin = ks_client.Client(session=sess, interface="public")
        return self._admin

    def add_project(self, name: str) -> str:
        """A project in the Default domain; returns its id."""
        return str(self.admin.projects.create(name=name, domain="default").id)

    def add_user(
        self, name: str, password: str, project: str, roles: Sequence[str] = ("member",)
    ) -> str:
        """A user with `roles` on the project (id or name); returns the user's id."""
        project_id = self._project_id(project)
        user = self.admin.users.create(name=name, password=password, domain="default")
        for role in roles:
            self.admin.roles.grant(self._role_id(role), user=user.id, project=project_id)
        return str(user.id)

    def _project_id(self, project: str) -> str:
        for p in self.admin.projects.list():
            if project in (p.id, p.name):
                return str(p.id)
        raise KeyError(project)

    def _role_id(self, role: str) -> str:
        for r in self.admin.roles.list():
            if r.name == role:
                return str(r.id)
        return str(self.admin.roles.create(name=role).id)

    def register_network(self, url: str) -> None:
        """The catalog's `network` service (neutron) with public/internal/admin endpoints,
        replacing any earlier one (one Keystone serves a worker's test modules in turn)."""
        for old in self.admin.services.list(type="network"):
            self.admin.services.delete(old)
        svc = self.admin.services.create(name="neutron", type="network")
        for interface in ("public", "internal", "admin"):
            self.admin.endpoints.create(svc, url, interface=interface, region=REGION)

    def service_user(self, name: str = "neutron", password: str | None = None) -> dict[str, str]:
        """A service user with admin and service roles in project `service`, as a
        deployment gives neutron-server; returns its [keystone_authtoken] options."""
        password = password or secrets.token_hex(8)
        try:
            self._project_id("service")
        except KeyError:
            self.add_project("service")
        self.add_user(name, password, "service", ["admin", "service"])
        return {
            "www_authenticate_uri": self.url,
            "auth_url": self.url,
            "auth_type": "password",
            "username": name,
            "password": password,
            "project_name": "service",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
            "region_name": REGION,
            "interface": "public",
        }

    def clouds_yaml(self, path: Path, clouds: Mapping[str, tuple[str, str, str]]) -> Path:
        """A clouds.yaml with password auth: {cloud: (user, password, project)}."""
        data: dict[str, Any] = {"clouds": {}}
        for cloud, (user, password, project) in clouds.items():
            data["clouds"][cloud] = {
                "auth": {
                    "auth_url": self.url,
                    "username": user,
                    "password": password,
                    "project_name": project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": REGION,
                "identity_api_version": 3,
            }
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def authtoken_env(options: Mapping[str, str]) -> dict[str, str]:
    """[keystone_authtoken] options as the WYVERN_* environment of a `wyvern` process."""
    env = {"WYVERN_AUTH_STRATEGY": "keystone"}
    for key, value in options.items():
        env[f"WYVERN_KEYSTONE_AUTHTOKEN__{key.upper()}"] = value
    return env


@contextlib.contextmanager
def running(base: Path) -> Iterator[KeystoneServer]:
    server = KeystoneServer(base).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """scripts/keystone-dev: a bootstrapped Keystone in the foreground, for development."""
    parser = argparse.ArgumentParser(prog="keystone-dev", description=main.__doc__)
    parser.add_argument("dir", type=Path, help="its state (created and bootstrapped once)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--network-url", default="http://127.0.0.1:9696/")
    parser.add_argument("--password", default="secret", help="of every user it creates")
    args = parser.parse_args(argv)
    args.dir = args.dir.resolve()
    fresh = not (args.dir / "keystone.conf").exists()
    server = KeystoneServer(args.dir, args.port, admin_password=args.password)
    server.start()
    ready = args.dir / "wyvern.toml"
    if fresh:
        demo = server.add_project("demo")
        server.add_user("demo", args.password, demo, ["member"])
        server.register_network(args.network_url)
        opts = server.service_user("wyvern", args.password)
        lines = ['auth_strategy = "keystone"', "", "[keystone_authtoken]"]
        lines += [f'{k} = "{v}"' for k, v in opts.items()]
        ready.write_text("\n".join(lines) + "\n")
        server.clouds_yaml(
            args.dir / "clouds.yaml",
            {
                "wyvern-admin": ("admin", args.password, "admin"),
                "wyvern-demo": ("demo", args.password, "demo"),
            },
        )
    print(f"Keystone at {server.url}", flush=True)
    print(f"Wyvern settings (WYVERN_CONFIG): {ready}", flush=True)
    print(f"clouds.yaml (OS_CLIENT_CONFIG_FILE): {args.dir / 'clouds.yaml'}", flush=True)
    assert server.proc is not None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop Keystone on the way out
    try:
        while server.proc.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
