"""The trial's sinks under Ray Tune (core/epoch_reporter.py): tune.get_checkpoint to resume, tune.report per
report, with a checkpoint folder Tune copies to the run's storage (a local folder, NFS, or s3://), so a trial
retried on another node resumes from it. Tune hands back only the latest checkpoint; when that one is damaged
the trial falls back to the older ones Tune kept next to it (checkpoint_NNNNNN in the trial's storage folder:
the best `keep_checkpoints`), newest first.

BackgroundTuneSink (trial key report_in_background, driver_profile "large") sends each report from a thread of
its own: the trial trains its next epoch while Tune persists the checkpoint and the driver decides. It needs to
know when Tune stopped the trial between reports, which Ray has no public way to say (compat/ray_internals.py).
"""
from __future__ import annotations

import posixpath
import re
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune

from compat import ray_internals
from core.epoch_reporter import Sink
from core.errors import TrialStopped

_CHECKPOINT_NAME = re.compile(r"checkpoint_\d+$")


class TuneSink(Sink):
    def checkpoints_to_resume(self):
        latest = tune.get_checkpoint()
        if latest is None:
            return []
        return [_local(c) for c in [latest, *older_checkpoints(latest, self.warn)]]

    def send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        # Tune adds node_ip and hostname to every result; the Ray node id tells apart nodes that share a
        # machine (and a node that replaced a lost one at the same address).
        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=checkpoint)  # a trial the scheduler stops ends inside this call

    def progress(self, line: str) -> None:
        # Ray prefixes the worker's pid; the trial id is what the status line and the leaderboard use.
        print(f"trial {tune.get_context().get_trial_id()}: {line}", flush=True)


class BackgroundTuneSink(TuneSink):
    """send() hands the report to a thread of its own and returns: the trial trains its next epoch while Tune
    persists the checkpoint (an upload, on a cluster with s3:// storage) and the driver decides on the result.

    One report in flight at a time: send() first waits for the previous one, so results reach Tune in order and
    at most two checkpoints sit on the node's disk. When the scheduler stops the trial, Tune's session ends the
    reporting call with SystemExit; when Tune stops it between reports (the experiment's end, Ctrl-C), its
    session's stop event is set. stopped() says either, and the trial, which asks between batches, ends by
    raising TrialStopped. A report that failed (storage refusing the upload, say) is raised by the next send(),
    flush() or close().
    """

    # How long Tune waits for a stopped trial's function to end before it reuses the actor (a stopped trial ends
    # after the checkpoint it is writing: seconds for a large backbone) is set once for every trial, by
    # worker/tune_trial.py (TUNE_FUNCTION_THREAD_TIMEOUT_S).

    def __init__(self):
        self._staging = Path(tempfile.mkdtemp(prefix="trial-reports-"))
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tune-report")
        self._in_flight: Future | None = None
        self._stopped = threading.Event()
        self._session_stop = ray_internals.trial_stop_event()
        # Tune ends a cached actor (the search's end, reuse_actors) by stopping the trial and exiting the process
        # at once; worker/tune_trial.py makes the exit wait until the trial (which asks stopped() between
        # batches) has ended.

    def stopped(self) -> bool:
        return self._stopped.is_set() or (self._session_stop is not None and self._session_stop.is_set())

    def send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.flush()
        if checkpoint_dir is not None:  # the trial deletes its folder once send() returns: take it over
            owned = self._staging / checkpoint_dir.name
            shutil.move(str(checkpoint_dir), str(owned))
            checkpoint_dir = owned
        self._in_flight = self._sender.submit(self._send, metrics, checkpoint_dir)

    def flush(self) -> None:
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

    def _send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        try:
            super().send(metrics, checkpoint_dir)  # returns when the driver lets the trial go on
        except BaseException as exc:
            if not ray_internals.is_stop_signal(exc):
                raise
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
