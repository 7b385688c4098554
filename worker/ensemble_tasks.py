"""The bodies of the ensemble's tasks (ensemble/tasks.py runs them as Ray tasks, or in its own process): torch
is imported only when one runs. A user error inside one comes back as {"error": message}, so it still ends in
one clear message on the driver rather than a remote traceback."""
from __future__ import annotations

from core.errors import UserError
from worker import quiet_sigterm


def score(*args) -> dict:
    from worker.scoring import score_candidate

    return _user_errors_as_values(score_candidate, *args)


def lists(*args) -> dict:
    from worker.scoring import dataset_lists

    return _user_errors_as_values(dataset_lists, *args)


def member_logits(*args) -> dict:
    from worker.scoring import member_logits

    return _user_errors_as_values(member_logits, *args)


def _user_errors_as_values(fn, *args) -> dict:
    quiet_sigterm.install()
    try:
        return fn(*args)
    except UserError as err:
        return {"error": str(err)}
