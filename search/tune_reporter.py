"""The trial's reporter under Ray Tune: tune.get_checkpoint to resume, tune.report each epoch (with a
checkpoint on the epochs trainable/checkpoint_policy.py picks, metrics only on the others).

Tune copies each reported checkpoint directory to the run's storage (a local dir, NFS, or s3://),
so a trial retried on another node resumes from it.

Tune retries a trial that raises (FailureConfig.max_failures), which is right for a crash that may not
happen again (out of memory, a lost node) and wasted work for a config or data error (a UserError), which
fails the same way every time. Such a trial reports one last result with `fatal_error` and returns: Tune
sees a trial that ended, the searcher and the leaderboard see a failure with its reason.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune

from trainable.errors import UserError
from trainable.trial_status import FATAL_ERROR


class TuneReporter:
    @contextmanager
    def checkpoint_to_resume(self):
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
        else:
            with checkpoint.as_directory() as directory:
                yield Path(directory)

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        # Tune adds node_ip and hostname to every result; the Ray node id tells apart nodes that share a
        # machine (and a node that replaced a lost one at the same address).
        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=checkpoint)


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
