"""TPE whose cost per suggestion stays flat as the search grows: its density estimates see a bounded history.

Optuna's TPE rebuilds two Parzen estimators from every finished trial at every suggestion, once per
sampling group (4 for spaces/full.py: the joint space plus the conditional mixup, MLP-head and
class-weight branches), so a suggestion costs ~0.05 ms per finished trial on this machine: ~100 ms at
2,000 trials (BENCHMARKS.md, Scale). At 1,024 GPUs that alone saturates the driver.

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

Warm starts (enqueued trials: the space's recipes) count towards Optuna's `n_startup_trials` like any other
trial, so five recipes mean TPE models from its first own trial, with the recipes as its whole "good"
group: its trials then stay next to the recipes (BENCHMARKS.md, search vs recipes). With
`startup_counts_warm_starts=False` TPE first samples `n_startup_trials` random points of its own.

With `group=True`, Optuna also re-derives the conditional groups from every finished trial at every
suggestion (`_GroupDecomposedSearchSpace.calculate`, ~40 ms at 4,000 trials here); the groups only ever
refine as trials are added, so each trial is fed to it once (the same groups, found incrementally).
"""
from __future__ import annotations

import bisect
import heapq
import warnings

import optuna

from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import _get_pruned_trial_score  # TPE's own ranking of pruned trials
from optuna.study import StudyDirection
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class WindowedTPESampler(TPESampler):
    def __init__(self, *, history_window: int = 0, keep_best: int = 50, keep_running: int = 100,
                 startup_counts_warm_starts: bool = True, seed: int | None = None, **tpe_options):
        """history_window: at most this many finished trials inform a suggestion (0 = all, plain TPE)."""
        super().__init__(seed=seed, **tpe_options)
        self.startup_counts_warm_starts = startup_counts_warm_starts
        self._own_startup_done = False
        if history_window and history_window <= keep_best:
            raise ValueError(f"history_window ({history_window}) must be 0 or > keep_best ({keep_best}).")
        self.history_window, self.keep_best, self.keep_running = history_window, keep_best, keep_running
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
        if not self._group:
            return super().infer_relative_search_space(study, trial)
        return super().infer_relative_search_space(_NewTrialsOnly(study, self._grouped), trial)

    def sample_relative(self, study, trial, search_space):
        if self._in_own_startup(study):
            return {}  # as TPE does before n_startup_trials: every parameter from the random sampler
        return super().sample_relative(self._windowed(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._in_own_startup(study):
            return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)
        return super().sample_independent(self._windowed(study), trial, param_name, param_distribution)

    def _in_own_startup(self, study) -> bool:
        """Fewer than n_startup_trials finished trials of TPE's own, when warm starts do not count."""
        if self.startup_counts_warm_starts or self._own_startup_done:
            return False
        finished = study._get_trials(deepcopy=False, states=FINISHED, use_cache=True)
        own = sum(1 for t in finished if "fixed_params" not in t.system_attrs)  # enqueue_trial's mark
        self._own_startup_done = own >= self._n_startup_trials  # finished trials stay finished: counted until then
        return not self._own_startup_done

    def _windowed(self, study):
        if not self.history_window:
            return study
        finished = study._get_trials(deepcopy=False, states=FINISHED, use_cache=True)
        if len(finished) <= self.history_window:
            return study
        if len(finished) != len(self._seen):  # trials finish out of order: look for the new ones
            for t in finished:
                if t.number not in self._seen:
                    self._add(t, study)
            self._visible.clear()
        return _StudyWindow(study, self._window, self._visible, self.keep_running)

    def _add(self, trial, study) -> None:
        self._seen.add(trial.number)
        if trial.state == TrialState.COMPLETE:
            key = (0, -trial.value if study.direction == StudyDirection.MAXIMIZE else trial.value)
        else:
            key = (1, *_get_pruned_trial_score(trial, study))
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


class _StudyWindow:
    """The study as TPE's estimators should see it: finished trials outside the window are hidden."""

    def __init__(self, study, window: set[int], visible: dict, keep_running: int):
        self._study, self._window, self._visible, self._keep_running = study, window, visible, keep_running

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        key = (tuple(states or ()), len(trials))
        if deepcopy or key not in self._visible:  # TPE asks several times per suggestion: filter once
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            newest = set(sorted(running)[-self._keep_running:]) if self._keep_running else set()
            shown = [t for t in trials if t.number in self._window or t.number in newest]
            if deepcopy:
                return shown
            self._visible[key] = shown
        return self._visible[key]


class _NewTrialsOnly:
    """The study as the group decomposition should see it: each trial once, the first time it is listed."""

    def __init__(self, study, fed: set[int]):
        self._study, self._fed = study, fed

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        new = [t for t in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
               if t.number not in self._fed]
        self._fed.update(t.number for t in new)
        return new


def make_tpe_sampler(space) -> WindowedTPESampler:
    """The search's TPE, from a Space's settings (here, not in search/tuner.py, so that the suggestion pool's
    helper process samples without importing Ray)."""
    s = space.settings
    with warnings.catch_warnings():  # `group` is flagged experimental; its use is measured (BENCHMARKS.md)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return WindowedTPESampler(seed=s.seed, n_startup_trials=s.tpe_startup_trials,
                                  multivariate=s.tpe_multivariate, group=s.tpe_group,
                                  constant_liar=s.tpe_constant_liar, history_window=s.tpe_history_window,
                                  startup_counts_warm_starts=s.tpe_startup_counts_warm_starts)
