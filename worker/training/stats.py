"""Statistics of many tensors at once, reduced on their device without a host sync.

The device does only the reductions: L2 norm (always: it is the cheapest and tells
whether anything is non-finite; a dot product per tensor), sum, min / max and the
nonzero count when selected.
Everything derived from them (mean, population std, zero fraction) is computed on the
host after the step's single copy, so a logged step costs a handful of kernel launches
for all its tensors together rather than a dozen per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch

# Device columns of reduce(): what the host needs to derive every statistic.
RAW = ("norm", "sum", "min", "max", "nonzero")


def _flat(t: torch.Tensor) -> torch.Tensor:
    x = t.detach().reshape(-1)
    return x.float() if x.element_size() < 4 else x  # half-precision sums lose too much


def reduce(tensors: Sequence[torch.Tensor], stats: Collection[str]) -> torch.Tensor:
    """(len(tensors), 5) float64 on the tensors' device; see RAW. Unneeded columns are NaN."""
    xs = [_flat(t) for t in tensors]
    norm = squared_norms(xs).sqrt()
    nan = torch.full_like(norm, math.nan)
    total = low = high = nonzero = nan
    if "mean" in stats or "std" in stats:
        total = torch.stack([x.sum() for x in xs]).double()
    if "min" in stats or "max" in stats:
        pairs = [torch.aminmax(x) for x in xs]
        low = torch.stack([p.min for p in pairs]).double()
        high = torch.stack([p.max for p in pairs]).double()
    if "zero_frac" in stats:
        nonzero = torch.stack([torch.count_nonzero(x) for x in xs]).double()
    return torch.stack([norm, total, low, high, nonzero], dim=1)


def squared_norms(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """float64 sums of squares of flat tensors: x . x is a BLAS dot, several times faster
    on the CPU than torch._foreach_norm; a NaN / inf anywhere makes it NaN / inf too."""
    return torch.stack([torch.dot(x, x) for x in xs]).double()


def derive(raw: Sequence[float], numel: int, stats: Collection[str]) -> dict[str, float | None]:
    """Host side: the selected statistics from one row of reduce()."""
    norm, total, low, high, nonzero = raw
    mean = total / numel
    # E[x^2] - E[x]^2 with E[x^2] from the norm; clamped against rounding below zero.
    std = math.sqrt(max(norm * norm / numel - mean * mean, 0.0)) if math.isfinite(norm) else norm
    values = {
        "mean": mean,
        "std": std,
        "min": low,
        "max": high,
        "zero_frac": (numel - nonzero) / numel,
    }
    return {name: (v if name in stats else None) for name, v in values.items()}


def count_nonfinite(t: torch.Tensor) -> int:
    """Exact count of NaN / inf values (the rare path: one sync)."""
    return int((~torch.isfinite(t.detach())).sum().item())


def histograms(tensors: Sequence[torch.Tensor], bins: int) -> torch.Tensor:
    """(len(tensors), bins) counts over each tensor's own [min, max] (torch.histc)."""
    # histc with min = max = 0 takes the range from the data on the device (no sync);
    # non-finite values would make that range infinite, so they are counted as 0 here.
    rows = [torch.histc(torch.nan_to_num(_flat(t).float(), 0.0, 0.0, 0.0), bins) for t in tensors]
    return torch.stack(rows).double()
