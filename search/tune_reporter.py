"""The trial's reporter under Ray Tune: tune.get_checkpoint to resume, tune.report each epoch the trial reports
(every epoch, or those trainable/report_policy.py picks), with a checkpoint on the epochs
trainable/checkpoint_policy.py picks, metrics only on the others.

Tune copies each reported checkpoint directory to the run's storage (a local dir, NFS, or s3://),
so a trial retried on another node resumes from it. Tune hands back only the latest; when that one is
damaged the trial falls back to the older ones Tune kept next to it (checkpoint_NNNNNN in the trial's
storage folder: the best `keep_checkpoints`), newest first.

With the trial key `report_in_background`, BackgroundTuneReporter sends each report from a thread of its own:
the trial trains its next epoch while Tune persists the checkpoint and the driver decides (BENCHMARKS.md, "The
driver at scale", measures what that is worth at 1,024 GPUs).

Tune retries a trial that raises (FailureConfig.max_failures), which is right for a crash that may not
happen again (out of memory, a lost node) and wasted work for a config or data error (a UserError), which
fails the same way every time. Such a trial reports one last result with `fatal_error` and returns: Tune
sees a trial that ended, the searcher and the leaderboard see a failure with its reason.
"""
from __future__ import annotations

import atexit
import os
import posixpath
import re
import shutil
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune

from trainable.errors import TrialStopped, UserError
from trainable.trial_status import FATAL_ERROR

_CHECKPOINT_NAME = re.compile(r"checkpoint_\d+$")


class TuneReporter:
    def checkpoints_to_resume(self):
        """Context managers giving local directories, newest first; each downloads only when entered."""
        latest = tune.get_checkpoint()
        if latest is None:
            return []
        return [_local(c) for c in [latest, *older_checkpoints(latest, self.warn)]]

    def warn(self, message: str) -> None:
        print(message, file=sys.stderr)  # the trial's log, and the driver's console

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        # Tune adds node_ip and hostname to every result; the Ray node id tells apart nodes that share a
        # machine (and a node that replaced a lost one at the same address).
        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=checkpoint)

    def stopped(self) -> bool:
        return False  # reporting synchronously, a stopped trial ends inside tune.report

    def close(self) -> None:
        pass


class BackgroundTuneReporter(TuneReporter):
    """report() hands the report to a thread of its own and returns: the trial trains its next epoch while Tune
    persists the checkpoint (an upload, on a cluster with s3:// storage) and the driver decides on the result.

    One report in flight at a time: report() first waits for the previous one, so results reach Tune in order
    and at most two checkpoints sit on the node's disk. When the scheduler stops the trial, Tune's session ends
    the reporting call with sys.exit; when Tune stops it between reports (the experiment's end, Ctrl-C), its
    session's stop event is set. stopped() says either, and the trial, which asks between batches, ends by
    raising TrialStopped. A report that failed (storage refusing the upload, say) is raised by the next
    report(), flush() or close().
    """

    # How long Tune waits for a stopped trial's function to end before it reuses the actor (default 2 s; a
    # reset that times out fails the *next* trial). A stopped trial ends within a batch, or after the checkpoint
    # it is writing: seconds for a large backbone.
    THREAD_TIMEOUT_S = 30

    def __init__(self):
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(self.THREAD_TIMEOUT_S))
        self._staging = Path(tempfile.mkdtemp(prefix="trial-reports-"))
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tune-report")
        self._in_flight: Future | None = None
        self._stopped = threading.Event()
        # This trial's session (Tune makes a new stop event per trial, also on a reused actor). Ray 2.60 has no
        # public way to ask whether the trial was stopped; without it only the sys.exit path above is seen.
        from ray.train._internal.session import get_session

        self._session_stop = getattr(get_session(), "stop_event", None)
        self._closed = threading.Event()
        # Tune ends a cached actor (the search's end, reuse_actors) by stopping the trial and exiting the process
        # at once; a trial still training then dies inside torch as Python finalizes (SIGABRT and a C++ stack
        # trace in the log). Exiting waits for it to reach its next batch and end.
        atexit.register(self._closed.wait, self.THREAD_TIMEOUT_S)

    def stopped(self) -> bool:
        return self._stopped.is_set() or (self._session_stop is not None and self._session_stop.is_set())

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.flush()
        if checkpoint_dir is not None:  # the trial deletes its directory once report() returns: take it over
            owned = self._staging / checkpoint_dir.name
            shutil.move(str(checkpoint_dir), str(owned))
            checkpoint_dir = owned
        self._in_flight = self._sender.submit(self._send, metrics, checkpoint_dir)

    def flush(self) -> None:
        """Wait until Tune has answered the report in flight. Raises TrialStopped if that answer (or an earlier
        one) stopped the trial, or the report's own error."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()
        if self.stopped():
            raise TrialStopped("the search stopped this trial")

    def close(self) -> None:
        """Wait for the last report (its checkpoint registers even if the trial is failing), then clean up."""
        try:
            future, self._in_flight = self._in_flight, None
            if future is not None:
                future.result()
        finally:
            self._sender.shutdown(wait=True)
            shutil.rmtree(self._staging, ignore_errors=True)
            self._closed.set()
            atexit.unregister(self._closed.wait)

    def _send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        try:
            super().report(metrics, checkpoint_dir)  # returns when the driver lets the trial go on
        except SystemExit:  # Tune's session ends the report of a trial it stops this way
            self._stopped.set()
        finally:
            if checkpoint_dir is not None:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)


@contextmanager
def _local(checkpoint: tune.Checkpoint):
    with checkpoint.as_directory() as directory:
        yield Path(directory)


def older_checkpoints(latest: tune.Checkpoint, warn=print) -> list[tune.Checkpoint]:
    """The trial's other checkpoints in storage, newest first (Tune names them checkpoint_<index>)."""
    import pyarrow.fs

    folder, name = posixpath.split(latest.path.rstrip("/"))
    try:
        entries = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(folder))
    except OSError as err:
        warn(f"Warning: cannot list the trial's older checkpoints in {folder} ({err}); no fallback.")
        return []
    older = sorted((e.base_name for e in entries if e.type == pyarrow.fs.FileType.Directory
                    and _CHECKPOINT_NAME.match(e.base_name) and e.base_name < name), reverse=True)
    return [tune.Checkpoint(posixpath.join(folder, n), filesystem=latest.filesystem) for n in older]


def tune_trial(config: dict) -> None:
    """The function trainable Ray Tune runs: one trial, reporting every epoch."""
    from trainable.trial import train_trial  # torch is imported in the trial's worker, never in the driver

    reporter = BackgroundTuneReporter() if config.get("report_in_background") else TuneReporter()
    run_reporting_to_tune(train_trial, config, reporter)


def run_reporting_to_tune(train, config: dict, reporter) -> None:
    """train(config, reporter) inside a Tune trial; the reporter is closed whatever happens."""
    try:
        run_without_retrying_user_errors(train, config, reporter)
    except TrialStopped:
        pass  # the scheduler's decision, reached between reports
    except BaseException:
        try:
            reporter.close()  # the report in flight still reaches Tune, so the retry starts from its checkpoint
        except BaseException:
            pass  # the trial's own error is the one Tune should see
        raise
    reporter.close()
    if reporter.stopped():
        # End as Tune's own report ends a stopped trial's thread (its runner takes SystemExit(0) as a clean end).
        # Returning instead would make Tune's function wrapper report once more, and wait for an answer that a
        # stopped trial never gets: the actor's reuse would hang.
        raise SystemExit(0)


def run_without_retrying_user_errors(train, config: dict, reporter) -> None:
    try:
        train(config, reporter)
    except UserError as err:
        # Tune requires the search metric in every result; NaN is no value for ASHA or Optuna.
        metric = config.get("checkpoint_metric", "val_acc")
        reporter.report({FATAL_ERROR: f"{type(err).__name__}: {err}", metric: float("nan")}, None)
