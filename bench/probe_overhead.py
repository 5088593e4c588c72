"""Steps/s of the service's training loop with probes, against a plain PyTorch loop.

    .venv/bin/python bench/probe_overhead.py [--steps 200] [--rounds 5] [--device cpu|cuda]

Same model, same batches, same optimizer; the seed's NeuralNetwork MLP and Net (LeNet) at
batch 64. Rates are of the steady loop (from step 10 to the last step), so one-off work
at the start and end of a job (dataset, dry run, final checkpoint) stays out of them.
The service variants run `fit()` with the DatabaseSink, so trace rows are really
written to PostgreSQL (TRAINYARD_BENCH_PG, default the local server; a scratch database is
created and dropped). Variants run interleaved (A B C ... A B C ...) and medians are
printed, because this machine is noisy. Ratios are against the plain loop of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import torch
from torch import nn

from cli.migrate import upgrade
from shared import repository
from shared.config import Settings
from shared.db import make_engine, make_session_factory, session_scope
from shared.net.build import build_model
from shared.spec import JobSpec
from worker.sinks import DatabaseSink
from worker.training.callbacks import Callback
from worker.training.data import make_datasets, make_loader
from worker.training.loop import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # a sibling module: the benches run as `python bench/<name>.py`

SERVER = os.environ.get("TRAINYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
MODELS = {"mlp": ("neural_network", [1, 28, 28]), "lenet": ("lenet", [1, 32, 32])}
ALL_KINDS = ["forward_pre", "forward", "backward", "param_grad", "weights"]
VARIANTS: dict[str, dict[str, Any]] = {
    "fit, no probes": {"kinds": []},
    "backward+param_grad every step (defaults)": {"kinds": ["backward", "param_grad"]},
    "  same, full_every 1 (every stat every step)": {
        "kinds": ["backward", "param_grad"],
        "full_every": 1,
    },
    "  same, no update_ratio": {
        "kinds": ["backward", "param_grad"],
        "stats": ["norm", "mean", "std", "max"],
    },
    "  same, stats: norm only": {"kinds": ["backward", "param_grad"], "stats": ["norm"]},
    "all kinds every step": {"kinds": ALL_KINDS},
    "all kinds every 10 steps": {"kinds": ALL_KINDS, "every_n_steps": 10},
}


def job(preset: str, shape: list[int], steps: int, device: str, hooks: dict[str, Any]) -> JobSpec:
    """One epoch of `steps` batches of 64 synthetic samples, no validation split."""
    return JobSpec.model_validate(
        {
            "model": {"preset": preset},
            "data": {
                "dataset": "synthetic",
                "input_shape": shape,
                "size": 64 * steps,
                "val_fraction": 0.0,
            },
            "train": {"epochs": 1, "batch_size": 64, "device": device},
            "hooks": hooks,
        }
    )


WARMUP = 10  # steps left out of every rate: allocator and caches settle first


def rate(stamps: list[float]) -> float:
    """Steps/s between the end of step WARMUP and the last step (the steady loop)."""
    return (len(stamps) - WARMUP) / (stamps[-1] - stamps[WARMUP - 1])


class Stamps(Callback):
    """When each step ended: epoch-end work (evaluation, checkpoints) stays out of the rate."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[Any]) -> None:
        self.times.append(time.perf_counter())


def plain_loop(
    spec: JobSpec, device: str, *, reference: bool = False, peer: str | None = None
) -> float:
    """The seed's loop written out: zero_grad / forward / loss / backward / step.

    `reference` adds the issue's lean in-process reference: one torch._foreach_norm over
    every gradient and one host transfer per step, no I/O (norms only, nothing stored).
    `peer` attaches one of the peers' gradient logging (bench/peers.py) instead.
    """
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model).to(device)
    train = make_datasets(spec.data, seed=spec.train.seed, loss=spec.train.loss, data_dir=None)
    loader = make_loader(train.train, batch_size=64, shuffle=True, seed=spec.train.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.train.optimizer.lr)
    criterion = nn.CrossEntropyLoss()
    logger = peers.PEERS[peer](model) if peer else None
    stamps = []
    for step, (x, y) in enumerate(loader, start=1):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        if reference:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            torch.stack(torch._foreach_norm(grads)).cpu()
        if logger is not None:
            logger.after_backward(model, step, loss.item())
        optimizer.step()
        loss.item()
        stamps.append(time.perf_counter())
    if logger is not None:
        logger.close()
    return rate(stamps)


class Database:
    """A scratch PostgreSQL database at head, with one job row per measured run."""

    def __init__(self) -> None:
        self.name = f"trainyard_bench_{os.getpid()}"
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        url = f"{SERVER.replace('postgresql://', 'postgresql+psycopg://')}/{self.name}"
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)
        self.settings = Settings(database_url=url)
        self.rows = 0

    def sink(self) -> DatabaseSink:
        with session_scope(self.sessions) as session:
            job = repository.create_job(
                session=session, owner="bench", kind="train", spec={}, queue="train"
            )
            repository.claim_job(
                session=session, job_id=job.id, worker="bench", lease_seconds=600, max_attempts=1
            )
        return DatabaseSink(
            sessions=self.sessions, job_id=job.id, worker="bench", settings=self.settings
        )

    def drop(self) -> None:
        self.engine.dispose()
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def service_fit(spec: JobSpec, db: Database) -> float:
    """fit() with the real DatabaseSink; steps/s of the training loop itself."""
    stamps = Stamps()
    fit(spec, callbacks=[db.sink(), stamps])
    return rate(stamps.times)


def trace_rows(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM layer_traces").scalar() or 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="mlp,lenet")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    db = Database()
    try:
        for key in args.models.split(","):
            preset, shape = MODELS[key]
            plain = job(preset, shape, args.steps, args.device, {})
            runs: dict[str, Callable[[], float]] = {
                "plain loop": lambda plain=plain: plain_loop(plain, args.device),  # type: ignore[misc]
                "reference: _foreach_norm + 1 copy": lambda plain=plain: plain_loop(  # type: ignore[misc]
                    plain, args.device, reference=True
                ),
            }
            if peers.available():  # the bench extra: pip install -e '.[bench]'
                for label in peers.PEERS:
                    runs[label] = lambda plain=plain, label=label: plain_loop(  # type: ignore[misc]
                        plain, args.device, peer=label
                    )
            else:
                print("wandb / tensorboard not installed: peer rows left out")
            for name, hooks in VARIANTS.items():
                spec = job(preset, shape, args.steps, args.device, hooks)
                runs[name] = lambda spec=spec: service_fit(spec, db)  # type: ignore[misc]
            for run in runs.values():  # warm-up: imports, allocator, kernels
                run()
            results: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    results[name].append(run())
            base = statistics.median(results["plain loop"])
            print(
                f"\n{key} ({preset}) on {args.device}, batch 64, {args.steps} steps, "
                f"medians of {args.rounds} interleaved rounds"
            )
            for name, values in results.items():
                med = statistics.median(values)
                print(f"  {name:<44} {med:8.1f} steps/s   {med / base:5.2f}x plain")
        print(f"\ntrace rows written to PostgreSQL: {trace_rows(db):,}")
    finally:
        db.drop()


if __name__ == "__main__":
    main()
