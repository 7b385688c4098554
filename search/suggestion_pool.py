"""driver_profile "large": TPE's suggestions prepared ahead in a helper process, so that the driver's one loop does not sample.

At 1,024 GPUs a search starts ~20 trials a second, and a TPE suggestion costs ~30 ms of the same serial loop
that also takes every result (docs/benchmarks-history.md, "The driver at scale"): together more than a core, and GPUs
wait. The pool moves the sampling to helper processes on the head node (`suggestion_pool_workers`, one by
default; at ~15 trial starts a second one helper's TPE needs most of a core). Every process opens the run's
study file (Optuna's JournalStorage: search/study.py, which locks it); a helper asks the study for trials and samples
their parameters with the search's own TPE settings, up to `size` ahead; the driver adopts a prepared trial
by its id and reads its parameters back, which costs a storage read, not a TPE fit. Constant liar counts the
prepared trials as running, so they differ from each other and from the trials on the GPUs; warm starts are
asked first by whichever process asks first. When no trial is ready (the first burst of a large search, or
a helper that died), the driver samples one itself, as it would without a pool.

The helper never prepares more trials than the search has left to start: near the end the driver waits for
the ones in progress instead of sampling more. After Ctrl-C the prepared ones stay RUNNING in the study until
`--resume` adopts them first (search/searcher.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

LAST_WAIT_S = 60.0  # near the end, how long the driver waits for a prepared trial before sampling itself
ROOT = Path(__file__).resolve().parent.parent  # where the `search` package is importable from


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """What the helpers need to sample exactly as the driver would (settings after plan overrides)."""
    space_path: str
    settings: dict
    study_path: str
    study_name: str
    size: int
    workers: int = 1  # helper processes; at 1,024 GPUs one helper's TPE needs most of a core
    index: int = 0    # which helper this is: its own random stream


class _Helper:
    """One helper process: tokens to its stdin (one per trial to prepare), prepared trial ids from its stdout. A
    plain child process, not multiprocessing: it never re-imports the driver's main script, and it ends by
    itself when the driver does (its stdin closes)."""

    def __init__(self, spec: PoolSpec, ready: queue.Queue):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        self.process = subprocess.Popen([sys.executable, "-m", "search.suggestion_pool"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.process.stdin.write(json.dumps(dataclasses.asdict(spec)) + "\n")
        self.outstanding = 0  # tokens sent, trials not yet taken
        self.taken = 0        # its trials the driver adopted
        self._ready = ready
        threading.Thread(target=self._read, daemon=True, name=f"suggestion-pool-{spec.index}").start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._ready.put((self, int(line)))

    def alive(self) -> bool:
        return self.process.poll() is None

    def ask(self) -> bool:
        try:
            self.process.stdin.write("1\n")
        except OSError:  # it died: the others (or the driver) take its share
            return False
        self.outstanding += 1
        return True

    def close(self) -> None:
        if self.alive():
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class SuggestionPool:
    """The driver's side: up to `size` trials asked of `workers` helper processes at a time, each token to the
    helper holding the fewest; prepared trials are taken in the order they are ready."""

    def __init__(self, spec: PoolSpec, left: int):
        """left: trials the search still has to start (prepared or sampled by the driver)."""
        self._ready: queue.Queue[tuple[_Helper, int]] = queue.Queue()
        self._helpers = [_Helper(dataclasses.replace(spec, index=i), self._ready) for i in range(spec.workers)]
        self._size, self._left = spec.size, left
        self.adopted = self.sampled_by_driver = 0
        self._top_up()

    @property
    def _outstanding(self) -> int:  # a dead helper's tokens are never prepared: they do not count
        return sum(h.outstanding for h in self._helpers if h.alive())

    def _alive(self) -> bool:
        return any(h.alive() for h in self._helpers)

    def _top_up(self) -> None:
        while self._outstanding < min(self._size, self._left):
            alive = [h for h in self._helpers if h.alive()]
            if not alive or not min(alive, key=lambda h: h.outstanding).ask():
                return

    def take(self) -> int | None:
        """A prepared trial's storage id, or None: the caller samples one itself (and this counts it)."""
        must_wait = self._left <= self._outstanding  # sampling here would leave a prepared trial unused
        try:
            if must_wait and self._alive():
                helper, trial_id = self._ready.get(timeout=LAST_WAIT_S)
            else:
                helper, trial_id = self._ready.get_nowait()
        except queue.Empty:
            helper = trial_id = None
        self._left -= 1
        if trial_id is None:
            self.sampled_by_driver += 1
        else:
            helper.outstanding -= 1
            helper.taken += 1
            self.adopted += 1
        self._top_up()
        if self._left <= 0:
            self.close()
        return trial_id

    def close(self) -> None:
        """Ends the helpers once the tokens they hold are prepared (their trials are then adopted on --resume)."""
        for helper in self._helpers:
            helper.close()


def main() -> None:
    """The helper: one prepared trial per token line on stdin, its storage id on stdout; EOF ends it."""
    import optuna

    from compat.optuna_internals import trial_storage_id
    from search.sampler import make_tpe_sampler
    from search.space_file import load_space, sample_params
    from search.study import journal_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = PoolSpec(**json.loads(sys.stdin.readline()))
    space = load_space(Path(spec.space_path)).replace_settings(**spec.settings)
    storage = journal_storage(Path(spec.study_path))
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    # Its own random stream, apart from the driver's (which samples what the pool does not), the other helpers' and
    # an earlier helper's (a resumed search starts new ones): seeded by the search's seed, its index, the trials so far.
    seed = (space.settings.seed + 1 + spec.index * 1_000_003 + len(study.get_trials(deepcopy=False))) % 2**31
    study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=make_tpe_sampler(space, seed=seed))
    for _ in sys.stdin:
        trial = study.ask()
        sample_params(space, trial)  # define-by-run: each parameter sampled and written to the study
        print(trial_storage_id(trial), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):  # the driver stopped
        pass
    except Exception as err:  # the search goes on without the pool: say so in one line, not a traceback
        print(f"Warning: a suggestion pool helper stopped ({type(err).__name__}: {err}); the search samples "
              "without it from now on.", file=sys.stderr)
