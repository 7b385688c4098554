"""Where the search driver's loop spends its time, by phase of a trial's life.

Tune's controller does a trial's work in a handful of its own methods, all on the driver's main thread. The
clock wraps them for the duration of one `tuner.fit()` and adds up the wall and CPU time of each call, each
call's time counted once: a phase nested in another (a trial stopped while its result is processed) is taken
out of the outer one. Wall time is what matters for the loop (it is blocked while a registry lookup waits on
the GCS, for instance); CPU time is the driver thread's own.

The phases, by what they cost:
  - per event the loop handles: `dispatch` (the actor manager handing a finished future to its handler:
    fetching the result, outside the phases below);
  - per trial, at its start: `create` (a trial made from a suggestion: Tune's Trial, its trainable looked up in
    Ray's registry, the scheduler told), `start` (its actor scheduled or a cached one reused, the actor-started
    handling: status, loggers' per-trial set-up, the first train call);
    `registry` is the part of both spent looking the trainable up in Ray's registry (a GCS round trip each
    time, and an unpickle per fetch; counted in the start; near zero under search.tuner.fit, which caches it);
  - per trial, at its end: `end` (the trial stopped: callbacks and loggers told, the searcher told, the actor
    stopped or cached);
  - per result: `result` (a training result processed: scheduler, searcher, callbacks, loggers), `checkpoint`
    (the checkpoint bookkeeping of a result that carries one);
  - `suggest` (the searcher's suggest(), which the simulation times itself), `snapshot` (Tune's experiment
    snapshots), `scan` (what the loop does every step to look for work, including asking the searcher when it
    has nothing to give), `loop` (the rest of a loop step: Tune's and the callbacks' step hooks) and `idle`
    (ray.wait: the loop waiting for an event).

scale_real_ray.py reports them; the simulation (scale_simulation.py) charges `create` + `start` when a trial
starts and `end` when it ends.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import Counter, defaultdict


def _wrapped_methods():
    from compat.ray_internals import tune_loop_methods
    from search.searcher import OptunaTPESearch

    return tune_loop_methods(OptunaTPESearch)


class PhaseClock:
    """Use as a context manager around tuner.fit(); read `wall_s`, `cpu_s` and `calls` afterwards."""

    def __init__(self, methods=None, wall=time.perf_counter, cpu=time.thread_time):
        """wall, cpu: the clocks (the test gives fake ones that advance when told)."""
        self._methods = methods  # [(class or module, attribute, phase)]; Tune's controller when None
        self._wall, self._cpu = wall, cpu
        self.wall_s: dict[str, float] = defaultdict(float)
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.phase_calls: Counter = Counter()
        self.method_wall_s: dict[str, float] = defaultdict(float)  # the same, by the method that spent it
        self._stack: list[list] = []  # [wall, cpu] spent in phases nested in the call below
        self._undo: list = []

    def __enter__(self):
        for cls, name, phase in self._methods or _wrapped_methods():
            original = cls.__dict__[name]
            setattr(cls, name, self._timed(original, phase, name))
            self._undo.append((cls, name, original))
        return self

    def __exit__(self, *exc):
        for cls, name, original in reversed(self._undo):
            setattr(cls, name, original)
        self._undo.clear()

    def _timed(self, original, phase, name: str):
        """phase: a name, or (if the call returned something true, else): a call that found no work is scanning."""
        clock, main = self, threading.main_thread()
        when = phase if isinstance(phase, tuple) else (phase, phase)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.current_thread() is not main:
                return original(*args, **kwargs)
            nested = [0.0, 0.0]
            clock._stack.append(nested)
            w0, c0 = clock._wall(), clock._cpu()
            returned = None
            try:
                returned = original(*args, **kwargs)
                return returned
            finally:
                wall, cpu = clock._wall() - w0, clock._cpu() - c0
                clock._stack.pop()
                spent_in = when[0] if returned else when[1]
                clock.wall_s[spent_in] += wall - nested[0]
                clock.cpu_s[spent_in] += cpu - nested[1]
                clock.phase_calls[spent_in] += 1
                clock.calls[name] += 1
                clock.method_wall_s[name] += wall - nested[0]
                if clock._stack:
                    clock._stack[-1][0] += wall
                    clock._stack[-1][1] += cpu

        return timed

    def summary(self, *, trials: int, results: int, checkpoints: int) -> dict:
        """Milliseconds per trial (start, end), per result and per checkpoint; totals for the rest."""
        def per(phases, n):
            return {kind: round(1e3 * sum(totals[p] for p in phases) / max(1, n), 2)
                    for kind, totals in (("wall_ms", self.wall_s), ("cpu_ms", self.cpu_s))}

        return {
            "per_trial_start": per(["create", "start", "registry"], trials),
            "registry_per_trial": per(["registry"], trials),
            "per_trial_end": per(["end"], trials),
            "per_result": per(["result"], results),
            "per_checkpoint": per(["checkpoint"], checkpoints),
            "suggest_per_trial": per(["suggest"], trials),
            "dispatch_per_event": per(["dispatch"], self.phase_calls["dispatch"]),
            "events": self.phase_calls["dispatch"],
            **{f"{phase}_total_s": round(self.wall_s[phase], 3) for phase in ("snapshot", "scan", "dispatch", "loop", "idle")},
            "steps": self.calls["step"],
            "calls": dict(self.calls),
            "method_wall_ms_per_trial": {name: round(1e3 * w / max(1, trials), 2) for name, w in self.method_wall_s.items()},
        }
