"""Commands that run or administer the service on this machine: db, serve, worker, sweep,
token. They read the settings (TRAINYARD_*) and talk to the database and broker directly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from shared.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option(
    "--wait", type=float, default=0.0, show_default=True,
    help="Seconds to keep trying while the database does not answer yet (a cluster's start).",
)  # fmt: skip
def db_upgrade(revision: str, wait: float) -> None:
    """Apply Alembic migrations to the configured database."""
    from cli.migrate import upgrade
    from shared.db_retry import DatabaseGone, retry_database

    settings = get_settings()
    shown = settings.shown_database_url()
    try:  # the workers' outage retry: only "could not reach it" is tried again
        retry_database(
            lambda: upgrade(settings.resolved_database_url(), revision),
            what=f"migrating {shown}", window_seconds=wait,
        )  # fmt: skip
    except DatabaseGone:
        waited = f" within {wait:g} s (--wait)" if wait else ""
        raise click.ClickException(f"database {shown} did not answer{waited}") from None
    click.echo(f"database at {revision}: {shown}", err=True)


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
@click.option(
    "--gpu/--cpu", "gpu", default=None,
    help="A GPU worker (train + train.gpu; refuses to start without CUDA) or a CPU one "
    "(train + train.cpu). Default: a GPU worker when nvidia-smi lists a GPU.",
)  # fmt: skip
def worker(
    queues: str | None, pool: str, concurrency: int, loglevel: str, gpu: bool | None
) -> None:
    """Run a Celery worker (replaces this process)."""
    from cli.serve import cuda_available, default_queues, worker_command

    if gpu:
        ok, said = cuda_available()
        if not ok:
            raise click.ClickException(
                f"a GPU worker needs CUDA, and torch sees none ({said}). Is the NVIDIA "
                "container toolkit installed, the GPU given to this container (device_ids), "
                "and the driver new enough for this torch build's CUDA (CUDA 13: driver "
                "580 or later)? Run a CPU worker with --cpu instead."
            )
        click.echo(f"GPU worker: {said}", err=True)
    names = queues.split(",") if queues else default_queues(gpu)
    cmd = worker_command(names, concurrency, loglevel, pool)
    os.execv(cmd[0], cmd)


@click.command()
@click.option("--host", default=None, help="Bind address (default TRAINYARD_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default TRAINYARD_API_PORT, 8000).")
@click.option("--workers", "-w", type=int, default=2, show_default=True)
def api(host: str | None, port: int | None, workers: int) -> None:
    """Run the API under gunicorn, as `serve` does (replaces this process)."""
    from cli.serve import api_command, api_environment

    settings = get_settings()
    cmd = api_command(
        host or settings.api_host,
        port or settings.api_port,
        workers,
        settings.resolved_api_worker_class(),
    )
    os.execve(cmd[0], cmd, api_environment(os.environ))


@click.group()
def health() -> None:
    """Healthchecks for containers: exit 0 when healthy, 1 with the reason otherwise."""


@health.command("heartbeat")
@click.option("--max-age", type=float, default=60.0, show_default=True,
              help="Seconds since the last heartbeat.")  # fmt: skip
def health_heartbeat(max_age: float) -> None:
    """The heartbeat file (TRAINYARD_HEARTBEAT_FILE) of this worker or sweeper is fresh."""
    from shared.presence import heartbeat_age

    path = get_settings().heartbeat_file
    if path is None:
        raise click.ClickException("TRAINYARD_HEARTBEAT_FILE is not set")
    age = heartbeat_age(path)
    if age is None:
        raise click.ClickException(f"no heartbeat yet at {path}")
    if age > max_age:
        raise click.ClickException(f"last heartbeat {age:.0f} s ago (over {max_age:.0f} s)")


@health.command("api")
@click.option("--url", default=None, help="Base URL (default http://127.0.0.1:<port>).")
def health_api(url: str | None) -> None:
    """GET /readyz answers 200 (database, broker and disk are fine)."""
    import requests

    base = url or f"http://127.0.0.1:{get_settings().api_port}"
    try:
        answer = requests.get(f"{base}/readyz", timeout=5)
    except requests.RequestException as exc:
        raise click.ClickException(f"{base}/readyz: {exc}") from None
    if answer.status_code != 200:
        raise click.ClickException(f"{base}/readyz: {answer.status_code} {answer.text[:200]}")


@click.command()
@click.option(
    "--every", type=float, default=None, help="Seconds between passes [TRAINYARD_SWEEP_SECONDS]."
)
def sweeper(every: float | None) -> None:
    """Re-send lost job messages, fail abandoned jobs and wake idle sweep controllers,
    forever (`trainyard sweep ...` manages hyperparameter sweeps)."""
    import logging
    import threading

    from shared.db import make_engine, make_session_factory
    from shared.queues import make_celery
    from shared.sweeper import run_forever

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.resolved_database_url()))
    stop = threading.Event()
    logging.getLogger(__name__).info(
        "sweeper: every %ss on %s", every or settings.sweep_seconds, settings.shown_database_url()
    )
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
@click.option("--expires", default=None, help="Lifetime such as 30d, 12h, 2w (default: none).")
@click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(["read", "submit"]),
    help="What it may do (repeat; default: read and submit).",
)  # fmt: skip
@click.option("--admin", is_flag=True, help="May also list and revoke every token (API).")
def token_create(
    name: str, owner: str | None, expires: str | None, scopes: tuple[str, ...], admin: bool
) -> None:
    """Create a token and print it alone on stdout (it is stored hashed)."""
    from shared.tokens import DEFAULT_SCOPES, create_token, parse_duration

    with _token_session() as session:  # a bad --expires is a one-line error too
        lifetime = parse_duration(expires) if expires else None
        plaintext, _ = create_token(
            session=session, name=name, owner=owner or name, is_admin=admin,
            scopes=scopes or DEFAULT_SCOPES, expires_in=lifetime,
        )  # fmt: skip
    click.echo(plaintext)


@token.command("list")
@click.option("--owner", default=None, help="One owner's tokens only.")
def token_list(owner: str | None) -> None:
    """Every token: id, prefix, name, owner, scopes, state, expiry, last use (no secrets)."""
    from shared.tokens import is_expired, list_tokens

    with _token_session() as session:
        for row in list_tokens(session=session, owner=owner):
            state = "revoked" if row.revoked_at else ("expired" if is_expired(row) else "live")
            scopes = row.scopes + (",admin" if row.is_admin else "")
            expires = row.expires_at.isoformat(timespec="seconds") if row.expires_at else "-"
            used = row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else "-"
            click.echo(f"{row.id}\t{row.prefix}\t{row.name}\t{row.owner}\t{scopes}\t{state}"
                       f"\texpires {expires}\tused {used}")  # fmt: skip


@token.command("revoke")
@click.argument("ref")
def token_revoke(ref: str) -> None:
    """Revoke a token by id or prefix: its next request is a 401."""
    from shared.tokens import get_token, revoke_token

    with _token_session() as session:
        row = get_token(session=session, ref=ref)
        done = revoke_token(session=session, token=row, by="cli")
    _announce_revocation()
    click.echo(f"token {ref} {'revoked' if done else 'was already revoked'}", err=True)


@token.command("rotate")
@click.argument("ref")
def token_rotate(ref: str) -> None:
    """Revoke a token and print its replacement (same name, owner, scopes, lifetime)."""
    from shared.tokens import get_token, rotate_token

    with _token_session() as session:
        plaintext, _ = rotate_token(session=session, token=get_token(session=session, ref=ref),
                                    by="cli")  # fmt: skip
    _announce_revocation()
    click.echo(plaintext)


def _announce_revocation() -> None:
    """Tell the API processes (after the commit) that a token was revoked."""
    from shared.config import get_settings
    from shared.revocations import Revocations

    if not Revocations(get_settings().resolved_broker_url()).announce():
        click.echo(
            "warning: could not tell the API processes over Redis; one that checked this "
            "token may accept it for up to TRAINYARD_TOKEN_CACHE_SECONDS more",
            err=True,
        )


@contextmanager
def _token_session() -> Iterator[Session]:
    """A committed transaction on the configured database; errors as one line, exit 1."""
    from shared.db import make_engine, make_session_factory, session_scope
    from shared.errors import TrainyardError

    engine = make_engine(get_settings().resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    except TrainyardError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()


COMMANDS = (db, serve, api, worker, sweeper, health, token)
