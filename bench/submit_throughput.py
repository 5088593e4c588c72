"""Submissions/s of POST /api/v1/jobs from concurrent clients, next to a Flask hello-world
under the same gunicorn settings, measured in the same run.

    .venv/bin/python bench/submit_throughput.py [--submissions 400] [--clients 20] [--rounds 3]

Starts what a deployment runs, as the README's "By hand" says: gunicorn -w 2 -k gevent
with api.wsgi:app (cli.serve.api_command), on a scratch PostgreSQL database
(TRAINYARD_BENCH_PG, default the local server; migrated, dropped at the end) and Redis
database TRAINYARD_BENCH_REDIS (default redis://127.0.0.1:6379/9, flushed before and
after). No worker runs: the jobs stay queued, their messages stay in Redis. The baseline is
a hello-world Flask app served by the same gunicorn command line; it answers GET with a
string and POST by parsing the same JSON body and answering 202 with a small JSON object.

Each target gets --submissions requests from --clients threads, one requests.Session each
(keep-alive, as a real client would) and, for the API, one token (owner) each, so the
per-token rate limit and the queued-jobs quota apply as they would to that many users (the
quota raised just enough never to refuse: no worker drains the queue). The rate is
requests over the wall time from the first request to the last answer. Rounds run
interleaved (GET, POST, submit, GET ...); rates are medians over rounds, p50 / p99 are
over all requests of all rounds. The ratio is taken against the faster hello-world
variant. The clients share this machine's cores with the servers, equally for every
target, so the rates move with whatever else runs here; the CPU time the gunicorn workers
spend per request (from /proc, Linux only) moves less, and shows how far a change got
even on a busy machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import func, select

from cli.serve import api_command, demo_spec, stop_children, wait_healthy
from shared.config import Settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.models import Job
from shared.tokens import create_token

# bench/ on the path: run as a script it is there already; the raw Celery worker of
# predict_latency imports this file as bench.predict_latency, from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import create_database, drop_database, free_port, percentile

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("TRAINYARD_BENCH_REDIS", "redis://127.0.0.1:6379/9")
API_WORKERS = 2  # README "By hand": gunicorn -w 2 -k gevent api.wsgi:app

# Written to a scratch folder and served by gunicorn as hello_app:app, so the baseline's
# processes import Flask only (not torch, not this bench).
HELLO_APP = """\
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@app.get("/hello")
def hello():
    return "Hello, World!"


@app.post("/hello")
def hello_post():
    body = request.get_json(force=True)
    return jsonify({"id": "hello", "kind": body.get("kind")}), 202
"""


@dataclass
class Target:
    """One endpoint under load: what to send, what answer counts, what was measured."""

    label: str
    method: str
    url: str
    expect: int
    server: subprocess.Popen[bytes]  # the gunicorn master that serves `url`
    body: dict[str, Any] | None = None
    tokens: list[str] = field(default_factory=list)  # one per client; none for hello-world
    rates: list[float] = field(default_factory=list)  # requests/s, one per round
    latencies: list[float] = field(default_factory=list)  # ms, all rounds
    cpu: list[float] = field(default_factory=list)  # worker CPU ms per request, one per round


def workers_cpu_ms(master: int) -> float | None:
    """CPU time (user + system, ms) of the gunicorn master's worker processes so far; None
    without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    total = 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # Fields after the command name (which may hold spaces): state, ppid, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == master:
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def load(target: Target, total: int, clients: int) -> tuple[float, list[float]]:
    """`total` requests from `clients` threads: (requests/s, latencies in ms).

    Every client opens its session before the clock starts, so thread start-up is not
    measured; TCP connects are (once per client, as with any fresh client)."""
    tickets = itertools.count()  # next() on a count is atomic under the GIL: no lock needed
    ready = threading.Barrier(clients + 1)
    latencies: list[float] = []
    failures: list[str] = []

    def client(index: int) -> None:
        with requests.Session() as http:
            if target.tokens:
                http.headers["Authorization"] = f"Bearer {target.tokens[index]}"
            ready.wait()
            while next(tickets) < total:
                start = time.perf_counter()
                try:
                    resp = http.request(target.method, target.url, json=target.body, timeout=60)
                except requests.RequestException as exc:  # counted, so the rate is not a lie
                    failures.append(repr(exc))
                    continue
                latencies.append((time.perf_counter() - start) * 1000)
                if resp.status_code != target.expect:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit(
            f"{target.label}: {len(failures)} unexpected answers, first: {failures[0]}"
        )
    return total / wall, latencies


def start_servers(
    url: str, api_port: int, hello_port: int, *, max_queued: int
) -> list[subprocess.Popen[bytes]]:
    """The API and the hello-world app, each under the same gunicorn command line.

    No worker takes the jobs, so an owner's queued jobs only grow: the queued-jobs quota is
    raised to `max_queued` where it is lower, so that it is checked on every submission
    (that query is part of the cost) but never refuses one."""
    scratch = Path(tempfile.mkdtemp(prefix="trainyard-bench-submit-"))
    (scratch / "hello_app.py").write_text(HELLO_APP)
    api = api_command("127.0.0.1", api_port, API_WORKERS)
    assert api[-1] == "api.wsgi:app", api  # the only difference between the two servers
    hello = [*api_command("127.0.0.1", hello_port, API_WORKERS)[:-1], "hello_app:app"]
    env = {**os.environ, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_BROKER_URL": REDIS,
           "TRAINYARD_HOME": str(scratch)}  # fmt: skip
    default_quota = Settings.model_fields["quota_max_queued"].default
    if 0 < default_quota < max_queued:
        env["TRAINYARD_QUOTA_MAX_QUEUED"] = str(max_queued)
    servers = {
        "api": (api, {**env, "PYTHONPATH": str(ROOT)}),
        "hello": (hello, {**env, "PYTHONPATH": str(scratch)}),
    }
    print(f"gunicorn logs: {scratch}/api.log, {scratch}/hello.log")
    return [
        subprocess.Popen(cmd, env=cmd_env, cwd=ROOT, stdout=(scratch / f"{n}.log").open("w"),
                         stderr=subprocess.STDOUT)
        for n, (cmd, cmd_env) in servers.items()
    ]  # fmt: skip


def measure(targets: list[Target], total: int, clients: int, rounds: int) -> None:
    """Warm every target (connection pools, first-request imports), then interleaved rounds."""
    for target in targets:
        load(target, 2 * clients, clients)
    for _ in range(rounds):
        for target in targets:
            cpu_before = workers_cpu_ms(target.server.pid)
            rate, latencies = load(target, total, clients)
            cpu_after = workers_cpu_ms(target.server.pid)
            target.rates.append(rate)
            target.latencies += latencies
            if cpu_before is not None and cpu_after is not None:
                target.cpu.append((cpu_after - cpu_before) / total)


def report(targets: list[Target], total: int, clients: int, rounds: int) -> None:
    print(
        f"{total} requests per round from {clients} clients, {rounds} interleaved rounds; "
        f"gunicorn -w {API_WORKERS} -k gevent each"
    )
    print(
        f"  {'':38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10}   req/s per round"
    )
    for t in targets:
        cpu = f"{statistics.median(t.cpu):10.2f}" if t.cpu else f"{'-':>10}"
        per_round = " ".join(f"{r:.0f}" for r in t.rates)
        print(
            f"  {t.label:38} {statistics.median(t.rates):7.1f} "
            f"{statistics.median(t.latencies):7.1f} {percentile(t.latencies, 0.99):7.1f} "
            f"{cpu}   {per_round}"
        )
    print("  (CPU ms/req: the server's gunicorn workers, user + system, median over rounds)")
    *hellos, submit = targets
    best = max(hellos, key=lambda t: statistics.median(t.rates))
    for t in hellos:
        ratio = statistics.median(submit.rates) / statistics.median(t.rates)
        print(f"  submit / {t.label}: {ratio:.2f}x")
    ratio = statistics.median(submit.rates) / statistics.median(best.rates)
    print(f"  submit vs hello-world: {ratio:.2f}x (target >= 0.5x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=400, help="requests per round")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    name, url = create_database("trainyard_bench_submit")
    broker = redis.Redis.from_url(REDIS)
    broker.flushdb()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with session_scope(sessions) as session:
            # One user per client: the per-token rate limit counts each on its own, as it
            # would count 20 people submitting at once.
            tokens = [
                create_token(session=session, name=f"bench-{i}", owner=f"bench-{i}")[0]
                for i in range(args.clients)
            ]
        api_port, hello_port = free_port(), free_port()
        # The most one owner can submit: warm-up, then every round (a client may take all).
        jobs = 2 * args.clients + args.rounds * args.submissions
        procs = start_servers(url, api_port, hello_port, max_queued=jobs)
        api_server, hello_server = procs
        api, hello = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{hello_port}"
        # Generous: the API imports torch and dry-runs a model before it answers.
        wait_healthy(api, timeout=180)
        wait_healthy(hello, timeout=180)
        body = {"kind": "train", "spec": demo_spec()}  # the README's LeNet on digits
        targets = [
            Target("hello-world GET /hello", "GET", f"{hello}/hello", 200, hello_server),
            Target("hello-world POST /hello (same body)", "POST", f"{hello}/hello", 202,
                   hello_server, body),
            Target("POST /api/v1/jobs (lenet, digits)", "POST", f"{api}/api/v1/jobs", 202,
                   api_server, body, tokens),
        ]  # fmt: skip
        measure(targets, args.submissions, args.clients, args.rounds)
        report(targets, args.submissions, args.clients, args.rounds)
        with sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Job))
        # The broker is real: every submission left one message on the `train` list.
        print(f"  jobs stored {stored}, messages waiting in Redis 'train' {broker.llen('train')}")
    finally:
        stop_children(procs)
        engine.dispose()
        drop_database(name)
        broker.flushdb()


if __name__ == "__main__":
    main()
