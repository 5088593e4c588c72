"""Client commands on /api/v1/jobs: submit, watch, list, show, cancel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.api import checked
from cli.options import client_options, make_api
from cli.render import summary_text, watch
from cli.tables import number, table
from shared.contract.queries import JobListQuery
from shared.contract.requests import TrainJobRequest


@click.command("submit")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--priority", type=click.IntRange(0, 9), default=5, show_default=True,
    help="0 runs last, 9 first.",
)  # fmt: skip
@client_options
def submit_cmd(spec_file: Path, priority: int, url: str | None, token: str | None) -> None:
    """Submit a training job from a JSON spec file; prints the job id."""
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{spec_file}: not valid JSON ({exc})") from None
    # Checked here first: a typo is named before anything is sent.
    request = checked(TrainJobRequest, {"spec": spec, "priority": priority}, str(spec_file))
    click.echo(make_api(url, token).submit(request).id)


@click.command("watch")
@click.argument("job_id")
@client_options
def watch_cmd(job_id: str, url: str | None, token: str | None) -> None:
    """Show a progress bar until the job ends, then its summary."""
    api = make_api(url, token)
    final = watch(api, job_id)
    click.echo(summary_text(api, final))
    if final.status != "succeeded":
        sys.exit(1)


@click.command("jobs")
@click.option(
    "--status", default=None, help="queued, running, succeeded, failed, cancelled, pruned"
)
@click.option("--kind", type=click.Choice(["train", "infer"]), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@client_options
def jobs_cmd(status: str | None, kind: str | None, limit: int, url: str, token: str) -> None:
    """Your jobs, newest first."""
    query = checked(JobListQuery, {"status": status, "kind": kind, "limit": limit}, "option")
    rows = []
    for job in make_api(url, token).jobs(query).jobs:
        summary = job.summary or {}
        metrics = summary.get("metrics") or {}
        prog = job.progress
        step = f"{prog.step}/{prog.total_steps or '?'}" if job.kind == "train" else ""
        created = job.created_at.isoformat()[:19] if job.created_at else ""
        rows.append(
            [job.id, job.kind, job.status, step, number(summary.get("final_loss")),
             number(metrics.get("val_accuracy")), created]
        )  # fmt: skip
    header = ["id", "kind", "status", "step", "loss", "val_acc", "created (UTC)"]
    click.echo(table(rows, header))


@click.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The raw summary.")
@client_options
def show_cmd(job_id: str, as_json: bool, url: str, token: str) -> None:
    """A job's summary: status, timing, final and best metrics, the model."""
    api = make_api(url, token)
    if as_json:  # the answer as sent, every field of it
        raw = api.http.request("GET", f"/api/v1/jobs/{job_id}/summary").json()
        click.echo(json.dumps(raw, indent=2))
        return
    body = api.summary(job_id)
    job = body.job
    lines = [f"job {job.id} ({job.kind}): {job.status}"]
    if job.error:
        lines.append(f"  error: {job.error}")
    lines.append(
        f"  steps {number(body.steps)}  wall {number(body.wall_s)} s  "
        f"{number(body.steps_per_s)} steps/s  on {body.device or '-'}"
    )
    series = body.metrics.series
    if series:
        rows = [
            [f"{s['split']}/{s['name']}", s["points"], number(s["last"]["value"]),
             number(s["best"]["value"]) if s["best"] else "-",
             s["best"]["epoch"] if s["best"] else "-"]
            for s in series
        ]  # fmt: skip
        lines += ["", table(rows, ["metric", "points", "final", "best", "best epoch"])]
    model = body.model
    if model:
        lines += ["", model.module_tree, ""]
        rows = [
            [p.name, "x".join(map(str, p.shape)), p.numel, "yes" if p.trainable else "no"]
            for p in model.parameters
        ]
        lines.append(table(rows, ["parameter", "shape", "numel", "trainable"]))
        lines.append(
            f"{model.param_count:,} parameters ({model.trainable_count:,} trainable, "
            f"{model.frozen_count:,} frozen)"
        )
    click.echo("\n".join(lines))


@click.command("cancel")
@click.argument("job_id")
@client_options
def cancel_cmd(job_id: str, url: str, token: str) -> None:
    """Cancel a job (queued ones end at once, running ones at their next step)."""
    job = make_api(url, token).cancel(job_id)
    state = "cancel requested" if job.status == "running" else job.status
    click.echo(f"job {job.id}: {state}")


@click.command("preempt")
@click.argument("job_id")
@client_options
def preempt_cmd(job_id: str, url: str, token: str) -> None:
    """Checkpoint a running job and put it back in the queue; it resumes from there."""
    job = make_api(url, token).preempt(job_id)
    click.echo(f"job {job.id}: preempt requested")


COMMANDS = (submit_cmd, watch_cmd, jobs_cmd, show_cmd, cancel_cmd, preempt_cmd)
