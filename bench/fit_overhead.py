"""Steps/s of the service's fit() (hooks on) against a plain PyTorch loop, same model and batches.

    .venv/bin/python bench/fit_overhead.py [--preset lenet] [--steps 200] [--rounds 5]

Variants run interleaved (A B C A B C ...) and the medians are printed, because this
machine is noisy. No database: this measures the training loop and its hooks only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from shared.netspec import build_model
from shared.spec import JobSpec
from worker.training.data import make_datasets, make_loader
from worker.training.loop import fit

SPECS = {
    "lenet": {"model": {"preset": "lenet"}, "data": {"dataset": "digits", "image_size": 32}},
    "neural_network": {
        "model": {"preset": "neural_network"},
        "data": {"dataset": "digits", "image_size": 28},
    },
}


def job(preset: str, steps: int, every: int) -> JobSpec:
    raw = {
        **SPECS[preset],
        "train": {"max_steps": steps, "batch_size": 64, "device": "cpu"},
        "hooks": {"every_n_steps": every},
    }
    raw["data"] = {**raw["data"], "val_fraction": 0.0}
    return JobSpec.model_validate(raw)


def plain_loop(spec: JobSpec) -> float:
    """The seed notes' loop, written out: zero_grad / forward / loss / backward / step."""
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model)
    train = make_datasets(
        spec.data, seed=spec.train.seed, loss=spec.train.loss, data_dir=None
    ).train
    loader = make_loader(train, batch_size=spec.train.batch_size, shuffle=True, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=spec.train.optimizer.lr)
    criterion = nn.CrossEntropyLoss()
    steps = 0
    start = time.perf_counter()
    while steps < (spec.train.max_steps or 0):
        for x, y in loader:
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            loss.item()
            steps += 1
            if steps >= (spec.train.max_steps or 0):
                break
    return steps / (time.perf_counter() - start)


def service_fit(spec: JobSpec) -> float:
    result = fit(spec)
    return result.steps_per_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="lenet", choices=sorted(SPECS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    variants: dict[str, Callable[[], float]] = {
        "plain loop": lambda: plain_loop(job(args.preset, args.steps, 1)),
        "fit, hooks every step": lambda: service_fit(job(args.preset, args.steps, 1)),
        "fit, hooks every 10 steps": lambda: service_fit(job(args.preset, args.steps, 10)),
    }
    for run in variants.values():  # warm-up: imports, allocator, dataset cache
        run()
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            results[name].append(run())
    base = statistics.median(results["plain loop"])
    print(
        f"{args.preset}, batch 64, {args.steps} steps, median of {args.rounds} interleaved rounds"
    )
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:<28} {med:8.1f} steps/s   {med / base:5.2f}x plain")


if __name__ == "__main__":
    main()
