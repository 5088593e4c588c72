"""Statistics of many tensors at once, computed on their device without a host sync.

Each tensor becomes one row [norm, mean, std, min, max, zeros, nonfinite]: float64 so
that counts stay exact. Only the selected statistics cost work: the L2 norm is always
computed (it is the cheapest and tells whether anything is non-finite), the rest only
when asked. Unselected entries are NaN and reach the database as NULL.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

COLUMNS = ("norm", "mean", "std", "min", "max", "zeros", "nonfinite")
# nonfinite = -1 means "some, count not taken" (norm is inf/NaN); the recorder counts
# exactly only on that rare path, while it still holds the tensor.
SOME_NONFINITE = -1.0


def _flat(t: torch.Tensor) -> torch.Tensor:
    x = t.detach().reshape(-1)
    return x.float() if x.element_size() < 4 else x  # half-precision sums lose too much


def tensor_stats(tensors: Sequence[torch.Tensor], stats: Collection[str]) -> torch.Tensor:
    """(len(tensors), 7) float64 statistics on the tensors' device; see COLUMNS."""
    xs = [_flat(t) for t in tensors]
    device = xs[0].device
    nan = torch.full((len(xs),), float("nan"), dtype=torch.float64, device=device)
    numel = torch.tensor([x.numel() for x in xs], dtype=torch.float64, device=device)
    norm = torch.stack(torch._foreach_norm(xs)).double()
    mean = std = low = high = zeros = nan
    if "mean" in stats or "std" in stats:
        mean = torch.stack([x.sum() for x in xs]).double() / numel
        if "std" in stats:
            # One pass for the sum; the sum of squares is the norm we already have.
            std = (norm.square() / numel - mean.square()).clamp_min(0.0).sqrt()
        if "mean" not in stats:
            mean = nan
    if "min" in stats or "max" in stats:
        pairs = [torch.aminmax(x) for x in xs]
        low = torch.stack([p.min for p in pairs]).double()
        high = torch.stack([p.max for p in pairs]).double()
    if "zero_frac" in stats:
        zeros = numel - torch.stack(torch._foreach_norm(xs, ord=0)).double()
    nonfinite = torch.where(torch.isfinite(norm), 0.0, SOME_NONFINITE).double()
    return torch.stack([norm, mean, std, low, high, zeros, nonfinite], dim=1)


def count_nonfinite(t: torch.Tensor) -> int:
    """Exact count of NaN / inf values (the rare path: one sync)."""
    return int((~torch.isfinite(t.detach())).sum().item())


def histograms(tensors: Sequence[torch.Tensor], bins: int) -> torch.Tensor:
    """(len(tensors), bins) counts over each tensor's own [min, max] (torch.histc)."""
    # histc with min = max = 0 takes the range from the data on the device (no sync);
    # non-finite values would make that range infinite, so they are counted as 0 here.
    rows = [torch.histc(torch.nan_to_num(_flat(t).float(), 0.0, 0.0, 0.0), bins) for t in tensors]
    return torch.stack(rows).double()
