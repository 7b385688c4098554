"""The trial's reporter under Ray Tune: tune.get_checkpoint to resume, tune.report each epoch the trial reports
(every epoch, or those trainable/report_policy.py picks), with a checkpoint on the epochs
trainable/checkpoint_policy.py picks, metrics only on the others.

Tune copies each reported checkpoint directory to the run's storage (a local dir, NFS, or s3://),
so a trial retried on another node resumes from it. Tune hands back only the latest; when that one is
damaged the trial falls back to the older ones Tune kept next to it (checkpoint_NNNNNN in the trial's
storage folder: the best `keep_checkpoints`), newest first.

Tune retries a trial that raises (FailureConfig.max_failures), which is right for a crash that may not
happen again (out of memory, a lost node) and wasted work for a config or data error (a UserError), which
fails the same way every time. Such a trial reports one last result with `fatal_error` and returns: Tune
sees a trial that ended, the searcher and the leaderboard see a failure with its reason.
"""
from __future__ import annotations

import posixpath
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune

from trainable.errors import UserError
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

    run_without_retrying_user_errors(train_trial, config, TuneReporter())


def run_without_retrying_user_errors(train, config: dict, reporter) -> None:
    try:
        train(config, reporter)
    except UserError as err:
        # Tune requires the search metric in every result; NaN is no value for ASHA or Optuna.
        metric = config.get("checkpoint_metric", "val_acc")
        tune.report({FATAL_ERROR: f"{type(err).__name__}: {err}", metric: float("nan")})
