"""The search's TPE, from a Space's settings: Optuna's TPESampler as shipped, or (driver_profile "large" with
tpe_history_window) the windowed TPE of search/windowed_tpe.py. Here, not in search/tuner.py, so that the
suggestion pool's helper process samples exactly as the driver would without importing Ray."""
from __future__ import annotations

import warnings

import optuna


def startup_trials(space) -> int:
    """Optuna's n_startup_trials: TPE models once this many trials have finished. The warm starts are enqueued
    trials like any other, so unless they count (tpe_startup_counts_warm_starts), TPE first samples
    tpe_startup_trials random trials of its own on top of them, and its first model is not the recipes alone."""
    s = space.settings
    return s.tpe_startup_trials + (0 if s.tpe_startup_counts_warm_starts else len(space.warm_starts))


def make_tpe_sampler(space, seed: int | None = None) -> optuna.samplers.TPESampler:
    s = space.settings
    options = dict(seed=s.seed if seed is None else seed, n_startup_trials=startup_trials(space),
                   multivariate=s.tpe_multivariate, group=s.tpe_group, constant_liar=s.tpe_constant_liar)
    with warnings.catch_warnings():  # `group` and `constant_liar` are flagged experimental; measured in docs/
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.large and s.tpe_history_window:
            from search.windowed_tpe import WindowedTPESampler  # Optuna internals: compat/optuna_internals.py

            return WindowedTPESampler(history_window=s.tpe_history_window, **options)
        return optuna.samplers.TPESampler(**options)
