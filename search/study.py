"""The search's Optuna study, kept on disk in the run folder: results/<name>/optuna_study.log.

Optuna's JournalStorage appends one JSON line per operation (trial asked, value reported, state told),
so the file is the study at every moment: `optuna-dashboard` shows it live while the search runs, a
resumed search appends to it, and search/report.py reads it at the end.

    optuna-dashboard results/<name>/optuna_study.log
"""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from core.files import STUDY_FILE


class StudyError(Exception):
    pass


def journal_storage(path: Path) -> JournalStorage:
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def study_file(run_dir: Path) -> Path:
    return Path(run_dir) / STUDY_FILE


def load_study(run_dir: Path) -> optuna.Study:
    """The run's study, read-only use; raises StudyError naming the file when there is none."""
    path = study_file(run_dir)
    if not path.is_file() or path.stat().st_size == 0:
        raise StudyError(f"No Optuna study at {path}: searches started before studies were stored have none. "
                         "Start a new search with `python search/run.py --space SPACE` to get one.")
    check_journal(path)
    storage = journal_storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if len(names) != 1:
        raise StudyError(f"{path} holds {len(names)} studies ({', '.join(names)}); expected the search's one.")
    return optuna.load_study(study_name=names[0], storage=storage)


def check_journal(path: Path) -> None:
    """Every line one whole journal operation, or StudyError naming the first that is not. Optuna's reader skips
    a cut or garbage tail in silence (a report of fewer trials) and fails with a traceback on a bad line inside."""
    import json

    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            op = json.loads(line)
            ok = isinstance(op, dict) and isinstance(op.get("op_code"), int)
        except ValueError:
            ok = False
        if not ok:
            cut = number == len(lines) and not data.endswith(b"\n")
            raise StudyError(
                f"{path}:{number}: {'the file ends in the middle of an operation (cut short)' if cut else 'this line is not an Optuna journal operation (damaged, or something was appended)'}"
                f": {line[:60]!r}. The report needs the whole study: restore the file from a backup (the trials' "
                f"results are also in {path.parent / 'leaderboard.csv'}).")


def dashboard_command(run_dir: Path) -> str:
    from search.outputs import tool_command

    return f"{tool_command('optuna-dashboard')} {study_file(run_dir)}"


def rewrite_distributions(run_dir: Path, widened: dict, backup: Path) -> int:
    """The run's study with `widened` (parameter name -> its new distribution) recorded on every earlier trial
    that has the parameter: what a grown search needs when a parameter's distribution changes (search/growth.py).

    Optuna refuses a categorical whose choices change under one name in one study, and has no call to change a
    finished trial's distribution, so the study is written anew, as Optuna's own add_trial builds one: the same
    name, direction, user attributes and metric names, and each trial in order (so the same numbers) with its
    state, values, intermediate values, attributes and times. The new journal is written beside the study and
    moved into its place only once complete; the file before is kept as `backup` (kept if it exists already: a
    growth retried after a crash). A trial RUNNING in the study (asked, never reached Tune) is copied as FAIL, as
    the searcher would end it. Returns the number of trials copied."""
    import copy
    import os
    import shutil
    import warnings

    from optuna.trial import TrialState

    path = study_file(run_dir)
    old = load_study(run_dir)
    tmp = path.with_name(f".{path.name}.rewrite")
    for leftover in (tmp, tmp.with_name(tmp.name + ".lock")):
        if leftover.exists() or leftover.is_symlink():
            leftover.unlink()
    new = optuna.create_study(storage=journal_storage(tmp), study_name=old.study_name, directions=old.directions)
    for key, value in old.user_attrs.items():
        new.set_user_attr(key, value)
    if old.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            new.set_metric_names(old.metric_names)
    trials = sorted(old.get_trials(deepcopy=True), key=lambda t: t.number)
    for trial in trials:
        trial = copy.deepcopy(trial)
        trial.distributions = {k: widened.get(k, d) for k, d in trial.distributions.items()}
        if trial.state == TrialState.RUNNING:
            trial.state, trial.values = TrialState.FAIL, None
            trial.datetime_complete = trial.datetime_start
        new.add_trial(trial)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if not backup.exists():
        shutil.copy2(path, backup)
    os.replace(tmp, path)
    return len(trials)
