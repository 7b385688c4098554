"""The one place that wires Ray Tune + Optuna (TPE) + ASHA.

What to search is the Space; how to search is TuneConfig (searcher, scheduler, samples, concurrency);
how to run is RunConfig (name, storage, checkpoints, retries).
"""
from __future__ import annotations

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from search.searcher import PrunedAwareOptunaSearch
from search.space_file import Space
from search.tune_reporter import tune_trial


def make_searcher(space: Space, *, truthful: bool = True, sampler=None) -> PrunedAwareOptunaSearch:
    s = space.settings
    return PrunedAwareOptunaSearch(
        space=space.define,
        metric=s.metric,  # a define-by-run space needs metric and mode on the searcher itself
        mode=s.mode,
        sampler=sampler or optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.tpe_startup_trials),
        points_to_evaluate=[dict(p) for p in space.warm_starts] or None,
        max_epochs=s.max_epochs,
        truthful=truthful,
    )


def make_scheduler(space: Space) -> ASHAScheduler:
    s = space.settings
    return ASHAScheduler(time_attr="training_iteration", max_t=s.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def trainable_with_resources(space: Space):
    s = space.settings
    return tune.with_resources(tune_trial, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def run_config(space: Space, name: str, storage: str, callbacks=()) -> tune.RunConfig:
    s = space.settings
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=s.keep_checkpoints, checkpoint_score_attribute=s.metric, checkpoint_score_order=s.mode
        ),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),  # retried from the last checkpoint
        callbacks=list(callbacks),
        verbose=1,
    )


def build_tuner(space: Space, *, name: str, storage: str, data: str, callbacks=(), truthful: bool = True) -> tune.Tuner:
    s = space.settings
    return tune.Tuner(
        trainable_with_resources(space),
        # constants; the searcher adds the sampled keys. The trial ranks its own epochs the way
        # CheckpointConfig below keeps them (trainable/checkpoint_policy.py).
        param_space={**space.trial_config({}, data), "keep_checkpoints": s.keep_checkpoints,
                     "checkpoint_metric": s.metric},
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            search_alg=make_searcher(space, truthful=truthful),
            scheduler=make_scheduler(space),
            num_samples=s.num_samples,
            max_concurrent_trials=s.max_concurrent or None,
            trial_dirname_creator=lambda trial: trial.trial_id,  # short paths; params live in params.json
        ),
        run_config=run_config(space, name, storage, callbacks),
    )


def restore_tuner(space: Space, path: str) -> tune.Tuner:
    """Continue an interrupted search: finished trials stay finished, the searcher keeps its state."""
    return tune.Tuner.restore(path, trainable=trainable_with_resources(space), resume_errored=False,
                              restart_errored=False)
