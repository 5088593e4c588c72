"""Fault figures: break one piece of a real cluster at a time and measure what held.

    .venv/bin/python bench/chaos.py [--kill-jobs 10] [--burst 200] [--backlog 300]
                                    [--only kill,term,redis,backlog,duplicate,api,postgres,
                                            fair,gang,disk]
                                    [--seed N] [--keep]

Starts its own throwaway servers (tests/chaos/cluster.py): a PostgreSQL cluster made with
initdb on a free port, a redis-server without persistence on a free port, gunicorn with
the API, `trainyard worker` processes and `trainyard sweeper --every 2`, all with short
timings (lease 10 s, heartbeat 1 s, resend grace 3 s). The shared servers on 5432 / 6379
are never touched. Runs the scenarios of tests/chaos/scenarios.py (the chaos tests run
the same ones with fewer jobs) and prints a markdown table: fault | what must hold |
measured | held. Exits 1 when something did not hold.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The cluster and the scenarios live with the tests (tests/ is not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import scenarios
from tests.chaos.cluster import CannotMount, Cluster
from tests.chaos.scenarios import Outcome

ALL = ("kill", "term", "redis", "backlog", "duplicate", "api", "postgres", "fair", "gang", "disk")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-jobs", type=int, default=10, help="jobs whose worker is killed")
    parser.add_argument("--kill-parallel", type=int, default=2, help="killed jobs at a time")
    parser.add_argument("--redis-jobs", type=int, default=6, help="jobs when Redis dies")
    parser.add_argument("--backlog", type=int, default=300, help="queued jobs, no worker")
    parser.add_argument("--burst", type=int, default=200, help="submissions when gunicorn dies")
    parser.add_argument("--outage", type=float, default=20.0, help="PostgreSQL outage, seconds")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated of {ALL}")
    parser.add_argument("--seed", type=int, default=None, help="replay the random kill steps")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's folder (logs)")
    return parser.parse_args()


def cell(text: str) -> str:
    """Text fit for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # A plain SIGTERM would skip the cleanup; SystemExit runs it (with-blocks, atexit).
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(wanted) - set(ALL)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; choose from {ALL}")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    Outcome.strict_times = True  # here a missed time bound fails its row
    runs: dict[str, Callable[[Cluster], Outcome]] = {
        "kill": lambda c: scenarios.kill_worker(
            c, jobs=args.kill_jobs, parallel=args.kill_parallel, rng=rng
        ),
        "term": lambda c: scenarios.term_worker(c, rng=rng),
        "redis": lambda c: scenarios.kill_redis(c, jobs=args.redis_jobs, workers=2),
        "backlog": lambda c: scenarios.backlog(c, jobs=args.backlog, periods=4),
        "duplicate": scenarios.duplicate_message,
        "api": lambda c: scenarios.api_kill(c, jobs=args.burst, threads=10, kill_after=60),
        "postgres": lambda c: scenarios.postgres_outage(c, outage_s=args.outage),
        "fair": scenarios.fair_share,
        "gang": lambda c: scenarios.kill_gang_node(c, rng=rng),
    }
    outcomes: list[tuple[Outcome, float]] = []
    started = time.monotonic()
    print(f"chaos bench, seed {seed}: {', '.join(wanted)}", file=sys.stderr, flush=True)
    on_cluster = [name for name in wanted if name in runs]
    if on_cluster:
        with Cluster(keep_files=args.keep) as cluster:
            print(
                f"cluster up in {time.monotonic() - started:.0f} s ({cluster.base})",
                file=sys.stderr,
                flush=True,
            )
            for name in on_cluster:
                began = time.monotonic()
                outcome = runs[name](cluster)
                outcomes.append((outcome, time.monotonic() - began))
                print(
                    f"{name}: {'held' if outcome.ok else 'NOT HELD'} "
                    f"({time.monotonic() - began:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if not outcome.ok:
                    print(cluster.failure_report()[-4000:], file=sys.stderr)
    if "disk" in wanted:
        began = time.monotonic()
        try:
            outcome = scenarios.disk_full()
        except CannotMount as exc:
            outcome = Outcome("disk full under TRAINYARD_HOME", "(skipped)", f"skipped: {exc}")
        outcomes.append((outcome, time.monotonic() - began))
        print(f"disk: {'held' if outcome.ok else 'NOT HELD'}", file=sys.stderr, flush=True)
    print(f"\n{len(outcomes)} scenarios in {time.monotonic() - started:.0f} s, seed {seed}\n")
    print("| fault | what must hold | measured | held |")
    print("|---|---|---|---|")
    for outcome, took in outcomes:
        held = "yes" if outcome.ok else "**no**: " + "; ".join(outcome.problems)[:600]
        print(
            f"| {cell(outcome.fault)} | {cell(outcome.must_hold)} | "
            f"{cell(outcome.measured)} ({took:.0f} s) | {cell(held)} |"
        )
    return 0 if all(o.ok for o, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
