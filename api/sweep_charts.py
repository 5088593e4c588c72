"""PNG plots of a sweep, drawn from its trial rows (matplotlib without pyplot: the API
renders in request threads).

    parallel  parallel coordinates: one axis per parameter (log axes for log_uniform and
              log int ranges), one line per trial with a value, coloured by the metric
    history   each trial's value by trial number, pruned / failed trials marked, and the
              best value so far
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from shared.errors import NoData
from shared.models import SweepTrial, TrialState
from shared.spec.sweep import Choice, IntRange, LogUniform, SweepSpec

SIZE_INCHES, DPI = (9.0, 5.0), 100


def render(name: str, spec: SweepSpec, trials: Sequence[SweepTrial]) -> bytes:
    """The named plot as PNG bytes; NoData (404) before any trial has a value."""
    return PLOTS[name](spec, trials)


def _valued(trials: Sequence[SweepTrial]) -> list[SweepTrial]:
    found = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    if not found:
        raise NoData("no trial of this sweep has recorded its metric yet")
    return found


def _figure(title: str) -> Figure:
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _axis_position(spec: SweepSpec, path: str) -> Callable[[object], float]:
    """Where a parameter's value sits on its axis, from 0 (bottom) to 1 (top)."""
    dist = spec.space[path]
    if isinstance(dist, Choice):
        labels = [repr(v) for v in dist.choice]
        top = max(len(labels) - 1, 1)
        return lambda v: labels.index(repr(v)) / top if repr(v) in labels else 0.5
    low, high = (
        dist.log_uniform if isinstance(dist, LogUniform) else
        dist.int if isinstance(dist, IntRange) else dist.uniform
    )  # fmt: skip
    log = isinstance(dist, LogUniform) or (isinstance(dist, IntRange) and dist.log)
    if log:
        low, high = math.log10(low), math.log10(high)

    def position(value: object) -> float:
        number = float(value)  # type: ignore[arg-type]
        number = math.log10(number) if log else number
        return (number - low) / (high - low)

    return position


def parallel_png(spec: SweepSpec, trials: Sequence[SweepTrial]) -> bytes:
    valued = _valued(trials)
    paths = list(spec.space)
    fig = _figure(f"Trials by parameter, coloured by {spec.metric} ({spec.goal})")
    ax = fig.add_subplot()
    values = [t.value for t in valued if t.value is not None]
    norm = Normalize(min(values), max(values) if max(values) > min(values) else min(values) + 1)
    cmap = colormaps["viridis" if spec.goal == "maximize" else "viridis_r"]
    positions = [_axis_position(spec, path) for path in paths]
    xs = [*range(len(paths)), len(paths)]
    for trial in valued:
        assert trial.value is not None
        ys = [pos(trial.params.get(path)) for pos, path in zip(positions, paths, strict=True)]
        ys.append(norm(trial.value))
        ax.plot(xs, ys, color=cmap(norm(trial.value)), alpha=0.8, linewidth=1.5)
    for x in xs:
        ax.axvline(x, color="0.6", linewidth=0.8)
    ax.set_xticks(xs, [*paths, spec.metric], rotation=15, fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_ylim(-0.05, 1.05)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=spec.metric)
    return _png(fig)


MARKERS = {TrialState.COMPLETE: "o", TrialState.PRUNED: "x", TrialState.FAILED: "s"}


def history_png(spec: SweepSpec, trials: Sequence[SweepTrial]) -> bytes:
    _valued(trials)
    fig = _figure(f"{spec.metric} by trial ({spec.goal})")
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    for state, marker in MARKERS.items():
        points = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=str(state))
    best: list[tuple[int, float]] = []
    pick = max if spec.goal == "maximize" else min
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            so_far = trial.value if not best else pick(best[-1][1], trial.value)
            best.append((trial.number, so_far))
    if best:
        ax.step(*zip(*best, strict=True), where="post", color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.metric)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


PLOTS: dict[str, Callable[[SweepSpec, Sequence[SweepTrial]], bytes]] = {
    "parallel": parallel_png,
    "history": history_png,
}
