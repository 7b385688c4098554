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
    storage = journal_storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if len(names) != 1:
        raise StudyError(f"{path} holds {len(names)} studies ({', '.join(names)}); expected the search's one.")
    return optuna.load_study(study_name=names[0], storage=storage)


def dashboard_command(run_dir: Path) -> str:
    from search.outputs import tool_command

    return f"{tool_command('optuna-dashboard')} {study_file(run_dir)}"
