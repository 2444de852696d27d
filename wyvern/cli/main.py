"""The `wyvern` command: serve the API, run the all-in-one, show the configuration.

Settings come from wyvern.config (defaults < TOML file < WYVERN_* environment); options
given here win over all of them. They are applied by exporting the matching WYVERN_*
variable, so API worker processes and later components see exactly the same settings.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

import wyvern
from wyvern.cli.configdoc import markdown_table, to_toml
from wyvern.cli.logs import setup_logging
from wyvern.config import Settings, load_settings

LOG = logging.getLogger("wyvern.cli")
PID_FILE = "wyvern-up.pid"

app = typer.Typer(
    name="wyvern",
    help="Wyvern SDN controller: a Neutron v2.0 compatible networking API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(enum.StrEnum):
    toml = "toml"
    json = "json"
    markdown = "markdown"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $WYVERN_CONFIG, else <run_dir>/wyvern.toml).",
        exists=True,
        dir_okay=False,
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--run-dir", help="State directory (database, logs, pid file) [WYVERN_RUN_DIR]."),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Listen address [WYVERN_API_HOST].")]
PortOpt = Annotated[
    int | None, typer.Option("--port", min=1, max=65535, help="Listen port [WYVERN_API_PORT].")
]
AccessLogOpt = Annotated[
    bool, typer.Option("--access-log/--no-access-log", help="Log every HTTP request.")
]


@app.callback()
def main(config: ConfigOpt = None) -> None:
    """Wyvern SDN controller."""
    if config is not None:
        os.environ["WYVERN_CONFIG"] = str(config.resolve())


def apply_overrides(**overrides: Any) -> Settings:
    """Export every given option as WYVERN_<NAME>, then load the settings (or exit 2)."""
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        os.environ[f"WYVERN_{name.upper()}"] = str(value)
    try:
        return load_settings()
    except ValidationError as exc:
        typer.echo(f"wyvern: invalid configuration:\n{_errors(exc)}", err=True)
        raise typer.Exit(2) from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        typer.echo(f"wyvern: cannot read the configuration file: {exc}", err=True)
        raise typer.Exit(2) from None


def _errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        lines.append(f"  {where}: {err.get('msg')}")
    return "\n".join(lines)


@app.command()
def api(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Server processes [WYVERN_API_WORKERS].")
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="sqlite, etcd or memory [WYVERN_STORE].")
    ] = None,
    run_dir: RunDirOpt = None,
    access_log: AccessLogOpt = True,
) -> None:
    """Serve the Neutron API (foreground; SIGINT/SIGTERM stop it cleanly)."""
    from wyvern.server import api_log_file, serve_foreground

    settings = apply_overrides(
        run_dir=run_dir, api_host=host, api_port=port, api_workers=workers, store=store
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(settings.log_level, api_log_file(settings))
    LOG.info(
        "wyvern %s api on %s:%s (store %s, %s worker(s), run dir %s)",
        wyvern.__version__,
        settings.api_host,
        settings.api_port,
        settings.store,
        settings.api_workers,
        settings.run_dir,
    )
    code = serve_foreground(settings, access_log=access_log, workers=settings.api_workers)
    raise typer.Exit(code)


@app.command()
def up(
    host: HostOpt = None,
    port: PortOpt = None,
    run_dir: RunDirOpt = None,
    access_log: AccessLogOpt = True,
) -> None:
    """Run the all-in-one in the foreground until Ctrl-C or SIGTERM.

    Today: the API on the embedded store (SQLite under the run dir).
    """
    from wyvern.cli.allinone import components, run_until_signalled
    from wyvern.cli.pidfile import AlreadyRunning, PidFile

    settings = apply_overrides(run_dir=run_dir, api_host=host, api_port=port)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(settings.log_level)  # the console only, until we own the run dir
    pid_file = PidFile(settings.run_dir / PID_FILE)
    try:
        pid_file.acquire()
    except AlreadyRunning as exc:
        LOG.error("%s", exc)
        raise typer.Exit(1) from None
    log_file = setup_logging(settings.log_level, settings.run_dir / "logs" / "wyvern-up.log")
    try:
        LOG.info(
            "wyvern %s up: run dir %s, store %s, log %s, pid %s",
            wyvern.__version__,
            settings.run_dir,
            settings.store if settings.store != "sqlite" else settings.database_path,
            log_file,
            os.getpid(),
        )
        code = run_until_signalled(components(settings, access_log=access_log))
    finally:
        pid_file.release()
    LOG.info("wyvern up: stopped (exit code %s)", code)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"wyvern {wyvern.__version__}")


@app.command()
def config(
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="toml/json: the effective settings; markdown: every option with its "
            "environment variable, default and meaning.",
        ),
    ] = Format.toml,
) -> None:
    """Print the effective settings (defaults < TOML file < WYVERN_* environment)."""
    if fmt is Format.markdown:
        typer.echo(markdown_table(), nl=False)
        return
    settings = apply_overrides()
    data = settings.model_dump(mode="json")
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        typer.echo(to_toml(data), nl=False)


@app.command()
def pipeline() -> None:
    """Print the OpenFlow pipeline: stage name <-> table number, and the register map."""
    from wyvern.southbound import pipeline as stages
    from wyvern.southbound import registers

    typer.echo(f"{'table':>5}  {'stage':22} {'direction':9} {'owner':16} next stages")
    for row in stages.describe():
        typer.echo(
            f"{row.table:>5}  {row.stage:22} {row.direction:9} {row.owner:16} {row.next or '-'}"
        )
    typer.echo("")
    typer.echo(f"{'register':20} {'field':18} meaning")
    for reg in registers.describe():
        typer.echo(f"{reg.name:20} {reg.subfield:18} {reg.description}")


def run() -> None:
    """Entry point for `python -m wyvern.cli`."""
    app(prog_name="wyvern")
