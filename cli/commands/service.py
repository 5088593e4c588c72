"""Commands that run or administer the service on this machine: db, serve, worker, sweep,
token. They read the settings (TRAINYARD_*) and talk to the database and broker directly."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from shared.config import Settings, get_settings


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations to the configured database."""
    from cli.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url(), revision)
    click.echo(f"database at {revision}: {settings.shown_database_url()}", err=True)


@click.command()
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


@click.command()
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


@click.command()
@click.option(
    "--every", type=float, default=None, help="Seconds between passes [TRAINYARD_SWEEP_SECONDS]."
)
def sweep(every: float | None) -> None:
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
            every_seconds=every if every is not None else settings.sweep_seconds,
            stop=stop,
        )
    except KeyboardInterrupt:
        stop.set()


@click.group()
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


COMMANDS = (db, serve, worker, sweep, token)
