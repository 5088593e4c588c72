"""`trainyard sweep create|list|show|watch|cancel`: hyperparameter sweeps over HTTP."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from cli.api import Trainyard, checked
from cli.options import client_options, make_api
from cli.tables import number, table
from shared.contract.queries import SweepListQuery
from shared.contract.requests import SweepRequest
from shared.contract.responses import Sweep


@click.group("sweep")
def sweep_group() -> None:
    """Hyperparameter sweeps: every trial is a training job (Optuna proposes them)."""


@sweep_group.command("create")
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_options
def create_cmd(sweep_file: Path, url: str | None, token: str | None) -> None:
    """Start a sweep from a JSON file (spec, space, method, metric, goal, ...); prints its id."""
    try:
        body = json.loads(sweep_file.read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{sweep_file}: not valid JSON ({exc})") from None
    request = checked(SweepRequest, body, str(sweep_file))
    click.echo(make_api(url, token).create_sweep(request).id)


@sweep_group.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@client_options
def list_cmd(limit: int, url: str | None, token: str | None) -> None:
    """Your sweeps, newest first."""
    query = checked(SweepListQuery, {"limit": limit}, "option")
    rows = [
        [s.id, s.name or "-", s.status, s.method, _done(s), s.metric,
         number(s.best.value) if s.best else "-"]
        for s in make_api(url, token).sweeps(query).sweeps
    ]  # fmt: skip
    click.echo(table(rows, ["id", "name", "status", "method", "trials", "metric", "best"]))


def _done(sweep: Sweep) -> str:
    ended = sum(n for state, n in sweep.trials_by_state.items() if state != "running")
    return f"{ended}/{sweep.max_trials}"


def sweep_text(sweep: Sweep) -> str:
    """The sweep's status line, its best trial and the trials table."""
    lines = [
        f"sweep {sweep.id} {sweep.name!r}: {sweep.status}  ({sweep.method}, {sweep.goal} "
        f"{sweep.metric}, {_done(sweep)} trials ended, {sweep.parallel} at once)"
    ]
    if sweep.error:
        lines.append(f"  error: {sweep.error}")
    if sweep.best is not None:
        lines.append(
            f"  best: trial {sweep.best.number} = {number(sweep.best.value)}  "
            f"job {sweep.best.job_id}  {json.dumps(sweep.best.params)}"
        )
    rows = [
        [t.number, t.state, number(t.value), json.dumps(t.params), t.job_id or "-",
         (t.stop_reason or "")[:80]]
        for t in sweep.trials or []
    ]  # fmt: skip
    if rows:
        lines += ["", table(rows, ["trial", "state", "value", "params", "job", "why"])]
    return "\n".join(lines)


@sweep_group.command("show")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="The raw answer.")
@client_options
def show_cmd(sweep_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """A sweep: status, best trial, and its trials (params, metric, state, stop reason)."""
    api = make_api(url, token)
    if as_json:
        click.echo(json.dumps(api.http.get_json(f"/api/v1/sweeps/{sweep_id}"), indent=2))
        return
    click.echo(sweep_text(api.sweep(sweep_id)))


@sweep_group.command("watch")
@click.argument("sweep_id")
@click.option("--every", type=float, default=2.0, show_default=True, help="Seconds between looks.")
@client_options
def watch_cmd(sweep_id: str, every: float, url: str | None, token: str | None) -> None:
    """A line per change until the sweep ends, then its table (exit 1 unless it succeeded)."""
    final = watch_sweep(make_api(url, token), sweep_id, every)
    click.echo(sweep_text(final))
    if final.status != "succeeded":
        sys.exit(1)


def watch_sweep(api: Trainyard, sweep_id: str, every: float) -> Sweep:
    """Poll until the sweep ends, echoing its counts whenever they change."""
    last = ""
    while True:
        sweep = api.sweep(sweep_id)
        counts = ", ".join(f"{n} {state}" for state, n in sweep.trials_by_state.items() if n)
        best = (
            f"; best {number(sweep.best.value)} (trial {sweep.best.number})" if sweep.best else ""
        )
        line = f"{sweep.status}: {counts or 'no trials yet'}{best}"
        if line != last:
            click.echo(line, err=True)
            last = line
        if sweep.status != "running":
            return sweep
        time.sleep(every)


@sweep_group.command("cancel")
@click.argument("sweep_id")
@client_options
def cancel_cmd(sweep_id: str, url: str | None, token: str | None) -> None:
    """Cancel a sweep: its running trials stop, no new one starts."""
    sweep = make_api(url, token).cancel_sweep(sweep_id)
    click.echo(f"sweep {sweep.id}: cancel requested")


COMMANDS = (sweep_group,)
