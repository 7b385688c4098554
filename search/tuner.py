"""The one place that wires Ray Tune + Optuna (TPE) + ASHA.

What to search is the Space; how to search is TuneConfig (searcher, scheduler, samples, concurrency);
how to run is RunConfig (name, storage, checkpoints, retries, loggers).
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler

from search.sampler import make_tpe_sampler, startup_trials
from search.searcher import OptunaTPESearch
from search.spend import BudgetHold, BudgetStopper, SpendCallback
from search.space_file import Space
from search.study import journal_storage
from search.suggestion_pool import PoolSpec
from search.trial_logs import TrialLogsKept
from worker.tune_trial import tune_trial


def make_searcher(space: Space, *, truthful: bool = True, sampler=None, study_path: Path | None = None,
                  study_name: str = "optuna", grows: bool = False, num_samples: int | None = None,
                  run_name: str | None = None) -> OptunaTPESearch:
    """study_path: the JournalStorage file the study lives in (search/study.py); None keeps it in memory.
    grows, num_samples: a growth's searcher (search/growth.py) and the trials it asks for.
    run_name: the search's name; its searcher asks for no trial once its budget is closed (search/spend.py)."""
    s = space.settings
    num_samples = s.num_samples if num_samples is None else num_samples
    pool = None
    if study_path and s.large and s.suggestion_pool:
        pool = PoolSpec(str(Path(space.path).resolve()), space.settings_dict(), str(study_path), study_name,
                        s.suggestion_pool, workers=s.suggestion_pool_workers)
    return OptunaTPESearch(
        define=space.define, metric=s.metric, mode=s.mode, max_epochs=s.max_epochs,
        sampler=sampler or make_tpe_sampler(space), warm_starts=space.warm_starts,
        storage=journal_storage(study_path) if study_path else None, study_name=study_name,
        truthful=truthful, pool=pool, num_samples=num_samples, startup_trials=startup_trials(space), grows=grows,
        hold=BudgetHold(run_name) if run_name else None)


def make_scheduler(space: Space) -> ASHAScheduler:
    s = space.settings
    # The trial's own epoch, not Tune's training_iteration: a trial that falls back from a damaged latest
    # checkpoint retrains epochs Tune already counted, and ASHA's rungs are epochs.
    return ASHAScheduler(time_attr="epoch", max_t=s.max_epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def trainable_with_resources(space: Space):
    s = space.settings
    return tune.with_resources(tune_trial, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def run_config(space: Space, name: str, storage: str, callbacks=(), run_name: str | None = None) -> tune.RunConfig:
    """callbacks: the project's TensorBoard logger (search/trial_tensorboard.py) and status line
    (search/progress.py), next to Tune's CSV and JSON loggers (progress.csv, result.json: what the ResultGrid reads
    back). Tune's own TensorBoard logger is not added (fit() sets Tune's documented
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS). verbose=0: Tune prints no config box per trial and no result tables; the
    status line says what a person needs. run_name: the search's name (the budget's objects find its tally by it),
    when the experiment has another (a growth's)."""
    s = space.settings
    run_name = run_name or name
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=s.keep_checkpoints, checkpoint_score_attribute=s.metric, checkpoint_score_order=s.mode
        ),
        failure_config=tune.FailureConfig(max_failures=s.max_failures),  # retried from the last checkpoint
        # Always there, budget or not, so a --resume can add or raise one (search/spend.py).
        stop=BudgetStopper(run_name),
        callbacks=[TrialLogsKept(), CSVLoggerCallback(), JsonLoggerCallback(), SpendCallback(run_name), *callbacks],
        verbose=0,
    )


def trial_dirname(trial) -> str:
    """Short trial paths (the params live in params.json). Tune pickles this into every trial's saved state:
    a lambda by value (1.2 KB per trial in each experiment snapshot), a module-level function by reference."""
    return trial.trial_id


def trial_name(trial) -> str:
    """Tune's name for a trial, in its messages and logs: the id the leaderboard, TensorBoard and the run folder
    use (Tune's default is tune_trial_<id>)."""
    return trial.trial_id


def tune_config(space: Space, *, max_concurrent: int | None, truthful: bool = True, study_path: Path | None = None,
                study_name: str = "optuna", grow=None, run_name: str | None = None) -> tune.TuneConfig:
    """max_concurrent is also how many trials Tune keeps pending (search/concurrency.py says why it matters).
    grow: a Growth (this experiment adds trials to a finished search: search/growth.py), else None."""
    s = space.settings
    scheduler = make_scheduler(space)
    if grow is not None:
        grow.seed(scheduler, maximize=s.mode == "max")
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        search_alg=make_searcher(space, truthful=truthful, study_path=study_path, study_name=study_name,
                                 grows=grow is not None, num_samples=None if grow is None else grow.trials,
                                 run_name=run_name),
        scheduler=scheduler,
        num_samples=s.num_samples if grow is None else grow.trials,
        max_concurrent_trials=max_concurrent,
        reuse_actors=s.reuse_actors,
        trial_dirname_creator=trial_dirname,
        trial_name_creator=trial_name,
    )


def build_tuner(space: Space, *, name: str, storage: str, data: str, max_concurrent: int, callbacks=(),
                truthful: bool = True, study_path: Path | None = None, data_fingerprint: str = "",
                grow=None) -> tune.Tuner:
    """data_fingerprint: the plan's (core/data_fingerprint.py); every trial checks its dataset against it.
    grow: a Growth: the experiment is grow.experiment inside the run's (storage is then the run's experiment
    path), its trials asked of the run's study (grow.study_name)."""
    constants = space.trial_config({}, data)
    if data_fingerprint:
        constants["data_fingerprint"] = data_fingerprint
    return tune.Tuner(
        trainable_with_resources(space),
        param_space=constants,  # constants; the searcher adds the sampled keys
        tune_config=tune_config(space, max_concurrent=max_concurrent, truthful=truthful, study_path=study_path,
                                study_name=name if grow is None else grow.study_name, grow=grow, run_name=name),
        run_config=run_config(space, name if grow is None else grow.experiment, storage, callbacks, run_name=name),
    )


def fit(tuner: tune.Tuner, space: Space) -> tune.ResultGrid:
    """tuner.fit(); with driver_profile "large", the trainable is looked up in Ray's registry once per search,
    not five times per trial start (compat/ray_internals.py)."""
    if space.settings.large:
        from compat.ray_internals import trainable_lookups_cached

        context = trainable_lookups_cached()
    else:
        context = nullcontext()
    with context, own_loggers_only():
        return tuner.fit()


@contextmanager
def own_loggers_only():
    """While a search fits, Tune adds no loggers of its own: the run config holds them (also when restored).
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS is Tune's documented switch. RAY_AIR_NEW_OUTPUT=0 (Tune's switch back to
    its classic output) because the new output prints an experiment box and a "View detailed results" line even
    at verbose=0; the classic one prints nothing at 0, and search/progress.py's status line says what matters.
    TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0 (unless set): Tune forces an experiment snapshot
    whenever a trial has checkpointed keep_checkpoints times since the last, and warns each time it happens twice in
    5 s (every epoch or two with keep_checkpoints 1, as in spaces/quick.py); its cost is measured in docs/scale.md.
    All put back afterwards, so another Tuner in this process (a notebook, the refit) gets Tune's defaults."""
    settings = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S":
                    os.environ.get("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")}
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def restore_tuner(space: Space, path: str) -> tune.Tuner:
    """Continue an interrupted search: finished trials stay finished, the searcher keeps its state."""
    return tune.Tuner.restore(path, trainable=trainable_with_resources(space), resume_errored=False,
                              restart_errored=False)
