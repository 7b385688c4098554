"""The search's one status line, in place of Ray Tune's per-trial config boxes and result tables.

    [search 4m10s] 2 running, 5 ended (3 stopped by ASHA, 0 failed), 5 to start | best val_acc 0.9741 (trial
    3f2a9c10) | epochs 19 | left <= 6m30s

printed every EVERY_S seconds while trials run, and once when a trial ends (with what ended it). It is a public
`ray.tune.Callback`, run with Tune's `verbose=0` (search/tuner.py), so Tune prints none of its own.

Extension point: `fields` is a list of objects with `status_fields() -> dict[str, str]`; each field is appended to
the line as `name value` (the cost estimate is one). A field source that raises is dropped from the line, never
fails the search.

"left <=" is an upper bound: the epochs not yet run if no trial were stopped early, at the search's epoch rate so
far. ASHA stops trials, so the search usually ends sooner.
"""
from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback

from core import metrics as metric_registry
from core.trial_status import FATAL_ERROR

EVERY_S = 30.0


def duration(seconds: float) -> str:
    """4m10s, 1h02m, 12s: short enough for a status line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class SearchProgress(Callback):
    def __init__(self, *, metric: str, num_samples: int, max_epochs: int, fields=(), every_s: float = EVERY_S,
                 printer=None, clock=time.monotonic):
        self.metric, self.num_samples, self.max_epochs = metric, num_samples, max_epochs
        self.fields = list(fields)
        self.every_s = every_s
        self._printer = printer
        self._clock = clock
        self._start: float | None = None
        self._last_line: float | None = None
        self._epochs: dict[str, int] = {}       # trial id -> its latest epoch
        self._ended: dict[str, str] = {}        # trial id -> "completed" | "stopped" | "failed"
        self._best: tuple[float, str] | None = None

    def __getstate__(self):  # Tune pickles the run config's callbacks with the experiment; the printer may not pickle
        return {**self.__dict__, "_printer": None}

    # Tune's hooks ------------------------------------------------------------------------------------------
    def setup(self, **info):
        self._start = self._clock()
        self._last_line = self._start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.record_result(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.record_end(trial.trial_id, trial.last_result or {}, failed=False)
        self.print_line(trials, event=self._event(trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.record_end(trial.trial_id, trial.last_result or {}, failed=True)
        self.print_line(trials, event=self._event(trial.trial_id))

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune restarts a failed trial (a lost node, a crash) from its last checkpoint while it has retries left;
        # with verbose=0 nothing else would say so.
        retry = getattr(trial, "num_failures", None)
        self.print_line(trials, event=f"trial {trial.trial_id} failed at epoch {self._epochs.get(trial.trial_id, 0)}: "
                                      f"retried from its last checkpoint" + (f" (failure {retry})" if retry else ""))

    def on_step_end(self, iteration, trials, **info):
        if self._start is None:
            self.setup()
        if self._clock() - self._last_line >= self.every_s:
            self.print_line(trials)

    def on_experiment_end(self, trials, **info):
        self.print_line(trials, event="search ended")

    # The state, kept from results (also usable without Tune: tests feed it fake trials) --------------------
    def record_result(self, trial_id: str, result: dict) -> None:
        epoch = result.get("epoch")
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
            self._epochs[trial_id] = max(int(epoch), self._epochs.get(trial_id, 0))
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and not result.get(FATAL_ERROR):
            if self._best is None or metric_registry.is_better(self.metric, value, self._best[0]):
                self._best = (float(value), trial_id)

    def record_end(self, trial_id: str, last_result: dict, *, failed: bool) -> None:
        self.record_result(trial_id, last_result)
        if failed or last_result.get(FATAL_ERROR):
            self._ended[trial_id] = "failed"
        elif self._epochs.get(trial_id, 0) >= self.max_epochs:
            self._ended[trial_id] = "completed"
        else:
            self._ended[trial_id] = "stopped"

    def _event(self, trial_id: str) -> str:
        how = {"completed": "completed", "stopped": "stopped by ASHA", "failed": "failed"}[self._ended[trial_id]]
        return f"trial {trial_id} {how} at epoch {self._epochs.get(trial_id, 0)}"

    def line(self, trials, event: str | None = None) -> str:
        """The status line for Tune's trial list (objects with trial_id and status: PENDING, RUNNING, ...)."""
        now = self._clock()
        start = self._start if self._start is not None else now
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self._ended)
        ended = len(self._ended)
        stopped = sum(1 for how in self._ended.values() if how == "stopped")
        failed = sum(1 for how in self._ended.values() if how == "failed")
        to_start = max(self.num_samples - ended - running, 0)
        epochs = sum(self._epochs.values())
        parts = [f"{running} running, {ended} ended ({stopped} stopped by ASHA, {failed} failed), {to_start} to start"]
        if self._best is not None:
            parts.append(f"best {self.metric} {self._best[0]:.4f} (trial {self._best[1]})")
        parts.append(f"epochs {epochs}")
        left = self._epochs_left(trials, running, to_start)
        elapsed = now - start
        if epochs and left and elapsed > 0:
            parts.append(f"left <= {duration(left * elapsed / epochs)}")
        for source in self.fields:
            try:
                parts.extend(f"{name} {value}" for name, value in source.status_fields().items())
            except Exception:  # a status field is a convenience: it never stops the search
                continue
        text = f"[search {duration(elapsed)}] " + " | ".join(parts)
        return f"{text}  <- {event}" if event else text

    def _epochs_left(self, trials, running: int, to_start: int) -> int:
        in_flight = sum(max(self.max_epochs - self._epochs.get(t.trial_id, 0), 0) for t in trials
                        if t.status == "RUNNING" and t.trial_id not in self._ended)
        return in_flight + to_start * self.max_epochs

    def print_line(self, trials, event: str | None = None) -> None:
        self._last_line = self._clock()
        text = self.line(trials, event)
        (self._printer or _print_flushed)(text)


def _print_flushed(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
