"""fit() on two processes (torch.distributed, gloo, DDP) against its single-process twin.

The twin trains the same model from the same seed with a batch twice as large: the
distributed job's two ranks take the two halves of each of its batches (see
ResumableSampler), DDP averages their gradients, and the reported loss is the mean of
the two ranks' losses. They are the same computation summed in a different order, so
they agree to float32 rounding: the per-step losses within rtol 1e-5 over 30 Adam steps
(measured: at most 2.2e-7, a few float32 epsilons: two half-batch means averaged round
differently from one mean over the batch, and DDP's all-reduce adds one more rounding
to every gradient). Probe rows get rtol 1e-3 / atol 1e-5 and weights rtol 1e-4 /
atol 1e-5: a gradient's mean is a sum with heavy cancellation, whose relative rounding
error is far larger than the loss's, and Adam divides by the root of the squared
gradients, so an element whose gradient is near zero can move its weight by a relatively
large amount on a rounding difference (measured on a 2-core machine: 1.95e-6 at most on
a weight, 1.3e-6 on a bias gradient of about 3e-3; a wrong merge or a missed all-reduce
is off by orders of magnitude more).
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]

from shared.spec import JobSpec
from shared.tensors import bytes_to_state_dict
from tests.shared.net.test_presets import Net
from tests.support.callbacks import Recorder
from worker.training.loop import fit
from worker.training.ranks import Ranks

WORLD = 2


def lenet(*, batch_size: int, world_size: int | None = None, per_rank: bool = False) -> JobSpec:
    """The seed's Net on the digits: 1438 training samples, an even number."""
    train: dict[str, Any] = {"batch_size": batch_size, "max_steps": 30, "seed": 5,
                             "optimizer": {"name": "Adam", "lr": 0.002}}  # fmt: skip
    if world_size is not None:
        train["distributed"] = {"world_size": world_size}
    return JobSpec.model_validate(
        {
            "model": {"preset": "lenet"},
            "data": {"dataset": "digits", "image_size": 32},
            "train": train,
            "hooks": {
                "kinds": ["forward", "backward", "param_grad", "weights"],
                "per_rank": per_rank,
                "full_every": 1,  # every statistic at every step, to compare them all
            },
        }
    )


def _rank(rank: int, port: int, spec_json: str, out: str) -> None:
    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=120))
    dist.init_process_group("gloo", store=PrefixStore("t", store), rank=rank, world_size=WORLD)
    recorder = Recorder()
    try:
        result = fit(JobSpec.model_validate_json(spec_json), callbacks=[recorder],
                     ranks=Ranks(rank=rank, world_size=WORLD))  # fmt: skip
    finally:
        dist.destroy_process_group()
    if rank == 0:
        traces = {
            step: [[r.layer, r.kind, r.numel, r.norm, r.mean, r.std, r.max, r.rank]
                   for r in rows]
            for step, rows in recorder.traces.items()
        }  # fmt: skip
        final = next(b for b in recorder.blobs if b.tag == "final")
        Path(out, "final.safetensors").write_bytes(final.model_state)
        report = {"losses": recorder.losses, "traces": traces, "steps": result.steps,
                  "epochs": [m for _, _, m in recorder.epochs]}  # fmt: skip
        Path(out, "rank0.json").write_text(json.dumps(report))
    else:
        Path(out, f"rank{rank}.json").write_text(json.dumps({"blobs": len(recorder.blobs)}))


def run_distributed(spec: JobSpec, out: Path) -> dict[str, Any]:
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    torch_mp.start_processes(
        _rank, args=(store.port, spec.model_dump_json(), str(out)), nprocs=WORLD,
        start_method="spawn",
    )  # fmt: skip
    report: dict[str, Any] = json.loads((out / "rank0.json").read_text())
    report["other"] = json.loads((out / "rank1.json").read_text())
    return report


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Recorder]:
    out = tmp_path_factory.mktemp("ddp")
    distributed = run_distributed(lenet(batch_size=16, world_size=WORLD, per_rank=True), out)
    distributed["state"] = bytes_to_state_dict((out / "final.safetensors").read_bytes())
    single = Recorder()
    fit(lenet(batch_size=16 * WORLD), callbacks=[single])
    return distributed, single


def test_losses_equal_the_single_process_twin(
    twins: tuple[dict[str, Any], Recorder],
) -> None:
    distributed, single = twins
    assert distributed["steps"] == 30
    assert len(distributed["losses"]) == len(single.losses) == 30
    torch.testing.assert_close(
        torch.tensor(distributed["losses"]), torch.tensor(single.losses), rtol=1e-5, atol=0
    )
    # The losses moved: a run that learned nothing would also agree.
    assert distributed["losses"][-1] < distributed["losses"][0] * 0.6


def test_rank0_reports_everything_and_the_others_nothing(
    twins: tuple[dict[str, Any], Recorder],
) -> None:
    distributed, _ = twins
    assert distributed["other"]["blobs"] == 0  # checkpoints are rank 0's
    assert distributed["epochs"]  # validation ran on rank 0 and was reported


def test_final_state_dict_loads_strictly_into_the_seed_net(
    twins: tuple[dict[str, Any], Recorder],
) -> None:
    distributed, single = twins
    net = Net()
    net.load_state_dict(distributed["state"], strict=True)  # no "module." prefix from DDP
    twin = next(b for b in single.blobs if b.tag == "final")
    for key, value in bytes_to_state_dict(twin.model_state).items():
        torch.testing.assert_close(distributed["state"][key], value, rtol=1e-4, atol=1e-5)


def test_probes_equal_the_single_process_twin(
    twins: tuple[dict[str, Any], Recorder],
) -> None:
    """Parameter gradients are the all-reduced ones; layer outputs and their gradients
    are merged over the ranks' halves of the batch: every row equals the twin's."""
    distributed, single = twins
    assert sorted(map(int, distributed["traces"])) == sorted(single.traces)
    for step, rows in single.traces.items():
        theirs = [r for r in distributed["traces"][str(step)] if r[7] is None]
        assert [(r[0], r[1]) for r in theirs] == [(r.layer, r.kind) for r in rows]
        kinds = {r.kind for r in rows}
        assert {"forward", "backward", "param_grad", "weights"} <= kinds
        for mine, twin in zip(theirs, rows, strict=True):
            assert mine[2] == twin.numel, (step, twin.layer, twin.kind)
            expected = [twin.norm, twin.mean, twin.std, twin.max]
            torch.testing.assert_close(
                torch.tensor(mine[3:7], dtype=torch.float64),
                torch.tensor(expected, dtype=torch.float64),
                rtol=1e-3,
                atol=1e-5,
                msg=lambda m, t=twin, s=step: f"step {s} {t.layer} {t.kind}: {m}",
            )


def test_per_rank_rows_are_each_rank_s_share_of_the_batch(
    twins: tuple[dict[str, Any], Recorder],
) -> None:
    """hooks.per_rank: every rank-local row once per rank; the ranks' halves add up to the
    whole batch's row (element counts, squared norms, maxima)."""
    distributed, _ = twins
    for rows in distributed["traces"].values():
        whole = {(r[0], r[1]): r for r in rows if r[7] is None}
        shares: dict[tuple[str, str], list[list[Any]]] = {}
        for r in rows:
            if r[7] is not None:
                shares.setdefault((r[0], r[1]), []).append(r)
        assert shares and all(kind in {"forward", "backward"} for _, kind in shares)
        assert {key for key in whole if key[1] in {"forward", "backward"}} == set(shares)
        for key, parts in shares.items():
            assert sorted(p[7] for p in parts) == list(range(WORLD))
            assert sum(p[2] for p in parts) == whole[key][2]
            norm = math.sqrt(sum(p[3] ** 2 for p in parts))
            assert norm == pytest.approx(whole[key][3], rel=1e-9)
            assert max(p[6] for p in parts) == pytest.approx(whole[key][6], rel=1e-12)
