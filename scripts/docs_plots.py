"""Regenerate docs/loss.png and docs/grad_flow.png from a real training run.

    .venv/bin/python scripts/docs_plots.py [--out docs] [--epochs 4]

Trains the seed's LeNet on scikit-learn's digits (32x32) in this process with fit(),
keeps the metric and trace rows a worker would write (no database, no broker), and draws
them with the same functions the API serves at /api/v1/jobs/<id>/plots/<name>.png.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from api.charts import PlotData, render
from shared.spec import JobSpec
from worker.training.callbacks import Callback
from worker.training.loop import fit
from worker.training.probes import TraceRow


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """A metric row with the attributes of shared.models.Metric that the plots read."""

    split: str
    name: str
    step: int
    epoch: int | None
    value: float


class Rows(Callback):
    """Keeps what worker.sinks.DatabaseSink would write, in memory."""

    def __init__(self) -> None:
        self.metrics: list[MetricPoint] = []
        self.traces: list[TraceRow] = []  # already in model order within each step
        self.last_step = 0

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        self.metrics.append(MetricPoint("train", "loss", step, epoch, loss))
        self.traces.extend(traces)
        self.last_step = step

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        self.metrics += [MetricPoint(split, n, step, epoch, v) for n, v in values.items()]

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            split, _, name = key.partition("_")  # "val_accuracy" -> ("val", "accuracy")
            # The same naming as the DatabaseSink: per-step train/loss exists at this step.
            name = f"epoch_{name}" if split == "train" else name
            self.metrics.append(MetricPoint(split, name, step, epoch, value))


def spec(epochs: int) -> JobSpec:
    """cli/examples/lenet_digits.json with activation (forward) hooks added."""
    return JobSpec.model_validate(
        {
            "model": {"preset": "lenet"},
            "data": {"dataset": "digits", "image_size": 32, "val_fraction": 0.2},
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
                "loss": "CrossEntropyLoss",
                "seed": 0,
                "device": "cpu",
            },
            "hooks": {"every_n_steps": 5, "kinds": ["backward", "param_grad", "forward"]},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)  # small model: more threads only add overhead
    rows = Rows()
    result = fit(spec(args.epochs), callbacks=[rows])
    data = PlotData(
        job="lenet-digits (docs example)",
        metrics=rows.metrics,
        traces=rows.traces,
        last_step=rows.last_step,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("loss", "grad_flow"):
        path = args.out / f"{name}.png"
        path.write_bytes(render(name, data))
        print(f"wrote {path}")
    print(f"{result.steps} steps, {len(rows.traces)} trace rows, {result.metrics}")


if __name__ == "__main__":
    main()
