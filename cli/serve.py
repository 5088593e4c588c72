"""`trainyard serve`: migrate, start a worker and the API, optionally run the demo job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import click
import requests

from cli.api import Trainyard
from cli.client import ApiClient
from cli.render import summary_text, watch
from shared.config import Settings
from shared.contract.requests import PredictRequest, TrainJobRequest
from shared.contract.responses import Job
from shared.db import make_engine, make_session_factory, session_scope
from shared.queues import (
    QUEUE_CPU,
    QUEUE_DEFAULT,
    QUEUE_GPU,
    QUEUE_INFER,
    QUEUE_SWEEPS,
    make_celery,
)
from shared.sweeper import run_forever
from shared.tokens import create_token, find_token


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible, without initialising CUDA in this (forking) process."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and "GPU" in out.stdout


def cuda_available() -> tuple[bool, str]:
    """Whether torch sees a CUDA device, asked in a child process (this one may fork
    later, and CUDA must not be initialised before a fork); with what it said."""
    probe = (
        "import torch; n = torch.cuda.device_count() if torch.cuda.is_available() else 0; "
        "print(f'{n} CUDA device(s), torch {torch.__version__}, CUDA {torch.version.cuda}')"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=False,
            timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, "torch did not answer within 120 s"
    said = (out.stdout or out.stderr).strip().splitlines()[-1:] or ["no answer"]
    return out.returncode == 0 and not said[0].startswith("0 "), said[0]


def default_queues(gpu: bool | None = None) -> list[str]:
    """GPU workers take `auto` and `cuda` jobs; CPU workers `auto` and `cpu` ones.
    `gpu` None: whether nvidia-smi lists a GPU."""
    if gpu is None:
        gpu = has_gpu()
    return [QUEUE_DEFAULT, QUEUE_GPU] if gpu else [QUEUE_DEFAULT, QUEUE_CPU]


def serve_queues() -> list[str]:
    """`serve` runs one training worker: it takes every training queue it can run."""
    return [*default_queues(), QUEUE_CPU] if has_gpu() else default_queues()


def worker_command(
    queues: list[str], concurrency: int = 1, loglevel: str = "info", pool: str = "solo"
) -> list[str]:
    """The celery worker command line.

    The default `solo` pool trains in the worker process itself: one process per GPU, CUDA
    never initialised in a parent that forks, and DataLoader worker processes allowed
    (prefork children are daemonic and may not start any). Run one such worker per GPU.
    """
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", ",".join(queues), "-P", pool, "--concurrency", str(concurrency), "-l", loglevel,
        "-n", f"trainyard-{'-'.join(queues)}-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def api_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus a PROMETHEUS_MULTIPROC_DIR: gunicorn's worker processes share
    request metrics through files there (prometheus-client's multiprocess mode). A new
    folder per start, or the named one emptied: the last run's counts are not this one's."""
    env = dict(environ)
    folder = env.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="trainyard-metrics-")
    return env


def api_command(host: str, port: int, workers: int, worker_class: str = "gevent") -> list[str]:
    """gunicorn serving api.wsgi:app (run it with api_environment). gevent: every request
    a greenlet, so open live streams cost no thread; gthread: 4 threads per process."""
    served = (
        ["-k", "gevent", "--worker-connections", "1000"]
        if worker_class == "gevent"
        else ["-k", "gthread", "--threads", "4"]
    )
    return [
        sys.executable, "-m", "gunicorn", "-b", f"{host}:{port}", "-w", str(workers), *served,
        "--timeout", "60", "--no-control-socket", "api.wsgi:app",
    ]  # fmt: skip


def wait_healthy(base_url: str, timeout: float = 60.0) -> None:
    """Block until /healthz answers, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still importing torch
            pass
        time.sleep(0.3)
    raise click.ClickException(f"the API did not come up at {base_url} within {timeout:.0f} s")


def demo_spec() -> dict[str, Any]:
    """The seed's Net (preset lenet) on the bundled digits, resized to 32x32."""
    text = resources.files("cli.examples").joinpath("lenet_digits.json").read_text()
    spec: dict[str, Any] = json.loads(text)
    return spec


def write_token_file(settings: Settings, token: str) -> Path:
    """Store the local token where the CLI finds it (readable by this user only)."""
    path = settings.home / "token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # Created 0600 in one step: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to start when something already listens there: the demo would talk to it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise click.ClickException(
                f"{host}:{port} is already in use (another trainyard serve?); pass --port"
            ) from None


def _stop_on_signals() -> None:
    """SIGTERM (kill, systemd) and SIGINT stop serve like Ctrl-C, so the children stop too.

    SIGINT is reset explicitly: a shell starting `serve &` hands it over ignored.
    """

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def run_serve(settings: Settings, *, demo: bool, exit_after_demo: bool, api_workers: int) -> int:
    """Run the single-machine service until Ctrl-C or SIGTERM (or until the demo ends)."""
    ensure_port_free(settings.api_host, settings.api_port)
    _stop_on_signals()
    env = {**api_environment(os.environ), "TRAINYARD_API_HOST": settings.api_host,
           "TRAINYARD_API_PORT": str(settings.api_port),
           "TRAINYARD_HOME": str(settings.home.resolve())}  # fmt: skip
    logs = settings.home.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "worker": worker_command(serve_queues()),
        # Its own process: a prediction never waits for a training job to finish.
        "worker-infer": worker_command([QUEUE_INFER]),
        # Hyperparameter sweeps' controller passes: short, never behind a training job.
        "sweep-controller": worker_command([QUEUE_SWEEPS]),
        "api": api_command(
            settings.api_host, settings.api_port, api_workers, settings.resolved_api_worker_class()
        ),
    }
    children = []
    for name, cmd in commands.items():
        # Child output goes to files so the terminal shows the demo, not two banners.
        with (logs / f"{name}.log").open("a") as out:
            children.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    engine = make_engine(settings.resolved_database_url())
    sessions = make_session_factory(engine)
    stop = threading.Event()
    sweeper = threading.Thread(
        target=run_forever,
        kwargs={"sessions": sessions, "celery": make_celery(settings), "settings": settings,
                "every_seconds": settings.sweep_seconds, "stop": stop},
        daemon=True,
    )  # fmt: skip
    sweeper.start()
    base = settings.base_url()
    code = 0
    try:
        wait_healthy(base)
        queues = ", ".join(serve_queues())
        click.echo(f"API: {base}  (training worker: {queues}; inference worker: {QUEUE_INFER})")
        click.echo(f"logs: {logs}/api.log, {logs}/worker.log, {logs}/worker-infer.log")
        if demo:
            code = _run_demo(settings, sessions, base)
            if exit_after_demo:
                return code
        click.echo("serving; press Ctrl-C to stop")
        while all(c.poll() is None for c in children):
            time.sleep(1)
        click.echo("a child process exited; shutting down", err=True)
        return 1
    except KeyboardInterrupt:
        return code
    finally:
        stop.set()
        stop_children(children)
        engine.dispose()
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the folder made for this run
            shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def stop_children(children: list[subprocess.Popen[Any]], timeout: float = 20.0) -> None:
    """SIGTERM every child that still runs, then wait for each; kill what outlives `timeout`."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _local_token(settings: Settings, sessions: Any) -> tuple[str, Path]:
    """The token in home/token if it is still valid, else a new one written there."""
    path = settings.home / "token"
    with session_scope(sessions) as session:
        if path.exists():
            token = path.read_text().strip()
            if find_token(session=session, plaintext=token) is not None:
                return token, path
        token, _row = create_token(session=session, name="demo", owner="local")
    return token, write_token_file(settings, token)


def _run_demo(settings: Settings, sessions: Any, base: str) -> int:
    token, token_path = _local_token(settings, sessions)
    api = Trainyard(ApiClient(base, token))
    started = time.monotonic()
    job = api.submit(TrainJobRequest.model_validate({"spec": demo_spec()}))
    click.echo(f"demo job {job.id} queued: preset lenet on digits (32x32)")
    final = watch(api, job.id)
    wall = time.monotonic() - started
    click.echo(summary_text(api, final))
    click.echo(f"  demo wall time {wall:.1f} s (submit to final status)")
    if final.status == "succeeded":
        click.echo(_demo_prediction(api, job.id))
    job_url = f"{base}/api/v1/jobs/{job.id}"
    click.echo(f"\nExplore (token in {token_path}; export TRAINYARD_TOKEN=$(cat {token_path})):")
    for suffix in ("", "/summary", "/metrics", "/traces?kind=param_grad", "/checkpoints",
                   "/plots/grad_flow.png", "/events"):  # fmt: skip
        click.echo(f"  {job_url}{suffix}")
    click.echo(f'  curl -H "Authorization: Bearer $TRAINYARD_TOKEN" {job_url}')
    click.echo(f"Dashboard (sign in with the token): {base}/ui/#/jobs/{job.id}")
    return 0 if final.status == "succeeded" else 1


def _demo_prediction(api: Trainyard, job_id: str) -> str:
    """Ask the trained model about three digits, sent as PNG images (the seed's
    Softmax-and-argmax "Predicted class")."""
    import base64
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    picks = [0, 1, 2]  # the first 0, 1 and 2 of the set (it also trained on them)
    images = []
    for i in picks:
        out = io.BytesIO()
        pixels = (digits.images[i] * (255 / 16)).round().astype("uint8")
        Image.fromarray(pixels).save(out, format="PNG")
        images.append(base64.b64encode(out.getvalue()).decode())
    answer = api.predict(job_id, PredictRequest(inputs=images))
    if isinstance(answer, Job):  # 202: the inference worker has not answered in time
        return f"  prediction still {answer.status}: see {api.http.base_url}{answer.links.self}"
    outputs = (answer.model_extra or {}).get("outputs", [])
    lines = ["  predictions (POST /api/v1/models/<id>/predict with three PNG digits):"]
    for i, out in zip(picks, outputs, strict=True):
        lines.append(
            f"    digit {digits.target[i]}: predicted class {out['predicted_class']} "
            f"(probability {max(out['probabilities']):.3f})"
        )
    return "\n".join(lines)
