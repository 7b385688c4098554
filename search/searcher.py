"""OptunaSearch that tells Optuna how each trial really ended.

Ray's OptunaSearch reports every per-epoch value (`ot_trial.report`, here at the trial's own epoch, with the
epochs a trial reported in one go under report_epochs: trainable/report_policy.py), but then tells Optuna that a
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

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search.suggestion_pool import PoolSpec, SuggestionPool
from trainable.report_policy import expand
from trainable.trial_status import FATAL_ERROR

logger = logging.getLogger(__name__)


class PrunedAwareOptunaSearch(OptunaSearch):
    # Defaults for a searcher pickled before these existed (a search resumed across an upgrade).
    _pool_spec: PoolSpec | None = None
    _pool: SuggestionPool | None = None
    _num_samples = 0
    _orphans: tuple | list = ()
    trials_started = 0  # every trial asked, finished or not (the pickled _ot_trials hold only unfinished ones)

    def __init__(self, *args, max_epochs: int, truthful: bool = True, pool: PoolSpec | None = None,
                 num_samples: int = 0, **kwargs):
        """pool: prepare TPE's suggestions in a helper process (search/suggestion_pool.py); needs the study
        file and num_samples, the trials the search starts in all."""
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._truthful = truthful
        self._reported_steps: dict[str, int] = {}
        self._pool_spec, self._num_samples = pool, num_samples
        self._pool: SuggestionPool | None = None  # started at the first suggestion; never pickled
        if self._ot_study is not None:  # the report and the dashboard label the value with it
            self._ot_study.set_user_attr("metric", self._metric)

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        if new and self._orphans:  # asked before a restart: its parameters are in the study, define-by-run reads them
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, self._orphans.pop(0))
        elif new and self._pool_spec is not None:
            if self._pool is None:  # after a restore too: the trials already asked are Tune's
                self._pool = SuggestionPool(self._pool_spec, left=self._num_samples - self.trials_started)
            prepared = self._pool.take()
            if prepared is not None:  # likewise
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, prepared)
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:  # links the study to the leaderboard (and the dashboard to Tune)
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
            self.trials_started += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict):
        if result.get(FATAL_ERROR) or trial_id in self._completed_trials:  # a fatal error is not an epoch
            return
        self._report_epochs(trial_id, result)

    def _report_epochs(self, trial_id: str, result: dict) -> None:
        """Each epoch's value at its epoch: the trial's own count, as ASHA's rungs (Tune's training_iteration runs
        ahead after a checkpoint fallback, and counts reports, not epochs, with report_epochs)."""
        ot_trial = self._ot_trials[trial_id]
        for row in expand(result):
            step = int(row.get("epoch", result["training_iteration"]))
            value = row.get(self._metric)
            if value is None or step <= self._reported_steps.get(trial_id, 0):
                continue  # an epoch retrained after a fallback keeps its first value, as Optuna would
            ot_trial.report(value, step)
            self._reported_steps[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not self._truthful:
            return super().on_trial_complete(trial_id, result, error)
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        epochs = (result or {}).get("epoch", (result or {}).get("training_iteration", 0))
        value = (result or {}).get(self._metric)
        fatal = (result or {}).get(FATAL_ERROR)
        if fatal:
            ot_trial.set_user_attr(FATAL_ERROR, str(fatal))
        if error or fatal or value is None:
            state, values = TrialState.FAIL, None
        else:
            # Tune passes a trial's final result to on_trial_complete only, never to on_trial_result:
            # record it, or a trial ASHA stopped at epoch 1 would reach Optuna with no value at all.
            self._report_epochs(trial_id, result)
            if epochs < self._max_epochs:
                state, values = TrialState.PRUNED, None  # Optuna takes the last intermediate value
            else:
                state, values = TrialState.COMPLETE, value
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # keep the search going, as Ray does, but never leave the trial RUNNING in the
            # study: the searcher's snapshot keeps only unfinished trials, and a RUNNING one would look like an orphan
            logger.warning("Optuna refused trial %s's outcome (%s): recorded as FAIL", trial_id, exc)
            try:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            except Exception:  # already finished
                pass
        self._completed_trials.add(trial_id)

    def save(self, checkpoint_path: str):
        """Tune pickles the searcher with every experiment snapshot, in the driver's loop. A finished trial is in
        the study file and Tune never resumes it, so only the unfinished ones go in: the pickle grows with the
        trials running, not with the search (4,096 finished trials: 8.3 MB and ~0.3 s a snapshot otherwise)."""
        pool, self._pool = self._pool, None  # a process and its queues: started again after a restore
        trials = self._ot_trials
        self._ot_trials = {k: v for k, v in trials.items() if k not in self._completed_trials}
        try:
            super().save(checkpoint_path)
        finally:
            self._pool, self._ot_trials = pool, trials

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self._pool = None
        # A pickle from before the snapshot dropped finished trials holds every trial in _ot_trials and no count.
        self.trials_started = max(self.trials_started, len(self._ot_trials))
        self._skip_finished_in_study()
        self._adopt_orphans()

    def _skip_finished_in_study(self):
        """The study file is written as results arrive, Tune's experiment state only every few seconds: a
        driver killed in between leaves a trial finished in the study that Tune resumes from an earlier
        checkpoint. Resume is exact, so its retrained epochs repeat what the study holds; Optuna refuses to
        update a finished trial, so the searcher leaves it as it is rather than fail the trial."""
        storage = self._ot_study._storage
        for trial_id, ot_trial in self._ot_trials.items():
            if trial_id not in self._completed_trials and storage.get_trial(ot_trial._trial_id).state.is_finished():
                self._completed_trials.add(trial_id)

    def _adopt_orphans(self):
        """Trials asked after the searcher's last save (by the driver, or prepared by the suggestion pool's
        helper) are RUNNING in the journal, but Tune never resumes them. The next suggestions adopt them, so the
        study holds the trials the search ran and no more; any beyond what is left to start are told FAIL."""
        known = {t._trial_id for t in self._ot_trials.values()}
        orphans = [t._trial_id for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t._trial_id not in known]
        left = max(0, self._num_samples - self.trials_started) if self._num_samples else 0
        self._orphans = orphans[:left]
        for trial_id in orphans[left:]:
            try:
                self._ot_study.tell(self._ot_study._storage.get_trial_number_from_id(trial_id), state=TrialState.FAIL)
            except Exception as exc:
                logger.warning("Could not close orphaned Optuna trial %d: %s", trial_id, exc)
