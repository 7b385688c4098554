"""The trial's reporter under Ray Tune: tune.get_checkpoint to resume, tune.report each epoch (with a
checkpoint on the epochs trainable/checkpoint_policy.py picks, metrics only on the others).

Tune copies each reported checkpoint directory to the run's storage (a local dir, NFS, or s3://),
so a trial retried on another node resumes from it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import ray
from ray import tune


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

    train_trial(config, TuneReporter())
