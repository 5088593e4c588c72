"""Latency of POST /models/<id>/predict with a warm model cache, next to a raw Celery
round trip (`add.delay(1, 2).get()`) on the same Redis, measured in the same run.

    .venv/bin/python bench/predict_latency.py [--requests 300] [--rounds 3]

Starts what a deployment runs: gunicorn with the API and a Celery worker on the `infer`
queue, on a scratch PostgreSQL database (TRAINYARD_BENCH_PG, default the local server)
and Redis database TRAINYARD_BENCH_REDIS (default redis://127.0.0.1:6379/9, flushed).
The baseline is a plain Celery app on the same Redis, with a Redis result backend and
one `add` task, served by its own solo worker. The model is the seed's Net (preset
lenet) for 32x32 digits, its checkpoint stored as a trained job's would be; each
predict sends one sample as a JSON nested list and waits for the answer. Rounds run
interleaved (raw, predict, raw, predict ...); p50 / p99 are over all requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
import torch
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.serve import api_command, stop_children, wait_healthy, worker_command
from shared import repository
from shared.db import make_engine, make_session_factory, session_scope
from shared.models import Job
from shared.net.build import build_model
from shared.queues import QUEUE_INFER
from shared.spec import JobSpec
from shared.tensors import sha256_hex, state_dict_to_bytes
from shared.tokens import create_token

# bench/ on the path: run as a script it is there already; the raw Celery worker of
# predict_latency imports this file as bench.predict_latency, from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import create_database, drop_database, free_port, percentile

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("TRAINYARD_BENCH_REDIS", "redis://127.0.0.1:6379/9")
SPEC = {
    "model": {"preset": "lenet"},
    "data": {"dataset": "digits", "image_size": 32},
    "train": {"epochs": 1},
}

# The baseline: the smallest thing Celery can do over this Redis and come back.
raw = Celery("bench_raw", broker=REDIS, backend=REDIS)
raw.conf.update(task_default_queue="bench_raw", worker_hijack_root_logger=False)


@raw.task(name="bench.add")
def add(x: int, y: int) -> int:
    """The canonical round trip."""
    return x + y


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def print_breakdown(sessions: sessionmaker[Session]) -> None:
    """Where a prediction's time goes, from the job rows' own timestamps (p50, ms)."""
    with sessions() as session:
        rows = session.execute(
            select(Job.created_at, Job.enqueued_at, Job.started_at, Job.finished_at).where(
                Job.kind == "infer", Job.finished_at.is_not(None)
            )
        ).all()

    def ms(a: Any, b: Any) -> float:
        return statistics.median(
            (getattr(r, b) - getattr(r, a)).total_seconds() * 1000 for r in rows
        )

    print(
        f"  from the rows: created -> enqueued {ms('created_at', 'enqueued_at'):.2f} ms, "
        f"-> claimed {ms('enqueued_at', 'started_at'):.2f} ms, "
        f"-> finished {ms('started_at', 'finished_at'):.2f} ms"
    )


def trained_model_job(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A token and a succeeded LeNet job with a final checkpoint: (token, job id)."""
    spec = JobSpec.model_validate(SPEC)
    blob = state_dict_to_bytes(build_model(spec.model).state_dict())
    with session_scope(sessions) as session:
        token, _ = create_token(session=session, name="bench", owner="bench")
        job = repository.create_job(
            session=session, owner="bench", kind="train",
            spec=spec.model_dump(mode="json"), queue="train",
        )  # fmt: skip
        job.status = "succeeded"
        repository.save_checkpoint(
            session=session, job_id=job.id, step=1, epoch=1, tag="final",
            model_state=blob, optimizer_state=None, sha256=sha256_hex(blob),
        )  # fmt: skip
        return token, str(job.id)


def start_services(url: str, port: int) -> list[subprocess.Popen[bytes]]:
    """The API, an inference worker and the raw Celery worker, as child processes."""
    logs = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    env = {**os.environ, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS,
           "TRAINYARD_HOME": str(logs), "PYTHONPATH": str(ROOT)}  # fmt: skip
    commands = {
        "api": api_command("127.0.0.1", port, 2),
        "worker-infer": worker_command([QUEUE_INFER], loglevel="warning"),
        "worker-raw": [
            sys.executable, "-m", "celery", "-A", "bench.predict_latency:raw", "worker",
            "-Q", "bench_raw", "-P", "solo", "-l", "warning", "-n", f"bench-raw-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ],
    }  # fmt: skip
    return [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=(logs / f"{n}.log").open("w"),
                         stderr=subprocess.STDOUT)
        for n, cmd in commands.items()
    ]  # fmt: skip


def measure(base: str, token: str, model_job: str, requests_: int, rounds: int) -> None:
    """Interleaved rounds of raw round trips and warm predictions; prints the ratio."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    sample = torch.rand(1, 32, 32).tolist()
    predict_url = f"{base}/api/v1/models/{model_job}/predict"
    warm = [False]

    def predict() -> None:
        resp = http.post(predict_url, json={"inputs": sample}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["cached_model"] is True or not warm[0]

    def round_trip() -> None:
        assert add.delay(1, 2).get(timeout=30) == 3

    predict()  # loads the model into the worker's cache
    warm[0] = True
    timed(predict, 20)
    timed(round_trip, 20)
    raw_ms: list[float] = []
    predict_ms: list[float] = []
    for _ in range(rounds):
        raw_ms += timed(round_trip, requests_)
        predict_ms += timed(predict, requests_)
    p50_raw, p50_predict = statistics.median(raw_ms), statistics.median(predict_ms)
    print(f"{len(raw_ms)} requests each, {rounds} interleaved rounds; lenet, 1 sample")
    p99_raw = percentile(raw_ms, 0.99)
    print(f"  raw Celery round trip   p50 {p50_raw:6.2f} ms   p99 {p99_raw:6.2f} ms")
    print(
        f"  POST .../predict (warm) p50 {p50_predict:6.2f} ms   "
        f"p99 {percentile(predict_ms, 0.99):6.2f} ms"
    )
    print(f"  predict / raw round trip (p50): {p50_predict / p50_raw:.2f}x   (target < 2x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name, url = create_database("trainyard_bench_predict")
    redis.Redis.from_url(REDIS).flushdb()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    token, model_job = trained_model_job(sessions)
    port = free_port()
    procs = start_services(url, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=120)
        measure(base, token, model_job, args.requests, args.rounds)
        print_breakdown(sessions)
    finally:
        stop_children(procs)
        engine.dispose()
        drop_database(name)


if __name__ == "__main__":
    main()
