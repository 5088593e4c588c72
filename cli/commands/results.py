"""Client commands on a job's results: /metrics, /traces and /plots."""

from __future__ import annotations

from pathlib import Path

import click

from cli.api import checked
from cli.client import ApiClient
from cli.options import client_options, make_api, make_client
from cli.tables import number, table, write_csv
from shared.contract.queries import MetricsQuery, TracesQuery


@click.command("metrics")
@click.argument("job_id")
@click.option("--name", default=None, help="e.g. loss, accuracy, lr")
@click.option("--split", default=None, help="train, val or test")
@click.option("--max-points", type=int, default=None, help="Thin each series (keeps spikes).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@client_options
def metrics_cmd(
    job_id: str, name: str | None, split: str | None, max_points: int | None, as_csv: bool,
    url: str, token: str,
) -> None:  # fmt: skip
    """A job's metric series."""
    query = checked(
        MetricsQuery, {"name": name, "split": split, "max_points": max_points}, "option"
    )
    body = make_api(url, token).metrics(job_id, query)
    rows = [[s.split, s.name, p.step, p.epoch, p.value] for s in body.series for p in s.points]
    header = ["split", "name", "step", "epoch", "value"]
    if as_csv:
        write_csv(header, rows)
    else:
        click.echo(table([[*r[:4], number(r[4])] for r in rows], header))


@click.command("traces")
@click.argument("job_id")
@click.option("--layer", default=None, help="Layer glob, e.g. 'fc*' or 'conv1.weight'.")
@click.option("--kind", default=None, help="forward_pre, forward, backward, param_grad or weights.")
@click.option("--at-step", type=int, default=None, help="Every layer at one step.")
@click.option("--stat", default=None, help="One statistic (norm, mean, std, ...).")
@click.option("--max-points", type=int, default=None)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@client_options
def traces_cmd(
    job_id: str, layer: str | None, kind: str | None, at_step: int | None, stat: str | None,
    max_points: int | None, as_csv: bool, url: str, token: str,
) -> None:  # fmt: skip
    """A job's per-layer hook statistics."""
    params = {"layer": layer, "kind": kind, "at_step": at_step, "stat": stat,
              "max_points": max_points}  # fmt: skip
    body = make_api(url, token).traces(job_id, checked(TracesQuery, params, "option"))
    columns = [stat] if stat else ["norm", "mean", "std", "min", "max", "zero_frac"]
    header = ["step", "kind", "layer", *columns]
    rows = [[t.step, t.kind, t.layer, *(getattr(t, c) for c in columns)] for t in body.traces]
    if as_csv:
        write_csv(header, rows)
    else:
        click.echo(table([[*r[:3], *map(number, r[3:])] for r in rows], header))


PLOTS = ("loss", "accuracy", "lr", "grad_flow", "zero_frac")


@click.command("plot")
@click.argument("job_id")
@click.option("--name", type=click.Choice(PLOTS), default="loss", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@client_options
def plot_cmd(job_id: str, name: str, output: Path | None, url: str, token: str) -> None:
    """Save one of a job's plots as PNG."""
    client: ApiClient = make_client(url, token)
    resp = client.request("GET", f"/api/v1/jobs/{job_id}/plots/{name}.png")
    path = output or Path(f"{job_id}-{name}.png")
    path.write_bytes(resp.content)
    click.echo(str(path))


COMMANDS = (metrics_cmd, traces_cmd, plot_cmd)
