"""`trainyard` command-line entry point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cli.options import client_options, make_client
from cli.render import summary_text, watch
from cli.results import COMMANDS
from shared.config import Settings, get_settings


@click.group()
def main() -> None:
    """Trainyard: train PyTorch models as jobs over HTTP."""


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations to the configured database."""
    from cli.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url(), revision)
    click.echo(f"database at {revision}: {settings.resolved_database_url()}", err=True)


@main.command()
@click.option("--host", default=None, help="Bind address (default TRAINYARD_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default TRAINYARD_API_PORT, 8000).")
@click.option("--demo/--no-demo", default=False, help="Submit the LeNet-on-digits demo job.")
@click.option("--exit-after-demo", is_flag=True, help="Stop once the demo job has ended.")
@click.option("--api-workers", type=int, default=2, show_default=True)
def serve(
    host: str | None, port: int | None, demo: bool, exit_after_demo: bool, api_workers: int
) -> None:
    """Migrate, then run the API and a worker on this machine until Ctrl-C."""
    from cli.migrate import upgrade
    from cli.serve import run_serve

    settings = get_settings()
    updates: dict[str, Any] = {}
    if host:
        updates["api_host"] = host
    if port:
        updates["api_port"] = port
    settings = Settings(**{**settings.model_dump(), **updates})
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url(), "head")
    sys.exit(
        run_serve(settings, demo=demo, exit_after_demo=exit_after_demo, api_workers=api_workers)
    )


@main.command()
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: by GPU).")
@click.option(
    "--pool", "-P", type=click.Choice(["solo", "prefork", "threads"]), default="solo",
    show_default=True, help="solo: train in this process (one worker per GPU).",
)  # fmt: skip
@click.option("--concurrency", "-c", type=int, default=1, show_default=True)
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(queues: str | None, pool: str, concurrency: int, loglevel: str) -> None:
    """Run a Celery worker (replaces this process)."""
    from cli.serve import default_queues, worker_command

    names = queues.split(",") if queues else default_queues()
    cmd = worker_command(names, concurrency, loglevel, pool)
    os.execv(cmd[0], cmd)


@main.command()
@click.option("--every", type=float, default=30.0, show_default=True, help="Seconds between.")
def sweep(every: float) -> None:
    """Re-send lost job messages and fail abandoned jobs, forever."""
    import threading

    from shared.db import make_engine, make_session_factory
    from shared.queues import make_celery
    from shared.sweeper import run_forever

    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.resolved_database_url()))
    stop = threading.Event()
    try:
        run_forever(
            sessions=sessions,
            celery=make_celery(settings),
            settings=settings,
            every_seconds=every,
            stop=stop,
        )
    except KeyboardInterrupt:
        stop.set()


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("name")
@click.option("--owner", default=None, help="Owner of the token's jobs (default: NAME).")
def token_create(name: str, owner: str | None) -> None:
    """Create a token and print it alone on stdout (it is stored hashed)."""
    from shared.db import make_engine, make_session_factory, session_scope
    from shared.tokens import create_token

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url())
    with session_scope(make_session_factory(engine)) as session:
        plaintext, _ = create_token(session=session, name=name, owner=owner or name)
    engine.dispose()
    click.echo(plaintext)


@main.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_options
def submit(spec_file: Path, url: str | None, token: str | None) -> None:
    """Submit a training job from a JSON spec file; prints the job id."""
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{spec_file}: not valid JSON ({exc})") from None
    body = {"kind": "train", "spec": spec}
    job = make_client(url, token).post_json("/api/v1/jobs", body)
    click.echo(job["id"])


@main.command("watch")
@click.argument("job_id")
@client_options
def watch_cmd(job_id: str, url: str | None, token: str | None) -> None:
    """Show a progress bar until the job ends, then its summary."""
    client = make_client(url, token)
    final = watch(client, job_id)
    click.echo(summary_text(client, final))
    if final["status"] != "succeeded":
        sys.exit(1)


for command in COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
