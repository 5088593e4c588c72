"""Live streams at scale: N clients streaming one training job, against one client
streaming the same job in the same run.

    .venv/bin/python bench/stream_fanout.py [--streams 200] [--epochs 20] [--workers 2]

Starts gunicorn with the API (the gevent worker class, --workers processes) and one
training worker on a scratch PostgreSQL database (TRAINYARD_BENCH_PG, default the local
server) and Redis database TRAINYARD_BENCH_REDIS (default redis://127.0.0.1:6379/9,
flushed). Each phase submits the seed's NeuralNetwork on digits (--epochs epochs, a metric
row every step, gradient traces every 5th), opens its streams from a separate client
process (bench/stream_clients.py, on gevent) and waits until every stream got `end`.

Meanwhile the bench polls the metrics table every 10 ms and notes when each step's row
was first visible: that is the commit time a client's arrival time is measured from
(within about 10 ms). It prints, per phase: whether every stream got every step exactly
once and in order, the events delivered, the delay from commit to client (p50, p99, max),
and the CPU the API processes used (cores: CPU seconds over wall seconds), and the ratio
of the N-stream phase to the one-stream phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from cli.serve import api_command, api_environment, stop_children, wait_healthy, worker_command
from shared.models import Metric
from shared.queues import ALL_TRAIN_QUEUES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import free_port, scratch

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("TRAINYARD_BENCH_REDIS", "redis://127.0.0.1:6379/9")
TICK = os.sysconf("SC_CLK_TCK")


def spec(epochs: int) -> dict[str, Any]:
    return {
        "model": {"preset": "neural_network"},
        "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "SGD", "lr": 0.1},
                  "seed": 0},
        "hooks": {"every_n_steps": 5},
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's master and workers)."""
    total = 0.0
    for proc in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


class Commits(threading.Thread):
    """When each metric step of a job was first visible in the database."""

    def __init__(self, sessions: Any, job_id: str) -> None:
        super().__init__(daemon=True)
        self.sessions, self.job_id = sessions, job_id
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        top = 0
        while not self.stop.is_set():
            with self.sessions() as session:
                now = session.scalar(
                    select(func.max(Metric.step)).where(Metric.job_id == self.job_id)
                )
            at = time.time()
            for step in range(top + 1, (now or 0) + 1):
                self.seen[step] = at
            top = max(top, now or 0)
            time.sleep(0.01)


def phase(
    base: str, token: str, sessions: Any, api_pid: int, streams: int, epochs: int
) -> dict[str, Any]:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    resp = http.post(
        f"{base}/api/v1/jobs", json={"kind": "train", "spec": spec(epochs)}, timeout=60
    )
    resp.raise_for_status()
    job_id = resp.json()["id"]
    commits = Commits(sessions, job_id)
    commits.start()
    cpu0, wall0 = cpu_seconds(api_pid), time.monotonic()
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stream_clients.py"), base, token, job_id,
         str(streams)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    cpu1, wall1 = cpu_seconds(api_pid), time.monotonic()
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime
    commits.stop.set()
    commits.join()
    if clients.returncode != 0:
        raise RuntimeError(f"stream clients failed: {clients.stderr[-2000:]}")
    job = http.get(f"{base}/api/v1/jobs/{job_id}", timeout=60).json()
    total = job["progress"]["step"]
    results = json.loads(clients.stdout)["streams"]
    exact = all([s for s, _ in r["steps"]] == list(range(1, total + 1)) for r in results)
    delays = sorted(
        t - commits.seen[s] for r in results for s, t in r["steps"] if s in commits.seen
    )
    return {
        "streams": streams, "status": job["status"], "steps": total, "exact": exact,
        "events": sum(r["events"] for r in results),
        "connections": sum(r["connections"] for r in results),
        "p50": statistics.median(delays), "p99": delays[int(0.99 * (len(delays) - 1))],
        "max": delays[-1], "cores": (cpu1 - cpu0) / (wall1 - wall0), "wall": wall1 - wall0,
        "client_cores": client_cpu / (wall1 - wall0),
    }  # fmt: skip


def show(result: dict[str, Any]) -> None:
    print(
        f"{result['streams']:>4} streams: job {result['status']} after {result['steps']} steps "
        f"in {result['wall']:.1f} s; every step once and in order: {result['exact']}; "
        f"{result['events']} events over {result['connections']} connections; delay commit "
        f"-> client p50 {result['p50'] * 1000:.0f} ms, p99 {result['p99'] * 1000:.0f} ms, "
        f"max {result['max'] * 1000:.0f} ms; API CPU {result['cores']:.2f} cores "
        f"(the clients' process {result['client_cores']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    args = parser.parse_args()

    run = scratch("trainyard_bench_stream", REDIS)
    url, logs, sessions, token = run.url, run.logs, run.sessions, run.token
    port = free_port()
    env = api_environment({
        **os.environ, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS,
        "TRAINYARD_HOME": str(logs), "PYTHONPATH": str(ROOT), "TRAINYARD_RATE_LIMIT": "",
    })  # fmt: skip
    procs = []
    for proc_name, cmd in (
        ("worker", worker_command(list(ALL_TRAIN_QUEUES))),
        ("api", api_command("127.0.0.1", port, args.workers)),
    ):
        out = (logs / f"{proc_name}.log").open("w")
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=180)
        phase(base, token, sessions, procs[1].pid, 1, 1)  # warm: imports, dataset, pools
        one = phase(base, token, sessions, procs[1].pid, 1, args.epochs)
        many = phase(base, token, sessions, procs[1].pid, args.streams, args.epochs)
        print(f"gunicorn -k gevent -w {args.workers}, one training worker, "
              f"{os.cpu_count()} cores shared by all")  # fmt: skip
        show(one)
        show(many)
        cpu_ratio = many["cores"] / max(one["cores"], 1e-9)
        print(f"ratio {args.streams} streams / 1 stream: p99 delay "
              f"{many['p99'] / one['p99']:.2f}x, API CPU {cpu_ratio:.2f}x, "
              f"job wall time {many['wall'] / one['wall']:.2f}x")  # fmt: skip
    finally:
        stop_children(procs, timeout=30)
        run.close()


if __name__ == "__main__":
    main()
