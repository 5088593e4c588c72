"""Trace rows as autograd says they should be, and a comparison that names what differs."""

from __future__ import annotations

import pytest
import torch

from worker.training.probes import TraceRow


def expected_row(step: int, layer: str, kind: str, grad: torch.Tensor) -> dict[str, object]:
    g = grad.detach().reshape(-1).double()
    finite = torch.isfinite(g)
    return {
        "step": step,
        "layer": layer,
        "kind": kind,
        "numel": g.numel(),
        "norm": g.norm().item(),
        "mean": g.mean().item(),
        "std": g.std(unbiased=False).item(),
        "min": g.min().item(),
        "max": g.max().item(),
        "zero_frac": (g == 0).double().mean().item(),
        "nonfinite": int((~finite).sum()),
    }


def assert_rows_match(rows: list[TraceRow], expected: list[dict[str, object]]) -> None:
    assert [(r.kind, r.layer) for r in rows] == [(e["kind"], e["layer"]) for e in expected]
    for row, want in zip(rows, expected, strict=True):
        for key, value in want.items():
            got = getattr(row, key)
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-5, abs=1e-7), (row.layer, key)
            else:
                assert got == value, (row.layer, key)
