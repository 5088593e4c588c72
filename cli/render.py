"""Terminal output: a progress line while a job runs, a summary when it ends."""

from __future__ import annotations

import sys
import time

import click

from cli.api import Trainyard
from cli.stream import job_events
from shared.contract.queries import TracesQuery
from shared.contract.responses import (
    Job,
    Progress,
    StreamEnd,
    StreamLifecycle,
    StreamLog,
    StreamMetrics,
    StreamProgress,
    Trace,
)
from shared.models import FINAL_STATUSES

FINAL = tuple(str(s) for s in FINAL_STATUSES)


def progress_line(job: Job, loss: float | None, eta: float | None = None) -> str:
    """`[#####-----]  52%  step 120/230  epoch 2  loss 0.4211  ETA 0:12  running`."""
    prog = job.progress
    frac = min(max(prog.fraction or 0.0, 0.0), 1.0)
    width = 30
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    total = prog.total_steps or "?"
    loss_txt = f"  loss {loss:.4g}" if loss is not None else ""
    eta_txt = f"  ETA {int(eta) // 60}:{int(eta) % 60:02d}" if eta is not None else ""
    return (
        f"[{bar}] {frac * 100:5.1f}%  step {prog.step}/{total}  epoch {prog.epoch}"
        f"{loss_txt}{eta_txt}  {job.status}"
    )


class EtaClock:
    """Seconds left, from the steps done since watching began (the rate as seen here)."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def eta(self, job: Job, now: float) -> float | None:
        prog = job.progress
        if job.status != "running" or not prog.total_steps:
            return None
        if self._start is None:
            self._start = (now, prog.step)
            return None
        t0, s0 = self._start
        done = prog.step - s0
        if done <= 0 or now <= t0:
            return None
        left: float = (prog.total_steps - prog.step) * (now - t0) / done
        return max(0.0, left)


REDRAW_SECONDS = 0.5  # a progress line at most this often when not on a terminal


def watch(api: Trainyard, job_id: str) -> Job:
    """Follow the job's live stream until it ends: one progress line (redrawn on a
    terminal), and the job's events and log lines as they come; returns the final job."""
    tty = sys.stdout.isatty()
    job = api.job(job_id)
    out = Screen(tty)
    clock = EtaClock()
    loss: float | None = None
    for event in job_events(api.http, job_id):
        data = event.payload()
        if isinstance(data, StreamProgress):
            job = _progressed(job, data)
        elif isinstance(data, StreamMetrics):
            value = data.values.get("train/loss")
            loss = value if isinstance(value, float | int) else loss
        elif isinstance(data, StreamLog):
            out.note(f"{data.level.lower()}: {data.line}")
        elif isinstance(data, StreamLifecycle):
            out.note(f"{data.kind}: {data.message}")
        if isinstance(data, StreamProgress | StreamMetrics):
            out.progress(progress_line(job, loss, clock.eta(job, time.monotonic())))
        if isinstance(data, StreamEnd):
            break
    final = api.job(job_id)
    out.progress(progress_line(final, loss), force=True)
    out.done()
    return final


def _progressed(job: Job, data: StreamProgress) -> Job:
    total = data.total_steps
    progress = Progress(step=data.step, total_steps=total, epoch=data.epoch,
                        fraction=data.step / total if total else 0.0)  # fmt: skip
    return job.model_copy(update={"status": data.status, "progress": progress})


class Screen:
    """A progress line that notes print above: redrawn in place on a terminal, printed
    when it changed (at most every REDRAW_SECONDS) elsewhere."""

    def __init__(self, tty: bool) -> None:
        self.tty, self.line, self.said = tty, "", 0.0

    def progress(self, line: str, *, force: bool = False) -> None:
        if line == self.line:
            return
        if self.tty:
            click.echo("\r\x1b[K" + line, nl=False)
        elif force or time.monotonic() - self.said >= REDRAW_SECONDS:
            click.echo(line)
            self.said = time.monotonic()
        else:
            return
        self.line = line

    def note(self, text: str) -> None:
        if self.tty:
            click.echo("\r\x1b[K" + text)
            click.echo(self.line, nl=False)
        else:
            click.echo(text)

    def done(self) -> None:
        if self.tty:
            click.echo()


def summary_text(api: Trainyard, job: Job) -> str:
    """Final metrics and a per-layer gradient-norm table (last logged step)."""
    lines = [f"job {job.id}: {job.status}"]
    if job.error:
        lines.append(f"  error: {job.error}")
    summary = job.summary or {}
    metrics = summary.get("metrics") or {}
    if summary:
        lines.append(
            f"  steps {summary.get('steps')}  epochs {summary.get('epochs')}  "
            f"wall {summary.get('wall_s')} s  {summary.get('steps_per_s')} steps/s  "
            f"on {summary.get('device')}"
        )
        lines.append(f"  final loss       {summary.get('final_loss')}")
        for key in ("val_loss", "val_accuracy"):
            if key in metrics:
                lines.append(f"  {key:<16} {metrics[key]}")
        lines.append(
            f"  parameters       {summary.get('param_count')} "
            f"({summary.get('trainable_count')} trainable)"
        )
    rows = _last_step_grad_norms(api, job.id)
    if rows:
        lines.append(f"  gradient norms at step {rows[0].step}:")
        lines.append(f"    {'kind':<11} {'layer / parameter':<32} {'norm':>12}")
        for r in rows:
            lines.append(f"    {r.kind:<11} {r.layer:<32} {float(r.norm or 0.0):>12.6g}")
    return "\n".join(lines)


def _last_step_grad_norms(api: Trainyard, job_id: str) -> list[Trace]:
    last = api.job(job_id).progress.step
    if not last:
        return []
    # The last logged step is at most `every_n_steps` before the end; look back a little.
    query = TracesQuery(from_step=max(1, last - 1000), to_step=last)
    traces = api.traces(job_id, query).traces
    if not traces:
        return []
    top = max(t.step for t in traces)
    return [t for t in traces if t.step == top]
