"""Latency and throughput of POST /models/<id>/predict with a warm model, next to a raw
Celery round trip (`add.delay(1, 2).get()`) on the same Redis, measured in the same run.

    .venv/bin/python bench/predict_latency.py [--requests 300] [--rounds 3]
                                              [--clients 32] [--seconds 10]

Starts what a deployment runs: gunicorn with the API (2 gevent processes) and a
Celery worker on the `infer` queue (whose serving thread answers predictions), on a
scratch PostgreSQL database (TRAINYARD_BENCH_PG, default the local server) and Redis
database TRAINYARD_BENCH_REDIS (default redis://127.0.0.1:6379/9, flushed); the request
rate limit is off. The baseline is a plain Celery app on the same Redis, with a Redis
result backend and one `add` task, served by its own solo worker. The model is the seed's
Net (preset lenet) for 32x32 digits, its checkpoint stored as a trained job's would be;
each predict sends one sample as a JSON nested list and waits for the answer.

1. One client: rounds interleaved (raw, predict, raw, predict ...); p50 / p99 over all.
2. `--clients` concurrent clients for `--seconds`: predictions per second, with dynamic
   batching on (TRAINYARD_PREDICT_MAX_BATCH 32) and off (1: the worker restarted), and
   the one-client rate of the same worker, each in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
from shared.serving import alive_key
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
    """Where a prediction's time goes, from the records' own timestamps (p50, ms): sent
    by the API -> popped by the serving thread -> answered (API and worker clocks)."""
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
        f"  from the records: sent -> popped {ms('enqueued_at', 'started_at'):.2f} ms, "
        f"-> answered {ms('started_at', 'finished_at'):.2f} ms"
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


def service_env(url: str, logs: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS,
            "TRAINYARD_HOME": str(logs), "PYTHONPATH": str(ROOT), "TRAINYARD_RATE_LIMIT": "",
            **extra}  # fmt: skip


def start(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    out = (logs / f"{name}.log").open("a")
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def start_services(url: str, port: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """The API and the raw Celery worker, as child processes."""
    env = service_env(url, logs)
    raw_worker = [
        sys.executable, "-m", "celery", "-A", "bench.predict_latency:raw", "worker",
        "-Q", "bench_raw", "-P", "solo", "-l", "warning", "-n", f"bench-raw-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    return [
        start("api", api_command("127.0.0.1", port, 2), env, logs),
        start("worker-raw", raw_worker, env, logs),
    ]


def start_infer_worker(url: str, logs: Path, max_batch: int) -> subprocess.Popen[bytes]:
    """An inference worker with its serving line; waits until the line is open."""
    env = service_env(url, logs, TRAINYARD_PREDICT_MAX_BATCH=str(max_batch))
    proc = start("worker-infer", worker_command([QUEUE_INFER], loglevel="warning"), env, logs)
    client = redis.Redis.from_url(REDIS)
    deadline = time.monotonic() + 120
    while not client.exists(alive_key(QUEUE_INFER)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the inference worker did not open its line; see {logs}")
        time.sleep(0.05)
    return proc


class Client:
    """One HTTP session that predicts one sample with the bench token."""

    def __init__(self, base: str, token: str, model_job: str) -> None:
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.url = f"{base}/api/v1/models/{model_job}/predict"
        self.sample = torch.rand(1, 32, 32).tolist()
        self.timings: list[dict[str, float]] = []  # the answers' Server-Timing headers

    def predict(self) -> dict[str, Any]:
        resp = self.http.post(self.url, json={"inputs": self.sample}, timeout=30)
        assert resp.status_code == 200, resp.text
        self.timings.append(server_timing(resp.headers.get("Server-Timing", "")))
        body: dict[str, Any] = resp.json()
        return body


def server_timing(header: str) -> dict[str, float]:
    """{"check": 1.2, ...} from "check;dur=1.2, send;dur=0.3, ..." (milliseconds)."""
    found = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            found[name] = float(dur)
    return found


def round_trip() -> None:
    assert add.delay(1, 2).get(timeout=30) == 3


def one_client(client: Client, requests_: int, rounds: int) -> float:
    """Interleaved rounds of raw round trips and warm predictions; prints the ratio and
    returns the one-client predictions per second."""
    client.predict()  # loads the model into the worker's cache
    assert client.predict()["cached_model"] is True
    timed(client.predict, 20)
    timed(round_trip, 20)
    raw_ms: list[float] = []
    predict_ms: list[float] = []
    for _ in range(rounds):
        raw_ms += timed(round_trip, requests_)
        predict_ms += timed(client.predict, requests_)
    p50_raw, p50_predict = statistics.median(raw_ms), statistics.median(predict_ms)
    p99_raw, p99_predict = percentile(raw_ms, 0.99), percentile(predict_ms, 0.99)
    print(f"one client: {len(raw_ms)} requests each, {rounds} interleaved rounds; lenet, 1 sample")
    print(f"  raw Celery round trip   p50 {p50_raw:6.2f} ms   p99 {p99_raw:6.2f} ms")
    print(f"  POST .../predict (warm) p50 {p50_predict:6.2f} ms   p99 {p99_predict:6.2f} ms")
    print(
        f"  predict / raw round trip: p50 {p50_predict / p50_raw:.2f}x, "
        f"p99 {p99_predict / p99_raw:.2f}x   (target <= 2x)"
    )
    timings = client.timings[-len(predict_ms) :]
    phases = {name: statistics.median(t[name] for t in timings) for name in timings[-1]}
    inside = sum(phases.values())
    print(
        "  in the API (Server-Timing, p50): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in phases.items())
        + f"; the rest of the {p50_predict:.2f} ms (HTTP, Flask, auth, the body's "
        f"parse and validation, the answer's JSON): about {p50_predict - inside:.2f} ms"
    )
    return 1000 / statistics.mean(predict_ms)


def concurrent(clients: list[Client], seconds: float) -> tuple[float, float, float]:
    """Every client predicts in a loop for `seconds`: (per second, p50 ms, p99 ms)."""
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in clients]
    batches: list[int] = []

    def run(i: int) -> None:
        while time.monotonic() < stop:
            start = time.perf_counter()
            body = clients[i].predict()
            latencies[i].append((time.perf_counter() - start) * 1000)
            batches.append(int(body.get("batch_samples", 1)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    every = [ms for own in latencies for ms in own]
    print(
        f"    {len(every)} predictions in {took:.1f} s; forward passes of "
        f"{statistics.mean(batches):.1f} samples on average (largest {max(batches)})"
    )
    return len(every) / took, statistics.median(every), percentile(every, 0.99)


def throughput(
    base: str, token: str, model_job: str, n_clients: int, seconds: float, label: str
) -> tuple[float, float]:
    """One-client and n-client predictions per second of the running worker."""
    clients = [Client(base, token, model_job) for _ in range(n_clients)]
    clients[0].predict()
    clients[0].predict()
    single, _, _ = concurrent(clients[:1], seconds / 2)
    many, p50, p99 = concurrent(clients, seconds)
    print(
        f"  {label}: 1 client {single:7.1f}/s; {n_clients} clients {many:7.1f}/s "
        f"(p50 {p50:.1f} ms, p99 {p99:.1f} ms) = {many / single:.2f}x one client"
    )
    return single, many


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    name, url = create_database("trainyard_bench_predict")
    redis.Redis.from_url(REDIS).flushdb()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    token, model_job = trained_model_job(sessions)
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    procs = start_services(url, port, logs)
    infer = start_infer_worker(url, logs, max_batch=32)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=120)
        one_client(Client(base, token, model_job), args.requests, args.rounds)
        time.sleep(1)  # the worker's last records are written
        print_breakdown(sessions)
        print(f"throughput, {args.clients} concurrent clients for {args.seconds:g} s:")
        on = throughput(base, token, model_job, args.clients, args.seconds, "batching on ")
        stop_children([infer])
        redis.Redis.from_url(REDIS).delete(alive_key(QUEUE_INFER))
        infer = start_infer_worker(url, logs, max_batch=1)
        off = throughput(base, token, model_job, args.clients, args.seconds, "batching off")
        print(
            f"  {args.clients} clients with batching on / off: {on[1] / off[1]:.2f}x; "
            f"on vs one client {on[1] / on[0]:.2f}x (target >= 5x)"
        )
    finally:
        stop_children([*procs, infer])
        engine.dispose()
        drop_database(name)


if __name__ == "__main__":
    main()
