"""The function trainables Ray Tune runs: a search trial (tune_trial) and a refit model (refit_trial).

Tune retries a trial that raises (FailureConfig.max_failures), which is right for a crash that may not happen
again (out of memory, a lost node) and wasted work for a config or data error (a UserError), which fails the
same way every time. Such a trial reports one last result with `fatal_error` and returns: Tune sees a trial
that ended, the searcher and the leaderboard see a failure with its reason.

Tune pickles these functions by module path into every experiment: moving them is a results-format change
(core/run_format.py).
"""
from __future__ import annotations

import atexit
import os
import threading

from compat import ray_internals
from core.errors import TrialStopped, UserError
from core.trial_status import FATAL_ERROR
from worker import quiet_sigterm
from worker.tune_sink import BackgroundTuneSink, TuneSink


def tune_trial(config: dict) -> None:
    """One search trial, reporting every epoch (or as its report_epochs say)."""
    from trainable.trial import train_trial  # torch is imported in the trial's worker, never in the driver

    quiet_sigterm.install()

    run_reporting_to_tune(train_trial, config, BackgroundTuneSink() if config.get("report_in_background") else TuneSink())


def refit_trial(config: dict) -> None:
    """One fold or bag model of a refit (ensemble/refit.py): a search trial's config on its subset."""
    tune_trial(config["job"]["config"])


# How long a worker process that is exiting waits for its trial thread to end (see run_reporting_to_tune).
EXIT_WAIT_S = 30


def run_reporting_to_tune(train, config: dict, sink) -> None:
    """train(config, sink) inside a Tune trial; the sink is closed whatever happens.

    Tune runs the function in a daemon thread. When the scheduler stops a trial, Tune wakes that thread out of its
    tune.report with SystemExit and, without waiting for it (FunctionTrainable.cleanup joins with timeout 0), ends
    the actor: the process exits while the trial thread is still unwinding, freeing the model, optimizer and loaders
    inside torch. A daemon thread inside torch while Python finalizes is what ended some ASHA-stopped trials in
    `*** SIGABRT received` and a C++ stack trace. So the process's exit (atexit runs before finalizing, also on
    Ray's exit_actor) waits until this function has freed the trial's objects, and the stop signal is re-raised
    only afterwards, without the frames that held them.

    With reuse_actors Tune waits TUNE_FUNCTION_THREAD_TIMEOUT_S (default 2 s) for this thread to end before it
    runs the next trial in the same process, and fails that trial if it has not ("reuse requires reset_config() to
    ... return True"): freeing a trial takes longer than that on a loaded machine, so the default here is
    EXIT_WAIT_S (Tune's documented variable, read in this worker at the reset; one set by the user is kept)."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(EXIT_WAIT_S))
    ended = threading.Event()
    atexit.register(ended.wait, EXIT_WAIT_S)
    try:
        stopped = _train_until_stopped(train, config, sink)
    finally:
        ended.set()
        atexit.unregister(ended.wait)
    if stopped:
        ray_internals.end_stopped_trial()


def _train_until_stopped(train, config: dict, sink) -> bool:
    """Whether the search stopped the trial. Returns only once its frames (and their torch objects) are gone."""
    stop_signal = False
    try:
        run_without_retrying_user_errors(train, config, sink)
    except TrialStopped:
        pass  # the scheduler's decision, reached between reports
    except BaseException as exc:
        try:
            sink.close()  # the report in flight still reaches Tune, so the retry starts from its checkpoint
        except BaseException:
            pass  # the trial's own error is the one Tune should see
        if not ray_internals.is_stop_signal(exc):
            raise
        stop_signal = True  # re-raised by the caller, once this exception's traceback has let go of the trial
    if not stop_signal:
        sink.close()
    # A background sink says stopped when Tune stopped the trial between reports: it must end as Tune ends a
    # stopped trial, too.
    return stop_signal or sink.stopped()


def run_without_retrying_user_errors(train, config: dict, sink) -> None:
    try:
        train(config, sink)
    except UserError as err:
        # Tune requires the search metric in every result; NaN is no value for ASHA or Optuna.
        sink.send({FATAL_ERROR: f"{type(err).__name__}: {err}", config.get("metric", "val_acc"): float("nan")}, None)
