"""The one place that wires Ray Tune + Optuna (TPE) + ASHA.

What to search is the Space; how to search is TuneConfig (searcher, scheduler, samples, concurrency);
how to run is RunConfig (name, storage, checkpoints, retries).
"""
from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from search.searcher import PrunedAwareOptunaSearch
from search.space_file import Space
from search.study import journal_storage
from search.suggestion_pool import PoolSpec
from search.trainable_lookups import trainable_lookups_cached
from search.tune_reporter import tune_trial
from search.windowed_tpe import make_tpe_sampler


def make_searcher(space: Space, *, truthful: bool = True, sampler=None, study_path: Path | None = None,
                  study_name: str = "optuna") -> PrunedAwareOptunaSearch:
    """study_path: the JournalStorage file the study lives in (search/study.py); None keeps it in memory."""
    s = space.settings
    return PrunedAwareOptunaSearch(
        space=space.define,
        metric=s.metric,  # a define-by-run space needs metric and mode on the searcher itself
        mode=s.mode,
        sampler=sampler or make_tpe_sampler(space),
        points_to_evaluate=[dict(p) for p in space.warm_starts] or None,
        storage=journal_storage(study_path) if study_path else None,
        study_name=study_name,
        max_epochs=s.max_epochs,
        truthful=truthful,
        pool=PoolSpec(str(Path(space.path).resolve()), space.settings_dict(), str(study_path), study_name,
                      s.suggestion_pool, workers=s.suggestion_pool_workers)
        if study_path and s.suggestion_pool else None,
        num_samples=s.num_samples,
    )


def make_scheduler(space: Space) -> ASHAScheduler:
    s = space.settings
    # The trial's own epoch, not Tune's training_iteration: a trial that falls back from a damaged latest
    # checkpoint retrains epochs Tune already counted, and ASHA's rungs are epochs.
    return ASHAScheduler(time_attr="epoch", max_t=s.max_epochs, grace_period=s.grace_period,
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


def trial_dirname(trial) -> str:
    """Short trial paths (the params live in params.json). Tune pickles this into every trial's saved state:
    a lambda by value (1.2 KB per trial in each experiment snapshot), a module-level function by reference."""
    return trial.trial_id


def tune_config(space: Space, *, max_concurrent: int | None, truthful: bool = True, study_path: Path | None = None,
                study_name: str = "optuna") -> tune.TuneConfig:
    """max_concurrent is also how many trials Tune keeps pending (search/concurrency.py says why it matters)."""
    s = space.settings
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        search_alg=make_searcher(space, truthful=truthful, study_path=study_path, study_name=study_name),
        scheduler=make_scheduler(space),
        num_samples=s.num_samples,
        max_concurrent_trials=max_concurrent,
        reuse_actors=s.reuse_actors,
        trial_dirname_creator=trial_dirname,
    )


def build_tuner(space: Space, *, name: str, storage: str, data: str, max_concurrent: int, callbacks=(),
                truthful: bool = True, study_path: Path | None = None) -> tune.Tuner:
    return tune.Tuner(
        trainable_with_resources(space),
        param_space=space.trial_config({}, data),  # constants; the searcher adds the sampled keys
        tune_config=tune_config(space, max_concurrent=max_concurrent, truthful=truthful, study_path=study_path,
                                study_name=name),
        run_config=run_config(space, name, storage, callbacks),
    )


def fit(tuner: tune.Tuner) -> tune.ResultGrid:
    """tuner.fit(), with the trainable looked up in Ray's registry once per search, not at every trial start."""
    with trainable_lookups_cached():
        return tuner.fit()


def restore_tuner(space: Space, path: str) -> tune.Tuner:
    """Continue an interrupted search: finished trials stay finished, the searcher keeps its state."""
    return tune.Tuner.restore(path, trainable=trainable_with_resources(space), resume_errored=False,
                              restart_errored=False)
