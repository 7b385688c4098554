"""The one exception type for user mistakes: CLIs print its message and exit 2, no traceback."""
import difflib


class UserError(Exception):
    """A mistake the user can fix (bad path, bad data, bad config, bad flag).

    The message says what is wrong, where, and how to fix it.
    """


class EnsembleError(UserError):
    """A mistake in an ensemble or predict command, or a run it cannot use (no finished trial, other classes, ...)."""


class TrialStopped(Exception):
    """The search stopped this trial while it trained on past a report (report_in_background): not a failure."""


def close_matches(name: str, candidates, n: int = 5) -> str:
    """' Did you mean: a, b?' or '' — for messages about unknown names."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
