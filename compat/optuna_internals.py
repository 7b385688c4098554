"""Private names of Optuna, used by driver_profile "large" only, with the upstream change that would remove each.

Tested with Optuna 5.0.0 (TESTED); the search plan calls `check` for driver_profile "large".

  name                                  used by                              would go with
  optuna.samplers._tpe.sampler.         the windowed TPE (search/            a public ranking of pruned trials
    _get_pruned_trial_score             windowed_tpe.py) keeps TPE's own     in TPESampler; no issue found
                                        best trials in its window
  Study._get_trials(deepcopy, states,   the windowed TPE: TPE reads trials   a TPESampler option bounding the
    use_cache), overridden by a view    through it, so a view of the study   history it models: optuna#2172
                                        that hides trials bounds its cost    (cost grows with every trial)
  Trial._trial_id and                   the suggestion pool: a trial asked   a public "Trial from number" for
    optuna.trial.Trial(study, id)       in a helper process is adopted by    another process: optuna#2987
                                        the driver
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from compat.versions import CompatError, require

TESTED = ("5.0.0",)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
__all__ = ["CompatError", "TESTED", "check", "pruned_trial_score", "finished_trials", "StudyWindow",
           "NewTrialsOnly", "trial_storage_id", "trial_from_storage_id"]


def check(feature: str, instead: str = "Use driver_profile 'standard'") -> None:
    require("optuna", TESTED, feature, instead)


def pruned_trial_score(trial, study) -> tuple:
    """TPE's own rank key of a pruned trial (how far it got, then its value there)."""
    from optuna.samplers._tpe.sampler import _get_pruned_trial_score

    return _get_pruned_trial_score(trial, study)


def finished_trials(study) -> list:
    """COMPLETE and PRUNED trials, from the study's cache as TPE reads them (no copies)."""
    return study._get_trials(deepcopy=False, states=FINISHED, use_cache=True)


class StudyWindow:
    """The study as TPE's estimators should see it: finished trials outside `window` (a set of trial numbers)
    are hidden; the `keep_running` newest running trials stay (constant liar counts them)."""

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


class NewTrialsOnly:
    """The study as TPE's group decomposition should see it: each trial once, the first time it is listed."""

    def __init__(self, study, fed: set[int]):
        self._study, self._fed = study, fed

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        new = [t for t in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
               if t.number not in self._fed]
        self._fed.update(t.number for t in new)
        return new


def trial_storage_id(trial: optuna.Trial) -> int:
    """The storage's own id of an asked trial (not its number), to hand it to another process."""
    return trial._trial_id


def trial_from_storage_id(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """A live Trial of `study` for a trial another process asked."""
    return optuna.trial.Trial(study, trial_id)
