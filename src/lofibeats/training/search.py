"""The Optuna sampler of `hparams_search=*`: TPE, seeded, and safe to resume.

A seeded sampler restarts its random stream in every process, so rerunning a search on a stored
study would propose the parameters of the study's first trials all over again. This one seeds TPE
with `seed + number of trials the study already holds` when it meets its first trial: a fresh
study is reproducible from its seed, and a resumed one continues with new (still deterministic)
draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class ResumableTPESampler(BaseSampler):
    """`optuna.samplers.TPESampler(seed, **kwargs)`, reseeded by where the study stands."""

    def __init__(self, seed: int | None = None, **kwargs: Any):
        self.seed = seed
        self.kwargs = kwargs
        self.tpe = TPESampler(seed=seed, **kwargs)
        self._placed = False

    def _place(self, trial: FrozenTrial) -> None:
        """On the first trial: trial.number is how many trials the study held before this run."""
        if not self._placed:
            self._placed = True
            if self.seed is not None and trial.number > 0:
                self.tpe = TPESampler(seed=self.seed + trial.number, **self.kwargs)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self._place(trial)
        return self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._place(trial)
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._place(trial)
        return self.tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.tpe.reseed_rng()
