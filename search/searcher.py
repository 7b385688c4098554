"""Ray Tune's Searcher over an Optuna study (TPE), on the public APIs of both, telling Optuna how each trial ended.

Ray's OptunaSearch reports every per-epoch value, but then tells Optuna that a trial ASHA stopped is COMPLETE
with its last, low-fidelity value, and so is a trial that raised after reporting: TPE then ranks a 1-epoch
curve against 30-epoch ones as equals. Here:
  - a trial that ran all `max_epochs` is COMPLETE with its last value;
  - a trial stopped earlier (by ASHA) is PRUNED: Optuna keeps its intermediate values, and TPE ranks pruned
    trials below completed ones, by how far they got and then by their value at that step;
  - a trial that errored is FAIL, and so is one that reported a `fatal_error` (a config or data error, not
    retried: worker/tune_trial.py), with the error in its `fatal_error` user attribute.
`truthful=False` keeps Ray's behaviour, for the benchmark that measures the difference.

Everything goes through Optuna's ask-and-tell interface: `study.ask()` per Tune trial, define(trial) for its
parameters (define-by-run), `trial.report(value, epoch)` per epoch at the trial's own epoch, `study.tell(...)`
at its end. The warm starts are `study.enqueue_trial` points, asked first. With a JournalStorage (search/study.py)
the study lives in a file: Tune pickles this searcher (with the study's handle) into every experiment snapshot,
and a resumed search appends to the same study.

A driver killed between asking a trial and Tune's next experiment snapshot leaves that trial RUNNING in the
study, which Tune will never resume (it does not know the trial): Optuna's JournalStorage has no heartbeat to
end it. On --resume such a trial is told FAIL and its parameters are enqueued again (user attribute
`reasked_from`: its number), so the next trial Tune asks for runs them: nothing asked is lost, and every
RUNNING trial left in the study is one Tune is running.
"""
from __future__ import annotations

import logging
import pickle
import warnings

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from core.report_policy import expand
from core.trial_status import FATAL_ERROR

logger = logging.getLogger(__name__)

RAY_TRIAL_ID = "ray_trial_id"   # user attribute: links the study to the leaderboard (and the dashboard to Tune)
REASKED_FROM = "reasked_from"   # user attribute: the orphaned trial whose parameters this one runs again
SAMPLED_BY = "sampled_by"       # user attribute: "warm_start", "random" (TPE's startup) or "tpe" (its model)


class OptunaTPESearch(Searcher):
    _hold = None  # a searcher pickled before hold existed (an experiment of an earlier version, resumed)

    def __init__(self, *, define, metric: str, mode: str, max_epochs: int, sampler, warm_starts=(),
                 storage=None, study_name: str = "optuna", truthful: bool = True, pool=None, num_samples: int = 0,
                 startup_trials: int | None = None, grows: bool = False, hold=None):
        """define: the space's define(trial); storage: an Optuna storage (None keeps the study in memory);
        pool: a search.suggestion_pool.PoolSpec (driver_profile "large"), with num_samples, the trials in all;
        startup_trials: the sampler's n_startup_trials (search/sampler.py), to record which trials TPE modelled;
        grows: this searcher asks a finished search's study for more trials (search/growth.py);
        hold: a callable, True while no new trial may be asked (the budget's: search/spend.BudgetHold)."""
        super().__init__(metric=metric, mode=mode)
        self._startup_trials = startup_trials
        self._warm_starts = len(warm_starts)
        self._define = define
        self._max_epochs = max_epochs
        self._truthful = truthful
        self._study = optuna.create_study(storage=storage, sampler=sampler, study_name=study_name,
                                          direction="maximize" if mode == "max" else "minimize", load_if_exists=True)
        if not self._study.get_trials(deepcopy=False):  # a new study: the recipes are asked first
            for point in warm_starts:
                self._study.enqueue_trial(dict(point))
        self._study.set_user_attr("metric", metric)  # the report labels the value with it
        with warnings.catch_warnings():  # flagged experimental since Optuna 3.2; the dashboard reads it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._study.set_metric_names([metric])  # optuna-dashboard's label (else "Objective 0")
        self._trials: dict[str, optuna.Trial] = {}   # Tune trial id -> its Optuna trial (unfinished ones pickled)
        self._finished: set[str] = set()
        self._reported: dict[str, int] = {}          # Tune trial id -> last epoch told to Optuna
        self.trials_started = 0
        self._pool_spec, self._num_samples = pool, num_samples
        self._pool = None  # started at the first suggestion; never pickled
        self._hold = hold
        if grows and self._study.get_trials(deepcopy=False):
            self._grow(warm_starts)

    def _grow(self, warm_starts) -> None:
        """A grown search's first searcher: the wider space's warm starts that no trial has run yet are asked
        first (marked as such: their numbers follow the earlier trials'), and a trial left RUNNING in the study
        (asked, never reached Tune) is ended and run again, as on --resume."""
        ran = [t.params for t in self._study.get_trials(deepcopy=False) if t.params]
        for point in warm_starts:
            if not any(params and all(point.get(k, object()) == v for k, v in params.items()) for params in ran):
                self._study.enqueue_trial(dict(point), user_attrs={SAMPLED_BY: "warm_start"}, skip_if_exists=False)
        self._reask_orphans()

    @property
    def study(self) -> optuna.Study:
        return self._study

    @property
    def trials_finished(self) -> int:
        return len(self._finished)

    def close_pool(self) -> None:
        """Stop the suggestion pool's helpers (they also end by themselves when the driver exits)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def suggest(self, trial_id: str) -> dict | None:
        trial = self._trials.get(trial_id)
        if trial is None:
            if self._hold is not None and self._hold():
                return None  # Tune's "not now": nothing is asked of Optuna, and Tune asks again next step
            trial = self._prepared() or self._study.ask()
            trial.set_user_attr(RAY_TRIAL_ID, trial_id)
            if self._startup_trials is not None and SAMPLED_BY not in trial.user_attrs:
                trial.set_user_attr(SAMPLED_BY, self._sampled_by(trial))
            self._trials[trial_id] = trial
            self.trials_started += 1
        extra = self._define(trial)  # define-by-run: each parameter sampled (or, enqueued, fixed) and recorded
        return {**trial.params, **(extra or {})}

    def _sampled_by(self, trial: optuna.Trial) -> str:
        """What chose this trial's values: the warm starts are asked first; then TPE samples at random until
        startup_trials trials have finished (COMPLETE or PRUNED, as Optuna's TPESampler counts), then models."""
        if trial.number < self._warm_starts and REASKED_FROM not in trial.user_attrs:
            return "warm_start"
        finished = len(self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        return "tpe" if finished >= self._startup_trials else "random"

    def _prepared(self) -> optuna.Trial | None:
        """A trial the suggestion pool's helpers asked and sampled, or None (the driver samples one)."""
        if self._pool_spec is None:
            return None
        from compat.optuna_internals import trial_from_storage_id
        from search.suggestion_pool import SuggestionPool

        if self._pool is None:  # after a restore too: the trials already asked are Tune's
            self._pool = SuggestionPool(self._pool_spec, left=self._num_samples - self.trials_started)
        prepared = self._pool.take()
        return None if prepared is None else trial_from_storage_id(self._study, prepared)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(FATAL_ERROR) or trial_id in self._finished:  # a fatal error is not an epoch
            return
        self._report_epochs(trial_id, result)

    def _report_epochs(self, trial_id: str, result: dict) -> None:
        """Each epoch's value at its epoch: the trial's own count, as ASHA's rungs (Tune's training_iteration runs
        ahead after a checkpoint fallback, and counts reports, not epochs, with report_epochs)."""
        trial = self._trials[trial_id]
        for row in expand(result):
            step = int(row.get("epoch", result["training_iteration"]))
            value = row.get(self.metric)
            if value is None or step <= self._reported.get(trial_id, 0):
                continue  # an epoch retrained after a fallback keeps its first value, as Optuna would
            trial.report(value, step)
            self._reported[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._finished:
            return
        trial = self._trials[trial_id]
        result = result or {}
        value, fatal = result.get(self.metric), result.get(FATAL_ERROR)
        if fatal:
            trial.set_user_attr(FATAL_ERROR, str(fatal))
        if error or fatal or value is None:
            state, values = TrialState.FAIL, None
        elif not self._truthful:  # Ray's OptunaSearch: every trial that reported is COMPLETE with its last value
            state, values = TrialState.COMPLETE, value
        else:
            # Tune passes a trial's final result to on_trial_complete only, never to on_trial_result:
            # record it, or a trial ASHA stopped at epoch 1 would reach Optuna with no value at all.
            self._report_epochs(trial_id, result)
            epochs = result.get("epoch", result.get("training_iteration", 0))
            if epochs < self._max_epochs:
                state, values = TrialState.PRUNED, None  # Optuna takes the last intermediate value
            else:
                state, values = TrialState.COMPLETE, value
        try:
            self._study.tell(trial, values, state=state)
        except Exception as exc:  # keep the search going, as Ray does, but never leave the trial RUNNING
            logger.warning("Optuna refused trial %s's outcome (%s): recorded as FAIL", trial_id, exc)
            try:
                self._study.tell(trial, state=TrialState.FAIL)
            except Exception:  # already finished
                pass
        self._finished.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Tune pickles the searcher with every experiment snapshot, in the driver's loop. A finished trial is in
        the study file and Tune never resumes it, so only the unfinished ones go in: the pickle grows with the
        trials running, not with the search."""
        state = {**self.__dict__, "_pool": None,
                 "_trials": {k: v for k, v in self._trials.items() if k not in self._finished}}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self._finished_in_study()
        self._reask_orphans()

    def _finished_in_study(self) -> None:
        """The study file is written as results arrive, Tune's experiment state only every few seconds: a driver
        killed in between leaves a trial finished in the study that Tune resumes from an earlier checkpoint.
        Resume is exact, so its retrained epochs repeat what the study holds; Optuna refuses to update a finished
        trial, so the searcher leaves it as it is."""
        states = {t.number: t.state for t in self._study.get_trials(deepcopy=False)}
        for trial_id, trial in self._trials.items():
            if trial_id not in self._finished and states[trial.number].is_finished():
                self._finished.add(trial_id)

    def _reask_orphans(self) -> None:
        """Trials asked after the last snapshot (by the driver, or prepared by the suggestion pool) are RUNNING in
        the study but unknown to Tune: FAIL them and enqueue their parameters, so the next trials run them."""
        known = {trial.number for trial in self._trials.values()}
        for orphan in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if orphan.number in known:
                continue
            self._study.enqueue_trial(orphan.params, user_attrs={REASKED_FROM: orphan.number}, skip_if_exists=False)
            self._study.tell(orphan.number, state=TrialState.FAIL)
            logger.info("Optuna trial %d was asked before the driver stopped and never reached Tune: its "
                        "parameters run again as the next trial", orphan.number)
