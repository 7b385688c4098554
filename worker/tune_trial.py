"""The function trainables Ray Tune runs: a search trial (tune_trial) and a refit model (refit_trial).

Tune retries a trial that raises (FailureConfig.max_failures), which is right for a crash that may not happen
again (out of memory, a lost node) and wasted work for a config or data error (a UserError), which fails the
same way every time. Such a trial reports one last result with `fatal_error` and returns: Tune sees a trial
that ended, the searcher and the leaderboard see a failure with its reason.

Tune pickles these functions by module path into every experiment: moving them is a results-format change
(core/run_format.py).
"""
from __future__ import annotations

from compat import ray_internals
from core.errors import TrialStopped, UserError
from core.trial_status import FATAL_ERROR
from worker.tune_sink import BackgroundTuneSink, TuneSink


def tune_trial(config: dict) -> None:
    """One search trial, reporting every epoch (or as its report_epochs say)."""
    from trainable.trial import train_trial  # torch is imported in the trial's worker, never in the driver

    run_reporting_to_tune(train_trial, config, BackgroundTuneSink() if config.get("report_in_background") else TuneSink())


def refit_trial(config: dict) -> None:
    """One fold or bag model of a refit (ensemble/refit.py): a search trial's config on its subset."""
    tune_trial(config["job"]["config"])


def run_reporting_to_tune(train, config: dict, sink) -> None:
    """train(config, sink) inside a Tune trial; the sink is closed whatever happens."""
    try:
        run_without_retrying_user_errors(train, config, sink)
    except TrialStopped:
        pass  # the scheduler's decision, reached between reports
    except BaseException:
        try:
            sink.close()  # the report in flight still reaches Tune, so the retry starts from its checkpoint
        except BaseException:
            pass  # the trial's own error is the one Tune should see
        raise
    sink.close()
    if sink.stopped():  # only a background sink says so: its trial must end as Tune ends a stopped trial
        ray_internals.end_stopped_trial()


def run_without_retrying_user_errors(train, config: dict, sink) -> None:
    try:
        train(config, sink)
    except UserError as err:
        # Tune requires the search metric in every result; NaN is no value for ASHA or Optuna.
        sink.send({FATAL_ERROR: f"{type(err).__name__}: {err}", config.get("metric", "val_acc"): float("nan")}, None)
