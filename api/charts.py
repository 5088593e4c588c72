"""PNG plots of a job's metrics and hook traces, rendered headless.

Each figure is a `Figure` on its own Agg canvas: no pyplot, no global figure registry, so
request threads can render at once. Inputs are any rows with the attributes of
`shared.models.Metric` / `LayerTrace` (a worker's `TraceRow` too); long series are thinned
first (min / max kept, so spikes survive) and the gradient heatmap buckets steps.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from api.downsample import downsample
from shared.errors import NoData
from shared.net.order import LayerOrder

# Bump when a plot's look changes: it is part of the ETag, so clients fetch the new look.
VERSION = "1"
SIZE_INCHES, DPI = (9.0, 5.0), 100  # 900 x 500 px
LINE_BUCKETS = 600  # per series; downsample keeps up to 3 points per bucket
MAX_COLUMNS = 400  # heatmap step columns
MAX_LABELLED_LINES = 24  # zero_frac: more layers than this are drawn grey, unlabelled
ZERO_COLOR, NONFINITE_COLOR = "black", "red"  # neither occurs in viridis

R = TypeVar("R", "MetricLike", "TraceLike")  # a row of either kind


class MetricLike(Protocol):
    """What the plots read of a metric point (shared.models.Metric has it)."""

    @property
    def split(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def step(self) -> int: ...
    @property
    def value(self) -> float: ...


class TraceLike(Protocol):
    """What the plots read of a trace row (LayerTrace and the worker's TraceRow have it)."""

    @property
    def step(self) -> int: ...
    @property
    def layer(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def norm(self) -> float: ...
    @property
    def zero_frac(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class PlotData:
    """Everything a plot may draw; each plot picks the rows it needs."""

    job: str  # named in titles and in the "nothing to plot" message
    metrics: Sequence[MetricLike] = ()
    traces: Sequence[TraceLike] = ()
    # The model's order of module / parameter names: rows from the database come back
    # sorted by name, so their first appearance is not the model's order.
    layer_order: LayerOrder = field(default_factory=LayerOrder)
    last_step: int | None = None  # the job's progress: the lr step plot extends to it
    truncated: bool = False  # the rows were capped at the result-row limit


def render(name: str, data: PlotData) -> bytes:
    """The named plot as PNG bytes; NoData when there is nothing to draw."""
    return PLOTS[name].draw(data)


# --- metric plots ---------------------------------------------------------------------


def loss_png(data: PlotData) -> bytes:
    """Train loss per step, with each epoch's mean train loss and validation loss on top."""
    steps = _series(data.metrics, "train", "loss")
    epochs = _series(data.metrics, "train", "epoch_loss")
    val = _series(data.metrics, "val", "loss")
    if not (steps or epochs or val):
        raise NoData(
            f"no loss metrics for job {data.job} yet: a training job writes train/loss "
            "from its first step; try again once it is running"
        )
    fig, ax = _figure(f"Loss · job {data.job}", data)
    if steps:
        x, y, bad = _xy(_thin(steps, _metric_value))
        ax.plot(x, y, lw=1.0, color="C0", alpha=0.85, label=_bad_label("train loss (step)", bad))
    if epochs:
        x, y, bad = _xy(epochs)
        ax.plot(x, y, "o", ms=7, color="C1", label=_bad_label("train loss (epoch mean)", bad))
    if val:
        x, y, bad = _xy(val)
        ax.plot(x, y, "s--", ms=7, color="C2", label=_bad_label("validation loss", bad))
    _log_if_wide(ax, [p.value for p in (*steps, *epochs, *val)])
    ax.set(xlabel="step", ylabel="loss")
    ax.legend(loc="best")
    return _png(fig)


def accuracy_png(data: PlotData) -> bytes:
    """Accuracy of every evaluated split (validation, test) at the step it was measured."""
    splits = {m.split for m in data.metrics if m.name == "accuracy" and m.split != "train"}
    if not splits:
        raise NoData(
            f"no accuracy metrics for job {data.job}: val/accuracy is written at each epoch "
            "end of a classification job with data.val_fraction > 0 (test/accuracy at the "
            "end, with a test split)"
        )
    fig, ax = _figure(f"Accuracy · job {data.job}", data)
    names = {"val": "validation", "test": "test"}
    for i, split in enumerate(sorted(splits, key=lambda s: (s != "val", s))):
        x, y, _ = _xy(_series(data.metrics, split, "accuracy"))
        last = f" (last {y[-1]:.1%})" if y and math.isfinite(y[-1]) else ""
        ax.plot(x, y, "o-", ms=7, color=f"C{i + 2}", label=f"{names.get(split, split)}{last}")
    ax.set_ylim(-0.02, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set(xlabel="step", ylabel="accuracy")
    ax.legend(loc="lower right")
    return _png(fig)


def lr_png(data: PlotData) -> bytes:
    """The learning rate as a step plot: recorded when it changes, held until the next."""
    points = _series(data.metrics, "train", "lr")
    if not points:
        raise NoData(
            f"no learning-rate metrics for job {data.job} yet: train/lr is written at the "
            "first training step and whenever the rate changes"
        )
    fig, ax = _figure(f"Learning rate · job {data.job}", data)
    x, y, _ = _xy(_thin(points, _metric_value))
    ax.plot(x, y, "o", ms=4, color="C4", label="_changes")
    if data.last_step is not None and data.last_step > x[-1]:
        x, y = [*x, data.last_step], [*y, y[-1]]  # the last rate holds until now
    ax.step(x, y, where="post", color="C4", lw=1.5, label="learning rate")
    _log_if_wide(ax, y)
    ax.set(xlabel="step", ylabel="learning rate")
    ax.legend(loc="upper right")
    return _png(fig)


# --- trace plots ----------------------------------------------------------------------


def grad_flow_png(data: PlotData) -> bytes:
    """Heatmap of log10 gradient norms: layers (model order, top down) x steps.

    A vanishing layer is a dark row, an exploding one a bright one; zero and NaN / inf
    norms are masked out of the colour scale and drawn in colours of their own.
    """
    kind = "param_grad" if any(t.kind == "param_grad" for t in data.traces) else "backward"
    rows = [t for t in data.traces if t.kind == kind]
    if not rows:
        raise NoData(
            f"no gradient traces for job {data.job}: submit with hooks.kinds including "
            "'backward' or 'param_grad'"
        )
    layers = ordered_layers(rows, data.layer_order)
    row_of = {layer: i for i, layer in enumerate(layers)}
    edges, column_of = _columns(sorted({t.step for t in rows}))
    shape = (len(layers), len(edges) - 1)
    log_sum, count = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    zero, nonfinite = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    for t in rows:
        cell = row_of[t.layer], column_of[t.step]
        if not math.isfinite(t.norm):
            nonfinite[cell] = True
        elif t.norm <= 0.0:
            zero[cell] = True
        else:
            log_sum[cell] += math.log10(t.norm)
            count[cell] += 1
    # A bucket's colour is its geometric mean norm; one non-finite norm marks the whole
    # bucket, and "zero" only a bucket with nothing but zeros, so neither hides in a mean.
    mean = log_sum / np.maximum(count, 1)
    logs = np.ma.masked_array(mean, mask=(count == 0) | nonfinite)
    flags = np.where(nonfinite, 2, np.where(zero & (count == 0), 1, 0))

    what = "parameter" if kind == "param_grad" else "layer output"
    fig, ax = _figure(f"Gradient flow ({kind} norms) · job {data.job}", data)
    ax.grid(False)  # grid lines would read as cell borders
    y_edges = np.arange(len(layers) + 1) - 0.5
    cmap = colormaps["viridis"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    low, high = _color_range(logs)
    mesh = ax.pcolormesh(edges, y_edges, logs, cmap=cmap, vmin=low, vmax=high, shading="flat")
    special = ListedColormap([ZERO_COLOR, NONFINITE_COLOR]).with_extremes(bad=(0, 0, 0, 0))
    masked_flags = np.ma.masked_equal(flags, 0)
    ax.pcolormesh(edges, y_edges, masked_flags, cmap=special, vmin=1, vmax=2, shading="flat")
    fig.colorbar(mesh, ax=ax, label="log10 gradient norm", pad=0.01)
    ax.set_ylim(len(layers) - 0.5, -0.5)  # the first layer on top
    _layer_ticks(ax, layers)
    ax.set(xlabel="step", ylabel=f"{what} (model order)")
    ax.legend(
        handles=[
            Patch(facecolor=ZERO_COLOR, label="norm 0 (no gradient)"),
            Patch(facecolor=NONFINITE_COLOR, label="NaN / inf norm"),
            Patch(facecolor="white", edgecolor="gray", label="not recorded"),
        ],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.1),
        ncols=3,
        frameon=False,
        fontsize="small",
    )
    return _png(fig)


def zero_frac_png(data: PlotData) -> bytes:
    """Each layer's fraction of exactly-zero outputs over steps: dead ReLUs climb to 1."""
    rows = [t for t in data.traces if t.kind == "forward" and t.zero_frac is not None]
    if not rows:
        raise NoData(
            f"no activation traces with zero_frac for job {data.job}: submit with hooks.kinds "
            "including 'forward' (and 'zero_frac' in hooks.stats when stats are chosen)"
        )
    by_layer: dict[str, list[TraceLike]] = defaultdict(list)
    for t in rows:
        by_layer[t.layer].append(t)
    layers = ordered_layers(rows, data.layer_order)
    # Layers that never output a zero (convolutions, linears) would only pile up at 0.
    shown = [name for name in layers if any(t.zero_frac for t in by_layer[name])] or layers
    ranked = sorted(shown, key=lambda n: -_mean_zero_frac(by_layer[n]))
    labelled = set(ranked[:MAX_LABELLED_LINES])
    fig, ax = _figure(f"Activation zero fraction (dead ReLUs) · job {data.job}", data)
    palette = colormaps["tab10" if len(labelled) <= 10 else "tab20"]
    for i, name in enumerate(n for n in shown if n in labelled):
        series = _thin(sorted(by_layer[name], key=lambda t: t.step), value=_zero_frac)
        ax.plot([t.step for t in series], [_zero_frac(t) for t in series],
                lw=1.5, color=palette(i % palette.N), label=name)  # fmt: skip
    for name in (n for n in shown if n not in labelled):
        series = _thin(sorted(by_layer[name], key=lambda t: t.step), value=_zero_frac)
        ax.plot([t.step for t in series], [_zero_frac(t) for t in series], lw=0.8,
                color="lightgray", label="_other")  # fmt: skip
    hidden = len(layers) - len(shown)
    title = "layer" + (f" ({hidden} always 0 not shown)" if hidden else "")
    if len(shown) > len(labelled):
        title += f"\n{len(shown) - len(labelled)} more in grey"
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set(xlabel="step", ylabel="outputs exactly 0")
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
              ncols=1 if len(labelled) <= 16 else 2)  # fmt: skip
    return _png(fig)


@dataclass(frozen=True, slots=True)
class Chart:
    """One plot: how it is drawn, and which rows it reads (so a request loads only those)."""

    draw: Callable[[PlotData], bytes]
    # (split, name) of each metric series it draws; split None: every split.
    metrics: tuple[tuple[str | None, str], ...] = ()
    # Trace kinds it can draw, in preference order: the first kind with rows wins.
    trace_kinds: tuple[str, ...] = ()
    # The statistic its trace rows are thinned by (rows without it are left out: steps
    # that recorded norms only, see hooks.full_every).
    trace_stat: str = "norm"


PLOTS: dict[str, Chart] = {
    "loss": Chart(loss_png, metrics=(("train", "loss"), ("train", "epoch_loss"), ("val", "loss"))),
    "accuracy": Chart(accuracy_png, metrics=((None, "accuracy"),)),
    "lr": Chart(lr_png, metrics=(("train", "lr"),)),
    "grad_flow": Chart(grad_flow_png, trace_kinds=("param_grad", "backward")),
    "zero_frac": Chart(zero_frac_png, trace_kinds=("forward",), trace_stat="zero_frac"),
}


def ordered_layers(rows: Sequence[TraceLike], order: LayerOrder) -> list[str]:
    """Distinct layers of `rows` in model order, unknown ones after in row order."""
    first: dict[str, int] = {}
    for t in rows:
        first.setdefault(t.layer, len(first))
    return sorted(first, key=lambda layer: (*order.key(layer), first[layer]))


# --- helpers --------------------------------------------------------------------------


def _figure(title: str, data: PlotData) -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself: the figure renders without pyplot
    ax = fig.add_subplot()
    if data.truncated:
        title += "\n(first rows only: the job has more than TRAINYARD_MAX_RESULT_ROWS)"
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _series(metrics: Sequence[MetricLike], split: str, name: str) -> list[MetricLike]:
    return sorted((m for m in metrics if m.split == split and m.name == name), key=_step)


def _step(row: MetricLike | TraceLike) -> int:
    return row.step


def _metric_value(row: MetricLike) -> float:
    return row.value


def _zero_frac(row: TraceLike) -> float:
    return math.nan if row.zero_frac is None else row.zero_frac


def _mean_zero_frac(rows: list[TraceLike]) -> float:
    return sum(t.zero_frac or 0.0 for t in rows) / len(rows)


def _thin(rows: Sequence[R], value: Callable[[R], float]) -> list[R]:
    """One series thinned to about 3 x LINE_BUCKETS points, each bucket's min and max kept."""
    return downsample(rows, max_points=LINE_BUCKETS, step=_step, series=lambda _: 0, value=value)


def _xy(points: Sequence[MetricLike]) -> tuple[list[int], list[float], int]:
    """Steps and values; NaN / inf become gaps (NaN) and are counted for the legend."""
    values = [p.value if math.isfinite(p.value) else math.nan for p in points]
    return [p.step for p in points], values, sum(v != v for v in values)


def _bad_label(label: str, bad: int) -> str:
    return f"{label}, {bad} non-finite not drawn" if bad else label


def _log_if_wide(ax: Axes, values: Sequence[float]) -> None:
    """Log scale when positive values span over two decades (a linear axis flattens them)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")


def _columns(steps: list[int]) -> tuple[np.ndarray, dict[int, int]]:
    """Column edges in step units and each step's column: one per logged step, or buckets."""
    if len(steps) <= MAX_COLUMNS:
        s = np.asarray(steps, dtype=float)
        gap = np.diff(s)
        first, last = (gap[0], gap[-1]) if len(gap) else (1.0, 1.0)
        edges = np.concatenate(([s[0] - first / 2], (s[:-1] + s[1:]) / 2, [s[-1] + last / 2]))
        return edges, {step: i for i, step in enumerate(steps)}
    edges = np.linspace(steps[0], steps[-1] + 1, MAX_COLUMNS + 1)
    index = np.searchsorted(edges, steps, side="right") - 1
    return edges, {s: int(min(i, MAX_COLUMNS - 1)) for s, i in zip(steps, index, strict=True)}


def _color_range(logs: np.ma.MaskedArray) -> tuple[float, float]:
    if logs.count() == 0:
        return -1.0, 1.0
    low, high = float(logs.min()), float(logs.max())
    return (low - 0.5, high + 0.5) if high - low < 1e-9 else (low, high)


def _layer_ticks(ax: Axes, layers: list[str]) -> None:
    every = max(1, math.ceil(len(layers) / 40))  # at most ~40 readable labels
    ticks = list(range(0, len(layers), every))
    ax.set_yticks(ticks, [layers[i] for i in ticks], fontsize=8 if len(layers) > 15 else 9)
