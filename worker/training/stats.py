"""Statistics of many tensors at once, reduced on their device without a host sync.

The device does only the reductions: L2 norm (always: one BLAS dot per tensor, and a NaN
or inf anywhere shows in it), mean and variance (a sum, and the norm or a shifted dot), min /
max in one `aminmax` pass, and nonzero / non-finite counts, each only when selected.
The zero fraction is derived on the host after the step's single copy, so a logged step
costs a handful of kernel launches per tensor and no synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch

# Device columns of reduce(): what the host needs to derive every statistic.
RAW = ("norm", "mean", "var", "min", "max", "nonzero", "nonfinite")


def _flat(t: torch.Tensor) -> torch.Tensor:
    x = t.detach().reshape(-1)
    return x.float() if x.element_size() < 4 else x  # half-precision sums lose too much


def reduce(
    tensors: Sequence[torch.Tensor],
    stats: Collection[str],
    *,
    bounds: bool = False,
    shifted: bool = False,
) -> torch.Tensor:
    """(len(tensors), 7) float64 on the tensors' device; see RAW. Unneeded columns are NaN.

    `bounds` forces min / max (a histogram's range) even when they are not selected.
    `shifted` takes the variance about a value of the tensor itself (see below): needed
    where the mean may dwarf the spread (weights: a LayerNorm gain near 1); gradients and
    activations spread around a small mean, and get it from the norm for free.
    """
    xs = [_flat(t) for t in tensors]
    norm = squared_norms(xs).sqrt()
    nan = torch.full_like(norm, math.nan)
    mean = var = low = high = nonzero = nonfinite = nan
    if "mean" in stats or "std" in stats:
        numel = torch.tensor([x.numel() for x in xs], dtype=torch.float64, device=norm.device)
        mean = torch.stack([x.sum() for x in xs]).double() / numel
        if shifted:
            # E[(x - c)^2] - (E[x] - c)^2 with c = x[0] does not cancel catastrophically
            # when the mean dwarfs the spread, unlike E[x^2] - E[x]^2; it costs a temporary
            # and a dot, where torch.var_mean is ~25x slower on the CPU.
            shift = torch.stack([x[0] for x in xs]).double()
            var = squared_norms([x - x[0] for x in xs]) / numel - (mean - shift).square()
        else:
            var = norm.square() / numel - mean.square()
        var = var.clamp_min(0.0)
    if bounds or "min" in stats or "max" in stats:
        extremes = [torch.aminmax(x) for x in xs]
        low = torch.stack([e.min for e in extremes]).double()
        high = torch.stack([e.max for e in extremes]).double()
    if "zero_frac" in stats:
        nonzero = torch.stack([torch.count_nonzero(x) for x in xs]).double()
    if "nonfinite" in stats:
        # Counted now: clipping or an in-place layer may change the tensor later. x - x is
        # 0 for finite values and NaN for NaN / inf: 5x cheaper than (~isfinite(x)).sum().
        nonfinite = torch.stack([torch.count_nonzero(x - x) for x in xs]).double()
    return torch.stack([norm, mean, var, low, high, nonzero, nonfinite], dim=1)


def squared_norms(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """float64 sums of squares of flat tensors: x . x is a BLAS dot, several times faster
    on the CPU than torch._foreach_norm; a NaN / inf anywhere makes it NaN / inf too."""
    return torch.stack([torch.dot(x, x) for x in xs]).double()


def derive(raw: Sequence[float], numel: int, stats: Collection[str]) -> dict[str, float | None]:
    """Host side: the selected statistics from one row of reduce()."""
    _norm, mean, var, low, high, nonzero, _nonfinite = raw
    values = {
        "mean": mean,
        "std": math.sqrt(var) if var >= 0 else var,  # NaN stays NaN
        "min": low,
        "max": high,
        "zero_frac": (numel - nonzero) / numel,
    }
    return {name: (v if name in stats else None) for name, v in values.items()}


def histograms(tensors: Sequence[torch.Tensor], raw: torch.Tensor, bins: int) -> torch.Tensor:
    """(len(tensors), bins) counts over each tensor's [min, max] from `raw` (sync-free).

    torch.histc would read its range back to the host on CUDA; bucketing against the
    min / max already reduced on the device and scatter-adding keeps the step sync-free.
    Non-finite values are left out.
    """
    rows = []
    for x, (low, high) in zip(tensors, raw[:, 3:5], strict=True):
        flat = _flat(x)
        width = (high - low).clamp_min(torch.finfo(torch.float32).tiny).to(flat.dtype)
        index = ((flat - low.to(flat.dtype)) / width * bins).floor().clamp(0, bins - 1)
        finite = torch.isfinite(flat)
        counts = torch.zeros(bins, dtype=torch.float64, device=flat.device)
        counts.scatter_add_(0, torch.where(finite, index, 0).long(), finite.double())
        rows.append(counts)
    return torch.stack(rows)
