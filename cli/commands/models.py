"""Client commands on /api/v1/models: predictions from a trained job's model."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click

from cli.api import checked
from cli.options import client_options, make_api
from cli.tables import number, table
from shared.contract.requests import PredictRequest
from shared.contract.responses import Job

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
    api = make_api(url, token)
    request = checked(PredictRequest, {"inputs": read_inputs(inputs), "checkpoint": checkpoint})
    prediction = api.predict(job_id, request)
    if isinstance(prediction, Job):  # 202: not answered within the wait
        raise click.ClickException(
            f"still {prediction.status} after the wait: "
            f"poll {api.http.base_url}{prediction.links.self}"
        )
    answer = prediction.model_dump(mode="json")
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
            rows.append([label, " ".join(number(v) for v in out["output"]), ""])
    header = ["input", "predicted class", "probability"]
    if answer["task"] != "classification":
        header = ["input", "output", ""]
    click.echo(table(rows, header))


COMMANDS = (predict_cmd,)
