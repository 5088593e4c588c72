"""Reading a million-step series thinned: rows read and time, against one scan of it.

    .venv/bin/python bench/series_read.py [--points 2000000] [--max-points 500] [--rounds 5]

One job with `--points` trace rows of one layer (param_grad norms) and as many metric
points (train/loss), loaded with COPY into a scratch PostgreSQL database
(TRAINYARD_BENCH_PG). Measured, interleaved, medians of --rounds:
  thinned      repository.list_traces / list_metrics with max_points (what the API and
               the plots read): rows returned, and whether the true global min and max and
               the last step are among them
  one scan     SELECT min(v), max(v), count(*) over the same rows: the least any thinning
               that reads the rows themselves must do (the baseline of the ratio)
  old path     the previous read: the first TRAINYARD_MAX_RESULT_ROWS rows (50,000), which
               lose the series' end, thinned in Python afterwards
  plots        what GET .../plots/loss.png and grad_flow.png do: the thinned read at the
               plots' resolution (api.charts.LINE_BUCKETS per series), then the PNG
The rows are rolled up first (what a job's row writer does as it trains,
shared/repository/rollups.py), and that time is printed; `--no-rollups` measures the
reads over the raw rows alone (what a job without rollups would cost).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import create_database, drop_database

from api import charts
from api.downsample import downsample
from shared import repository
from shared.db import make_engine, make_session_factory, session_scope

OLD_LIMIT = 50_000


def load(url: str, points: int) -> tuple[uuid.UUID, float, float]:
    """A job with `points` trace rows and metric points; returns (job id, min, max)."""
    sessions = make_session_factory(make_engine(url))
    with session_scope(sessions) as session:
        job = repository.create_job(session=session, owner="b", kind="train", spec={}, queue="t")
        job_id = job.id
    rng = random.Random(0)
    values = [abs(math.sin(s / 5000)) + rng.random() * 0.1 for s in range(1, points + 1)]
    values[points // 3] = 1e6  # one spike, somewhere in the middle
    values[points // 2] = -1.0  # and one dip
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        traces = io.StringIO()
        metrics = io.StringIO()
        for step, v in enumerate(values, start=1):
            traces.write(f"{job_id}\t{step}\tfc1.weight\tparam_grad\t100\t{v}\n")
            metrics.write(f"{job_id}\ttrain\tloss\t{step}\t1\t{v}\n")
        with cur.copy(
            "COPY layer_traces (job_id, step, layer, kind, numel, norm) FROM STDIN"
        ) as copy:
            copy.write(traces.getvalue())
        with cur.copy("COPY metrics (job_id, split, name, step, epoch, value) FROM STDIN") as copy:
            copy.write(metrics.getvalue())
        cur.execute("ANALYZE layer_traces; ANALYZE metrics")
    return job_id, min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--max-points", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-rollups", action="store_true")
    args = parser.parse_args()
    name, url = create_database("trainyard_series")
    try:
        started = time.perf_counter()
        job_id, lo, hi = load(url, args.points)
        print(f"loaded {args.points:,} trace rows and metric points in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        if not args.no_rollups:
            started = time.perf_counter()
            with session_scope(sessions) as session:
                repository.roll_up(session=session, job_id=job_id, through_step=args.points + 1)
            print(f"rolled up in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {}
        found: dict[str, str] = {}
        for _ in range(args.rounds):
            with sessions() as session:
                for label, read in (
                    ("traces thinned", lambda s: repository.list_traces(
                        session=s, job_id=job_id, layer="fc1.weight", kind="param_grad",
                        limit=OLD_LIMIT, max_points=args.max_points)),
                    ("metrics thinned", lambda s: repository.list_metrics(
                        session=s, job_id=job_id, name="loss", split="train",
                        limit=OLD_LIMIT, max_points=args.max_points)),
                ):  # fmt: skip
                    t0 = time.perf_counter()
                    rows = read(session)
                    times.setdefault(label, []).append(time.perf_counter() - t0)
                    values = [getattr(r, "norm", None) or getattr(r, "value", None) for r in rows]
                    steps = [r.step for r in rows]
                    found[label] = (
                        f"{len(rows):,} rows; global min {'yes' if lo in values else 'NO'}, "
                        f"max {'yes' if hi in values else 'NO'}, "
                        f"last step {'yes' if args.points in steps else 'NO'}"
                    )
                t0 = time.perf_counter()
                session.execute(text(
                    "SELECT min(norm), max(norm), count(*) FROM layer_traces "
                    "WHERE job_id = :j AND layer = 'fc1.weight' AND kind = 'param_grad'"
                ), {"j": job_id}).one()  # fmt: skip
                times.setdefault("one scan", []).append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                old = repository.list_traces(
                    session=session, job_id=job_id, layer="fc1.weight", kind="param_grad",
                    limit=OLD_LIMIT,
                )  # fmt: skip
                thin = downsample(
                    old, max_points=args.max_points, step=lambda r: r.step,
                    series=lambda r: 0, value=lambda r: r.norm,
                )  # fmt: skip
                times.setdefault("old path", []).append(time.perf_counter() - t0)
                for plot, read_rows in (
                    ("loss.png", lambda s: {"metrics": repository.list_metrics(
                        session=s, job_id=job_id, split="train", name="loss",
                        limit=OLD_LIMIT, max_points=charts.LINE_BUCKETS)}),
                    ("grad_flow.png", lambda s: {"traces": repository.list_traces(
                        session=s, job_id=job_id, kind="param_grad",
                        limit=OLD_LIMIT, max_points=charts.LINE_BUCKETS)}),
                ):  # fmt: skip
                    t0 = time.perf_counter()
                    data = charts.PlotData(job=str(job_id), last_step=args.points,
                                           **read_rows(session))  # fmt: skip
                    png = charts.render(plot.removesuffix(".png"), data)
                    times.setdefault(f"plot {plot}", []).append(time.perf_counter() - t0)
                    found[f"plot {plot}"] = f"{len(png):,} bytes of PNG"
                found["old path"] = (
                    f"{len(thin):,} rows; last step read {max(r.step for r in old):,} "
                    f"of {args.points:,}"
                )
        base = statistics.median(times["one scan"])
        print(f"\n{'variant':<18} {'median ms':>10} {'x one scan':>11}  what came back")
        for label, samples in times.items():
            ms = statistics.median(samples) * 1000
            ratio = statistics.median(samples) / base
            print(f"{label:<18} {ms:>10.1f} {ratio:>10.2f}x  {found.get(label, '')}")
        engine.dispose()
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
