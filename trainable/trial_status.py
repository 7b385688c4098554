"""How a trial ended, as data: the leaderboard's `status` column (its `reason` column says why).

Plain Python, no torch: search/ (the driver) and ensemble/ both read it, and ensemble/ never imports search/.
"""
from __future__ import annotations

from enum import Enum

# A trial that fails for a reason a retry cannot change (a config or data error) reports one last result
# holding this key ("ConfigError: ...") and returns, so Tune does not retry it (search/tune_reporter.py).
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


def from_legacy(ended: str) -> tuple[TrialStatus, str]:
    """(status, reason) from the `ended` text of leaderboards written before the status column:
    'completed', 'stopped by ASHA at epoch k', 'error: <reason>', 'not started'."""
    ended = str(ended or "")
    if ended.startswith("error"):
        return TrialStatus.FAILED, ended.partition(":")[2].strip()
    if ended.startswith("stopped"):
        return TrialStatus.STOPPED_EARLY, ended
    if ended == "completed":
        return TrialStatus.COMPLETED, ""
    return TrialStatus.NOT_STARTED, ""
