"""How a trial ended, as data: the leaderboard's `status` column (its `reason` column says why).

Plain Python: the driver, the trials and the ensemble all read it.
"""
from __future__ import annotations

from enum import Enum

# A trial that fails for a reason a retry cannot change (a config or data error) reports one last result
# holding this key ("ConfigError: ...") and returns, so Tune does not retry it (worker/tune_trial.py).
FATAL_ERROR = "fatal_error"


class TrialStatus(str, Enum):
    COMPLETED = "completed"          # ran max_epochs
    STOPPED_EARLY = "stopped_early"  # ASHA stopped it before max_epochs
    FAILED = "failed"                # raised after Tune's retries, or a deterministic error (never retried)
    INTERRUPTED = "interrupted"      # was running when the search stopped; --resume continues it
    NOT_STARTED = "not_started"      # created but never ran; --resume runs it

    @property
    def ended(self) -> bool:
        """Whether the trial is over: an interrupted or unstarted trial still has work for --resume."""
        return self in (TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY, TrialStatus.FAILED)

    @property
    def trained(self) -> bool:
        """Whether its checkpoints are a finished trial's (an ensemble candidate)."""
        return self in (TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY)


def error_reason(error: BaseException) -> str:
    """The root cause in one line: 'NonFiniteLossError: loss is nan at epoch 2' rather than Ray's wrapper."""
    cause = error
    while getattr(cause, "cause", None) is not None:  # RayTaskError -> the user's exception
        cause = cause.cause
    text = str(cause).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), type(cause).__name__)
    name = type(cause).__name__
    return last if last.startswith(name) or ":" in last.split(" ")[0] else f"{name}: {last}"
