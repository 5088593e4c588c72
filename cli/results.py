"""Commands that read results: jobs, show, metrics, traces, predict, download, cancel, plot."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from cli.client import ApiClient
from cli.options import client_options, make_client

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _table(rows: list[list[Any]], header: list[str]) -> str:
    """Left-aligned text columns."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))


@click.command("jobs")
@click.option("--status", default=None, help="queued, running, succeeded, failed, cancelled")
@click.option("--kind", type=click.Choice(["train", "infer"]), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@client_options
def jobs_cmd(status: str | None, kind: str | None, limit: int, url: str, token: str) -> None:
    """Your jobs, newest first."""
    params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit}.items() if v}
    listed = make_client(url, token).get_json("/api/v1/jobs", **params)["jobs"]
    rows = []
    for job in listed:
        summary = job.get("summary") or {}
        metrics = summary.get("metrics") or {}
        prog = job["progress"]
        step = f"{prog['step']}/{prog['total_steps'] or '?'}" if job["kind"] == "train" else ""
        rows.append(
            [job["id"], job["kind"], job["status"], step,
             _number(summary.get("final_loss")), _number(metrics.get("val_accuracy")),
             (job["created_at"] or "")[:19]]
        )  # fmt: skip
    header = ["id", "kind", "status", "step", "loss", "val_acc", "created (UTC)"]
    click.echo(_table(rows, header))


@click.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The raw summary.")
@client_options
def show_cmd(job_id: str, as_json: bool, url: str, token: str) -> None:
    """A job's summary: status, timing, final and best metrics, the model."""
    body = make_client(url, token).get_json(f"/api/v1/jobs/{job_id}/summary")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    job = body["job"]
    lines = [f"job {job['id']} ({job['kind']}): {job['status']}"]
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    lines.append(
        f"  steps {_number(body['steps'])}  wall {_number(body['wall_s'])} s  "
        f"{_number(body['steps_per_s'])} steps/s  on {body['device'] or '-'}"
    )
    series = body["metrics"]["series"]
    if series:
        rows = [
            [f"{s['split']}/{s['name']}", s["points"], _number(s["last"]["value"]),
             _number(s["best"]["value"]) if s["best"] else "-",
             s["best"]["epoch"] if s["best"] else "-"]
            for s in series
        ]  # fmt: skip
        lines += ["", _table(rows, ["metric", "points", "final", "best", "best epoch"])]
    model = body.get("model")
    if model:
        lines += ["", model["module_tree"], ""]
        rows = [
            [
                p["name"],
                "x".join(map(str, p["shape"])),
                p["numel"],
                "yes" if p["trainable"] else "no",
            ]
            for p in model["parameters"]
        ]
        lines.append(_table(rows, ["parameter", "shape", "numel", "trainable"]))
        lines.append(
            f"{model['param_count']:,} parameters ({model['trainable_count']:,} trainable, "
            f"{model['frozen_count']:,} frozen)"
        )
    click.echo("\n".join(lines))


def _write_csv(header: list[str], rows: list[list[Any]]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(header)
    writer.writerows(rows)


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
    params = {"name": name, "split": split, "max_points": max_points}
    body = make_client(url, token).get_json(
        f"/api/v1/jobs/{job_id}/metrics", **{k: v for k, v in params.items() if v is not None}
    )
    rows = [
        [s["split"], s["name"], p["step"], p["epoch"], p["value"]]
        for s in body["series"]
        for p in s["points"]
    ]
    header = ["split", "name", "step", "epoch", "value"]
    if as_csv:
        _write_csv(header, rows)
    else:
        click.echo(_table([[*r[:4], _number(r[4])] for r in rows], header))


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
    body = make_client(url, token).get_json(
        f"/api/v1/jobs/{job_id}/traces", **{k: v for k, v in params.items() if v is not None}
    )
    columns = [stat] if stat else ["norm", "mean", "std", "min", "max", "zero_frac"]
    header = ["step", "kind", "layer", *columns]
    rows = [
        [t["step"], t["kind"], t["layer"], *(t.get(c) for c in columns)] for t in body["traces"]
    ]
    if as_csv:
        _write_csv(header, rows)
    else:
        click.echo(_table([[*r[:3], *map(_number, r[3:])] for r in rows], header))


def read_inputs(paths: tuple[Path, ...]) -> Any:
    """Image files become base64 strings; one .json file is sent as it is."""
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return [base64.b64encode(p.read_bytes()).decode() for p in paths]
    if len(paths) == 1 and paths[0].suffix.lower() == ".json":
        try:
            return json.loads(paths[0].read_text())
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{paths[0]}: not valid JSON ({exc})") from None
    raise click.ClickException("give one .json file of inputs, or PNG / JPEG images")


@click.command("predict")
@click.argument("job_id")
@click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--checkpoint", default="final", show_default=True, help="final, best, latest or an id."
)
@click.option("--json", "as_json", is_flag=True, help="The raw answer (logits, probabilities).")
@client_options
def predict_cmd(
    job_id: str, inputs: tuple[Path, ...], checkpoint: str, as_json: bool, url: str, token: str
) -> None:
    """Predict with a trained job's model: a .json of samples, or image files."""
    client = make_client(url, token)
    body = {"inputs": read_inputs(inputs), "checkpoint": checkpoint}
    resp = client.request("POST", f"/api/v1/models/{job_id}/predict", json=body)
    answer = resp.json()
    if resp.status_code == 202:
        raise click.ClickException(
            f"still {answer['status']} after the wait: "
            f"poll {client.base_url}/api/v1/jobs/{answer['id']}"
        )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    names = [p.name for p in inputs] if len(inputs) == len(answer["outputs"]) else None
    rows = []
    for i, out in enumerate(answer["outputs"]):
        label = names[i] if names else str(i)
        if answer["task"] == "classification":
            rows.append([label, out["predicted_class"], f"{max(out['probabilities']):.4f}"])
        else:
            rows.append([label, " ".join(_number(v) for v in out["output"]), ""])
    header = ["input", "predicted class", "probability"]
    if answer["task"] != "classification":
        header = ["input", "output", ""]
    click.echo(_table(rows, header))


def verified(content: bytes, expected_sha256: str) -> bytes:
    """`content` if its sha256 is the one the API stored, else an error (nothing is written)."""
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected_sha256:
        raise click.ClickException(
            f"sha256 mismatch: got {actual}, the checkpoint's is {expected_sha256}; not saved"
        )
    return content


@click.command("download")
@click.argument("job_id")
@click.option(
    "--checkpoint", default="final", show_default=True, help="final, best, latest or an id."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@client_options
def download_cmd(job_id: str, checkpoint: str, output: Path | None, url: str, token: str) -> None:
    """Save a checkpoint's state_dict as safetensors, checked against its sha256."""
    client = make_client(url, token)
    resp = client.request("GET", f"/api/v1/jobs/{job_id}/checkpoints/{checkpoint}/state_dict")
    content = verified(resp.content, resp.headers["X-Checkpoint-Sha256"])
    name = resp.headers.get("Content-Disposition", "").partition('filename="')[2].rstrip('"')
    # Only the file name: a server's "../x" must not choose where we write.
    path = output or Path(Path(name).name or f"{job_id}.safetensors")
    path.write_bytes(content)
    click.echo(
        f"{path}  {len(content):,} bytes  sha256 {resp.headers['X-Checkpoint-Sha256']} (verified)"
    )


@click.command("cancel")
@click.argument("job_id")
@client_options
def cancel_cmd(job_id: str, url: str, token: str) -> None:
    """Cancel a job (queued ones end at once, running ones at their next step)."""
    job = make_client(url, token).post_json(f"/api/v1/jobs/{job_id}/cancel", {})
    state = "cancel requested" if job["status"] == "running" else job["status"]
    click.echo(f"job {job['id']}: {state}")


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


COMMANDS = (jobs_cmd, show_cmd, metrics_cmd, traces_cmd, predict_cmd, download_cmd, cancel_cmd,
            plot_cmd)  # fmt: skip
