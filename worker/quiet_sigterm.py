"""A worker that Ray ends with SIGTERM exits without a traceback on the driver's console.

Ray's worker SIGTERM handler raises SystemExit (ray/_private/worker.py, main_loop). Python runs signal handlers
between bytecodes of the main thread, which includes a garbage-collection callback such as a WeakSet's `_remove`:
a SystemExit raised there cannot propagate, so Python prints "Exception ignored in: ..." with a traceback through
sys.unraisablehook and carries on, as if the signal had not come (the raylet kills the worker moments later).
Ray forwards that worker's stderr to the driver, so a search that ended well printed a traceback at its end,
now and then (a CI run of tests/test_quickstart.py). This hook drops only that case, an unraisable
SystemExit; every other unraisable exception still goes to the hook it replaced."""
from __future__ import annotations

import sys


def install() -> None:
    """Called at the start of every function a worker runs for this project (idempotent, worker processes only:
    the driver's own hook is left alone)."""
    if getattr(sys.unraisablehook, "_drops_system_exit", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit):
            return  # what Python would have done anyway (ignored it), without the traceback
        previous(unraisable)

    hook._drops_system_exit = True
    sys.unraisablehook = hook
