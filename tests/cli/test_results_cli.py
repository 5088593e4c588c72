"""The result commands against the live API: jobs, show, metrics, traces, predict,
download, cancel, plot; and the pieces they are made of."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from cli.commands.checkpoints import verified
from cli.main import main
from cli.render import EtaClock, progress_line
from shared.contract.responses import Job, Progress
from shared.tensors import bytes_to_state_dict
from tests.live import LiveService

SPEC = {
    "model": {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 16},
            {"type": "ReLU"},
            {"type": "Linear", "name": "fc2", "in_features": 16, "out_features": 10},
        ]
    },
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "Adam", "lr": 0.01}},
    "hooks": {"every_n_steps": 5, "kinds": ["forward", "backward", "param_grad"]},
}


Run = Callable[..., str]


def test_result_commands_against_live_api(live: LiveService, tmp_path: Path) -> None:
    token = live.headers["Authorization"].split()[1]
    runner = CliRunner(env={"TRAINYARD_URL": live.base_url, "TRAINYARD_TOKEN": token})

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    job_id = run("submit", str(spec_file)).strip()
    run("watch", job_id)
    # One trained job, every command on it: a job trains once for the whole module.
    _check_job_commands(run, job_id)
    _check_result_commands(run, live, job_id, tmp_path)
    _check_predict(run, live, job_id, tmp_path)
    _check_download(run, live, job_id, tmp_path)

    long_spec = {**SPEC, "train": {**SPEC["train"], "epochs": 300}}
    spec_file.write_text(json.dumps(long_spec))
    long_id = run("submit", str(spec_file)).strip()
    assert f"job {long_id}: " in run("cancel", long_id)
    assert live.wait(long_id)["status"] == "cancelled"
    failed = runner.invoke(main, ["cancel", long_id])
    assert failed.exit_code == 1 and "HTTP 409" in failed.output


def _check_job_commands(run: Run, job_id: str) -> None:
    listed = run("jobs")
    assert listed.splitlines()[0].split()[:3] == ["id", "kind", "status"]
    assert any(line.startswith(job_id) and "succeeded" in line for line in listed.splitlines())

    shown = run("show", job_id)
    assert f"job {job_id} (train): succeeded" in shown
    assert "(fc1): Linear(in_features=64, out_features=16, bias=True)" in shown
    assert any(
        line.split()[:4] == ["fc1.weight", "16x64", "1024", "yes"] for line in shown.splitlines()
    )
    assert "val/accuracy" in shown and "1,210 parameters (1,210 trainable, 0 frozen)" in shown


def _check_result_commands(run: Run, live: LiveService, job_id: str, tmp_path: Path) -> None:
    api = live.get(f"/api/v1/jobs/{job_id}/metrics", name="loss", split="val").json()
    rows = list(
        csv.DictReader(
            io.StringIO(run("metrics", job_id, "--name", "loss", "--split", "val", "--csv"))
        )
    )
    assert [float(r["value"]) for r in rows] == [p["value"] for p in api["series"][0]["points"]]
    assert len(rows) == 2

    traces = run("traces", job_id, "--kind", "param_grad", "--at-step", "5")
    layers = {line.split()[2] for line in traces.splitlines()[1:]}
    assert layers == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}

    plot = tmp_path / "flow.png"
    assert run("plot", job_id, "--name", "grad_flow", "-o", str(plot)).strip() == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_predict(run: Run, live: LiveService, job_id: str, tmp_path: Path) -> None:
    # predict: a .json of samples, then PNG files; the answer is the API's.
    samples = np.random.default_rng(0).random((3, 1, 8, 8)).round(3)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(samples.tolist()))
    answer = json.loads(run("predict", job_id, str(inputs), "--json"))
    direct = requests.post(
        f"{live.base_url}/api/v1/models/{job_id}/predict",
        json={"inputs": samples.tolist()}, headers=live.headers, timeout=60,
    ).json()  # fmt: skip
    classes = [o["predicted_class"] for o in direct["outputs"]]
    assert [o["predicted_class"] for o in answer["outputs"]] == classes
    table = run("predict", job_id, str(inputs)).splitlines()
    assert [int(line.split()[1]) for line in table[1:]] == classes
    pngs = []
    for i, sample in enumerate(samples):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((sample[0] * 255).round().astype(np.uint8)).save(path)
        pngs.append(str(path))
    by_image = run("predict", job_id, *pngs).splitlines()
    assert [line.split()[0] for line in by_image[1:]] == ["digit0.png", "digit1.png", "digit2.png"]


def _check_download(run: Run, live: LiveService, job_id: str, tmp_path: Path) -> None:
    target = tmp_path / "final.safetensors"
    assert "(verified)" in run("download", job_id, "-o", str(target))
    ckpts = live.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == ckpts[-1]["sha256"]
    keys = set(bytes_to_state_dict(target.read_bytes()))
    assert keys == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_a_download_whose_sha256_differs_is_refused() -> None:
    blob = b"weights"
    assert verified(blob, hashlib.sha256(blob).hexdigest()) == blob
    with pytest.raises(click.ClickException, match="sha256 mismatch"):
        verified(blob + b"!", hashlib.sha256(blob).hexdigest())


def test_watch_shows_an_eta_from_the_progress_it_saw() -> None:
    clock = EtaClock()
    progress = Progress(step=10, total_steps=110, epoch=1, fraction=10 / 110)
    job = Job.model_construct(status="running", progress=progress)
    assert clock.eta(job, now=100.0) is None  # one observation: no rate yet
    job.progress = progress.model_copy(update={"step": 30})
    eta = clock.eta(job, now=104.0)  # 20 steps in 4 s, 80 to go
    assert eta == pytest.approx(16.0)
    assert "ETA 0:16" in progress_line(job, 0.5, eta)
