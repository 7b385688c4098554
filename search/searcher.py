"""OptunaSearch that tells Optuna how each trial really ended.

Ray's OptunaSearch reports every per-epoch value (`ot_trial.report`), but then tells Optuna that a
trial ASHA stopped is COMPLETE with its last, low-fidelity value — and so is a trial that raised after
reporting. TPE then ranks a 1-epoch curve against 30-epoch ones as equals. Here:
  - a trial that ran all `max_epochs` is COMPLETE with its last value;
  - a trial stopped earlier (by ASHA) is PRUNED: Optuna keeps its intermediate values, and TPE ranks
    pruned trials below completed ones, by how far they got and then by their value at that step;
  - a trial that errored is FAIL, and so is one that reported a `fatal_error` (a config or data error,
    not retried: search/tune_reporter.py), with the error in its `fatal_error` user attribute.
`truthful=False` keeps Ray's behaviour, for the benchmark that measures the difference.

With a JournalStorage (search/study.py) the study lives in a file: Ray pickles the searcher with the
storage (its file path) and a resumed search appends to the same study.
"""
from __future__ import annotations

import logging

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from trainable.trial_status import FATAL_ERROR

logger = logging.getLogger(__name__)


class PrunedAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_epochs: int, truthful: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._truthful = truthful
        self._reported_steps: dict[str, int] = {}
        if self._ot_study is not None:  # the report and the dashboard label the value with it
            self._ot_study.set_user_attr("metric", self._metric)

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:  # links the study to the leaderboard (and the dashboard to Tune)
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict):
        if result.get(FATAL_ERROR):  # not an epoch: on_trial_complete tells Optuna FAIL
            return
        super().on_trial_result(trial_id, result)
        self._reported_steps[trial_id] = result["training_iteration"]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not self._truthful:
            return super().on_trial_complete(trial_id, result, error)
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        step = (result or {}).get("training_iteration", 0)  # Ray's OptunaSearch reports intermediate values by it
        epochs = (result or {}).get("epoch", step)  # the trial's own count (Tune's runs ahead after a fallback)
        value = (result or {}).get(self._metric)
        fatal = (result or {}).get(FATAL_ERROR)
        if fatal:
            ot_trial.set_user_attr(FATAL_ERROR, str(fatal))
        if error or fatal or value is None:
            state, values = TrialState.FAIL, None
        else:
            # Tune passes a trial's final result to on_trial_complete only, never to on_trial_result:
            # record it, or a trial ASHA stopped at epoch 1 would reach Optuna with no value at all.
            if step > self._reported_steps.get(trial_id, 0):
                ot_trial.report(value, step)
            if epochs < self._max_epochs:
                state, values = TrialState.PRUNED, None  # Optuna takes the last intermediate value
            else:
                state, values = TrialState.COMPLETE, value
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # e.g. a NaN value: keep the search going, as Ray does
            logger.warning("Optuna refused trial %s's outcome: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self._fail_orphans()

    def _fail_orphans(self):
        """A trial asked after the searcher's last save is RUNNING in the journal, but Tune never resumes
        it: tell it FAIL, or the study would show it running forever."""
        known = {t._trial_id for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                try:
                    self._ot_study.tell(frozen.number, state=TrialState.FAIL)
                except Exception as exc:
                    logger.warning("Could not close orphaned Optuna trial %d: %s", frozen.number, exc)
