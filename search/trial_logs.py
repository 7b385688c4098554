"""A retried trial keeps the epochs it reported before it failed, in Tune's result.json and progress.csv.

Tune restarts a trial that failed (a lost node, a crash) from its last checkpoint and, in doing so, replaces the
driver's copy of the trial's logs with the one in storage, which lags by up to a sync period: the epochs in between
went missing from the trial's learning curve (the report's plots read result.json). compat/ray_internals.py's
push_trial_logs says why and what it relies on."""
from __future__ import annotations

import logging

from ray.tune import Callback

from compat import ray_internals

log = logging.getLogger(__name__)


class TrialLogsKept(Callback):
    """Pushes a failed trial's log files to storage before Tune restarts it."""

    def on_trial_recover(self, iteration, trials, trial, **info):
        try:
            ray_internals.push_trial_logs(trial)
        except OSError as err:  # a bucket that does not answer: Tune's own copy is what the trial keeps, as before
            log.warning("Trial %s: its result.json could not be saved before its retry (%s); the epochs since the "
                        "last sync may be missing from its learning curve.", getattr(trial, "trial_id", "?"), err)
