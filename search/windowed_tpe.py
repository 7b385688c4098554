"""TPE whose cost per suggestion stays flat as the search grows: its density estimates see a bounded history.

Optuna's TPE rebuilds two Parzen estimators from every finished trial at every suggestion, once per
sampling group (4 for spaces/full.py: the joint space plus the conditional mixup, MLP-head and
class-weight branches), so a suggestion costs ~0.05 ms per finished trial on this machine: ~100 ms at
2,000 trials (docs/benchmarks-history.md, "TPE's cost per suggestion"). At 1,024 GPUs that alone saturates the driver.

The window keeps what TPE's split depends on and samples the rest:
  - the `keep_best` best trials in TPE's own order (completed by value, then pruned by how far they got
    and their value there), more than the at most 25 trials TPE ever puts in its "good" group, so the
    good-group density is exactly full TPE's;
  - a uniform sample of all other finished trials, chosen by a seeded hash of the trial number, so the
    "bad" density is estimated from an unbiased subset and a trial, once in, stays in;
  - the `keep_running` most recently started running trials (constant_liar counts running trials as bad,
    so that parallel suggestions spread out; at 1,024 concurrent trials all of them would double the
    history TPE models, and the newest are the ones a new suggestion could duplicate).
Everything is kept incrementally: a new finished trial costs O(log n), and nothing of the window is pickled.

With `group=True`, Optuna also re-derives the conditional groups from every finished trial at every
suggestion (`_GroupDecomposedSearchSpace.calculate`, ~40 ms at 4,000 trials here); the groups only ever
refine as trials are added, so each trial is fed to it once (the same groups, found incrementally).
"""
from __future__ import annotations

import bisect
import heapq

from optuna.samplers import TPESampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from compat.optuna_internals import NewTrialsOnly, StudyWindow, finished_trials, pruned_trial_score


class WindowedTPESampler(TPESampler):
    """driver_profile "large" only: it reads TPE's trials through Optuna internals (compat/optuna_internals.py)."""

    def __init__(self, *, history_window: int, keep_best: int = 50, keep_running: int = 100, group: bool = False,
                 seed: int | None = None, **tpe_options):
        """history_window: at most this many finished trials inform a suggestion (> keep_best)."""
        super().__init__(seed=seed, group=group, **tpe_options)
        if history_window <= keep_best:
            raise ValueError(f"history_window ({history_window}) must be > keep_best ({keep_best}).")
        self.history_window, self.keep_best, self.keep_running = history_window, keep_best, keep_running
        self.grouped = group
        self._hash_seed = (seed or 0) & 0xFFFFFFFF
        self._reset_window()

    def _reset_window(self) -> None:
        self._seen: set[int] = set()
        self._best: list[tuple] = []         # (rank key, number), sorted, at most keep_best
        self._sampled: list[tuple] = []      # max-heap by hash: (-hash, number), at most window - keep_best
        self._window: set[int] = set()
        self._visible: dict = {}             # (states, trials in the study) -> the trials TPE sees
        self._grouped: set[int] = set()      # trials already fed to the group decomposition

    def __getstate__(self):  # Ray pickles the searcher; the window is rebuilt from the study on first use
        return {k: v for k, v in self.__dict__.items() if k not in ("_seen", "_best", "_sampled", "_window", "_visible", "_grouped")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_window()  # the groups found so far were pickled; feeding trials again is harmless

    def infer_relative_search_space(self, study, trial):
        if not self.grouped:
            return super().infer_relative_search_space(study, trial)
        return super().infer_relative_search_space(NewTrialsOnly(study, self._grouped), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(self._windowed(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self._windowed(study), trial, param_name, param_distribution)

    def _windowed(self, study):
        if not self.history_window:
            return study
        finished = finished_trials(study)
        if len(finished) <= self.history_window:
            return study
        if len(finished) != len(self._seen):  # trials finish out of order: look for the new ones
            for t in finished:
                if t.number not in self._seen:
                    self._add(t, study)
            self._visible.clear()
        return StudyWindow(study, self._window, self._visible, self.keep_running)

    def _add(self, trial, study) -> None:
        self._seen.add(trial.number)
        if trial.state == TrialState.COMPLETE:
            key = (0, -trial.value if study.direction == StudyDirection.MAXIMIZE else trial.value)
        else:
            key = (1, *pruned_trial_score(trial, study))
        bisect.insort(self._best, (key, trial.number))
        self._window.add(trial.number)
        if len(self._best) > self.keep_best:
            _, demoted = self._best.pop()  # no longer among the best: it competes for a sampled place
            self._window.discard(demoted)
            self._offer(demoted)

    def _offer(self, number: int) -> None:
        h = (number * 2654435761 + self._hash_seed) & 0xFFFFFFFF  # a fixed pseudo-random order of trials
        heapq.heappush(self._sampled, (-h, number))
        self._window.add(number)
        if len(self._sampled) > self.history_window - self.keep_best:
            _, dropped = heapq.heappop(self._sampled)
            self._window.discard(dropped)
