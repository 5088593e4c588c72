"""Which module hooks record statistics, on which layers, how often, and what they watch for."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from shared.spec.base import Strict
from shared.spec.model import Glob

HookKind = Literal["forward_pre", "forward", "backward", "param_grad", "weights"]
# In hook order; also the values of layer_traces.kind (its CHECK constraint lists them).
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)
Stat = Literal["norm", "mean", "std", "min", "max", "zero_frac", "nonfinite", "update_ratio"]
ALL_STATS: tuple[Stat, ...] = (
    "norm", "mean", "std", "min", "max", "zero_frac", "nonfinite", "update_ratio",
)  # fmt: skip


def _default_kinds() -> list[HookKind]:
    return ["backward", "param_grad"]


# Without `stats`, each kind records what tells most about it, and no more: every extra
# statistic is another pass over the tensor on every logged step.
DEFAULT_STATS: dict[str, frozenset[str]] = {
    "forward_pre": frozenset({"norm", "mean", "std", "min", "max", "zero_frac", "nonfinite"}),
    "forward": frozenset({"norm", "mean", "std", "min", "max", "zero_frac", "nonfinite"}),
    # A NaN / inf in a gradient or weight already shows in its norm; counting is a pass.
    "backward": frozenset({"norm", "mean", "std", "max"}),
    "param_grad": frozenset({"norm", "mean", "std", "max", "update_ratio"}),
    "weights": frozenset({"norm", "mean", "std", "min", "max"}),
}


def stats_for(kind: str, chosen: list[Stat] | None) -> frozenset[str]:
    """The statistics recorded for `kind`: the spec's choice, or the kind's default."""
    return frozenset(chosen) if chosen else DEFAULT_STATS[kind]


class AlertSpec(Strict):
    """Rules on the recorded statistics; a rule that fires adds a job event (once per
    layer), and with `stop` it also ends the job as `pruned`, naming the layer and step
    (a non-finite loss then prunes too, instead of failing the job)."""

    vanishing_below: float | None = Field(default=None, gt=0.0, le=1e6)
    vanishing_steps: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="a layer's gradient norm must stay below vanishing_below for this many "
        "logged steps in a row",
    )
    exploding_above: float | None = Field(default=None, gt=0.0, le=1e12)
    dead_above: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="a layer's output with a larger fraction of zeros (zero_frac) is dead "
        "(ReLUs that no longer fire); needs the forward kind",
    )
    stop: bool = Field(default=False, description="end the job as pruned when a rule fires")

    @model_validator(mode="after")
    def _ordered(self) -> AlertSpec:
        low, high = self.vanishing_below, self.exploding_above
        if low is not None and high is not None and low >= high:
            raise ValueError("vanishing_below must be below exploding_above")
        return self


class HookSpec(Strict):
    """Module hooks, as the seed notes describe them, recording per-layer statistics.

    `forward_pre`: each leaf module's input (forward pre-hooks). `forward`: each leaf
    module's output. `backward`: the gradient w.r.t. the output of each module that owns
    parameters (forward hook + `tensor.register_hook`, so in-place layers work).
    `param_grad`: each trainable parameter's gradient after backward, plus the update
    ratio ||dw|| / ||w|| of the optimizer step. `weights`: each parameter (frozen too).

    Statistics are tiered: a logged step records each tensor's L2 norm (a NaN or inf
    anywhere shows in it); step 1 and every `full_every`-th logged step (steps that are
    multiples of every_n_steps * full_every) record every selected statistic.
    """

    every_n_steps: int = Field(default=1, ge=1, le=1_000_000)
    full_every: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="every n-th logged step records every selected statistic (and the "
        "update ratio and histograms); the logged steps between record norms only",
    )
    kinds: list[HookKind] = Field(default_factory=_default_kinds)
    layers: list[Glob] = Field(
        default_factory=list, max_length=64, description="module / parameter name globs; all"
    )
    stats: list[Stat] | None = Field(
        default=None, min_length=1, description="the same statistics for every kind"
    )
    histogram_bins: int = Field(default=0, ge=0, le=256, description="0: no histograms")
    histogram_kinds: list[HookKind] = Field(default_factory=list)
    per_rank: bool = Field(
        default=False,
        description="distributed jobs: also each rank's own statistics of layer inputs, "
        "outputs and output gradients (rank_traces)",
    )
    keep_raw_steps: int | None = Field(
        default=None,
        ge=0,
        le=2_147_483_647,
        description="retention: raw trace rows older than this many steps are thinned to "
        "the first, lowest and highest point of every statistic per 100 steps (what "
        "thinned reads and plots show stays the same); null keeps every row",
    )
    on_nonfinite: Literal["fail", "skip_step"] = "fail"
    alerts: AlertSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HookSpec:
        if self.histogram_kinds and not self.histogram_bins:
            raise ValueError("histogram_kinds needs histogram_bins > 0")
        if self.histogram_bins and not self.histogram_kinds:
            self.histogram_kinds = list(self.kinds)
        missing = set(self.histogram_kinds) - set(self.kinds)
        if missing:
            raise ValueError(f"histogram_kinds {sorted(missing)} are not in kinds")
        if self.alerts is not None and self.alerts.dead_above is not None:
            if "forward" not in self.kinds:
                raise ValueError("alerts.dead_above needs 'forward' in kinds")
            if self.stats is not None and "zero_frac" not in self.stats:
                raise ValueError("alerts.dead_above needs 'zero_frac' in stats")
        return self
