"""A sweep's Optuna study: its storage in the results database, the distributions of its
space, and the sampler and pruner its settings name.

Optuna's RDB storage keeps its own tables and its own `alembic_version`, which would
collide with Trainyard's in one schema: on PostgreSQL the study tables live in the schema
`optuna` of the same database (migration 0011 creates it); the embedded SQLite database
keeps them in `optuna.sqlite` beside its own file.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from functools import cache
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from shared.db import POSTGRES_TIMEOUTS
from shared.spec.sweep import Choice, IntRange, LogUniform, SweepSpec, Uniform, grid_values

OPTUNA_SCHEMA = "optuna"
optuna.logging.set_verbosity(logging.WARNING)


def storage_url(database_url: str) -> str:
    """Where the study tables live for this results database (see the module's doc)."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        return f"sqlite:///{path.with_name('optuna.sqlite')}"
    return database_url


@cache
def study_storage(database_url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per process and database."""
    url = storage_url(database_url)
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        # Our engines' timeouts: a pass waiting on a dead connection holds its sweep's lock.
        kwargs["connect_args"] = {
            **POSTGRES_TIMEOUTS, "options": f"-c search_path={OPTUNA_SCHEMA}"
        }  # fmt: skip
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def study_name(sweep_id: uuid.UUID) -> str:
    return f"sweep-{sweep_id}"


def distributions(sweep: SweepSpec) -> dict[str, BaseDistribution]:
    """The space as Optuna distributions, one parameter per spec path."""
    out: dict[str, BaseDistribution] = {}
    for path, dist in sweep.space.items():
        if isinstance(dist, Uniform):
            out[path] = FloatDistribution(*dist.uniform)
        elif isinstance(dist, LogUniform):
            out[path] = FloatDistribution(*dist.log_uniform, log=True)
        elif isinstance(dist, IntRange):
            out[path] = IntDistribution(*dist.int, log=dist.log)
        else:
            out[path] = CategoricalDistribution(dist.choice)
    return out


def sampler(sweep: SweepSpec, asked: int) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. The controller makes one per pass, so its seed moves on with
    the number of trials already asked: the same seed every pass would propose the same
    point again, and a seeded sweep still proposes the same points every time it runs.
    The grid sampler keeps the sweep's own seed: its grid ids index a grid shuffled by
    that seed, and it never proposes a visited id again."""
    seed = sweep.seed + asked
    if sweep.method == "grid":
        seed = sweep.seed
        space = {
            path: grid_values(dist)
            for path, dist in sweep.space.items()
            if isinstance(dist, Choice | IntRange)
        }
        return optuna.samplers.GridSampler(space, seed=seed)
    if sweep.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """ASHA (Optuna's SuccessiveHalvingPruner) on epoch rungs, or none."""
    asha = sweep.early_stop.asha if sweep.early_stop else None
    if asha is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=asha.min_epochs,
        reduction_factor=asha.reduction_factor,
        min_early_stopping_rate=0,
        bootstrap_count=0,
    )


# Studies this process has opened, by sweep: a study keeps Optuna's cache of its
# trials, so a later pass reads only what changed instead of every trial again.
_STUDIES: OrderedDict[tuple[str, uuid.UUID], optuna.Study] = OrderedDict()
MAX_OPEN_STUDIES = 32


def open_study(
    sweep: SweepSpec, sweep_id: uuid.UUID, database_url: str, *, asked: int = 0
) -> optuna.Study:
    """The sweep's study, made on first use (a pass that died before its commit may
    have made it already), with the sampler for the next trial."""
    key = (database_url, sweep_id)
    study = _STUDIES.get(key)
    if study is None:
        study = optuna.create_study(
            study_name=study_name(sweep_id),
            storage=study_storage(database_url),
            direction=sweep.goal,
            pruner=pruner(sweep),
            load_if_exists=True,
        )
        _STUDIES[key] = study
        while len(_STUDIES) > MAX_OPEN_STUDIES:
            _STUDIES.popitem(last=False)
    _STUDIES.move_to_end(key)
    study.sampler = sampler(sweep, asked)
    return study
