"""What a sweep costs over submitting its jobs by hand: the wall time of a 16-trial sweep
against the same 16 training jobs (the sweep's own trial specs) posted at once, on the
same service, in the same run.

    .venv/bin/python bench/sweep_overhead.py [--trials 16] [--parallel 2] [--rounds 2]
                                             [--epochs 1]

Starts what a deployment runs: gunicorn with the API, one training worker (solo pool),
the sweep controller (a worker on the `sweeps` queue) and an inference worker, on a
scratch PostgreSQL database (TRAINYARD_BENCH_PG, default the local server) and Redis
database TRAINYARD_BENCH_REDIS (default redis://127.0.0.1:6379/9, flushed). Each round runs
the sweep (random search over the learning rate of the seed's NeuralNetwork on digits,
one epoch a trial, no early stopping: every trial trains fully, as the hand-made jobs do)
from POST /sweeps until it has ended, then posts the same specs as jobs and waits for the
last to end. The ratio is sweep / by hand; the goal is <= 1.05. The difference per
trial (ms) is what a controller pass costs a trial: one epoch of digits (about half a
second a trial here) shows it largest; `--epochs` makes trials longer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from cli.serve import api_command, stop_children, wait_healthy, worker_command
from shared.queues import ALL_TRAIN_QUEUES, QUEUE_INFER, QUEUE_SWEEPS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import free_port, scratch

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("TRAINYARD_BENCH_REDIS", "redis://127.0.0.1:6379/9")
BASE = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "SGD", "lr": 0.1}, "seed": 0},
    "hooks": {"every_n_steps": 5},
}


def start_services(url: str, port: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS,
        "TRAINYARD_HOME": str(logs), "PYTHONPATH": str(ROOT), "TRAINYARD_RATE_LIMIT": "",
    }  # fmt: skip
    procs = []
    for name, cmd in (
        ("worker", worker_command(list(ALL_TRAIN_QUEUES))),
        ("sweep-controller", worker_command([QUEUE_SWEEPS])),
        ("worker-infer", worker_command([QUEUE_INFER])),
        ("api", api_command("127.0.0.1", port, 2)),
    ):
        out = (logs / f"{name}.log").open("w")
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
    return procs


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        resp = self.http.get(f"{self.base}/api/v1{path}", timeout=60)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any], expect: int) -> Any:
        resp = self.http.post(f"{self.base}/api/v1{path}", json=body, timeout=60)
        if resp.status_code != expect:
            raise RuntimeError(f"POST {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json()


def run_sweep(
    api: Api, trials: int, parallel: int, seed: int, epochs: int
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from POST /sweeps until the sweep ended, and its trials' job specs."""
    body = {
        "spec": {**BASE, "train": {**BASE["train"], "epochs": epochs}},
        "space": {"train.optimizer.lr": {"log_uniform": [1e-3, 0.5]}},
        "method": "random", "seed": seed, "max_trials": trials, "parallel": parallel,
    }  # fmt: skip
    start = time.perf_counter()
    sweep = api.post("/sweeps", body, 201)
    while (shown := api.get(f"/sweeps/{sweep['id']}"))["status"] == "running":
        time.sleep(0.05)
    took = time.perf_counter() - start
    if shown["status"] != "succeeded":
        raise RuntimeError(f"sweep ended {shown['status']}: {shown.get('error')}")
    specs = [api.get(f"/jobs/{t['job_id']}")["spec"] for t in shown["trials"]]
    return took, specs


def run_by_hand(api: Api, specs: list[dict[str, Any]]) -> float:
    """Seconds from the first POST /jobs until the last of the jobs ended."""
    start = time.perf_counter()
    ids = [api.post("/jobs", {"kind": "train", "spec": spec}, 202)["id"] for spec in specs]
    for job_id in ids:
        while api.get(f"/jobs/{job_id}")["status"] in ("queued", "running"):
            time.sleep(0.05)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="of each trial")
    args = parser.parse_args()

    run = scratch("trainyard_bench_sweep", REDIS)
    url, logs, token = run.url, run.logs, run.token
    port = free_port()
    procs = start_services(url, port, logs)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=180)
        api = Api(base, token)
        # Warm both paths: imports, the dataset, the first connections, Optuna's storage.
        run_by_hand(api, [BASE])
        run_sweep(api, 1, 1, 0, 1)
        sweeps, hands = [], []
        for round_ in range(args.rounds):
            took, specs = run_sweep(api, args.trials, args.parallel, round_, args.epochs)
            by_hand = run_by_hand(api, specs)
            sweeps.append(took)
            hands.append(by_hand)
            print(f"round {round_ + 1}: sweep {took:.2f} s, by hand {by_hand:.2f} s, "
                  f"ratio {took / by_hand:.3f}")  # fmt: skip
        sweep_s, hand_s = statistics.median(sweeps), statistics.median(hands)
        print(f"{args.trials} trials of {args.epochs} epoch(s), {args.parallel} at once, "
              "one training worker")  # fmt: skip
        print(f"sweep   median {sweep_s:.2f} s")
        print(f"by hand median {hand_s:.2f} s")
        print(f"per trial: {hand_s / args.trials * 1000:.0f} ms by hand, "
              f"{(sweep_s - hand_s) / args.trials * 1000:+.0f} ms in a sweep")  # fmt: skip
        print(f"ratio sweep / by hand: {sweep_s / hand_s:.3f} (goal <= 1.05)")
    finally:
        stop_children(procs, timeout=30)
        run.close()


if __name__ == "__main__":
    main()
