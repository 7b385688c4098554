"""search/trial_logs.py: a retried trial's result.json keeps the epochs reported since storage last synced.

Tune's own JSON logger, at a trial's restart from a checkpoint, replaces the driver's copy with the one in storage
(compat/ray_internals.py push_trial_logs): these tests run that real logger on a stand-in trial whose storage copy
is stale, without and with the callback."""
import json
import types
from pathlib import Path

import pyarrow.fs
from ray.tune.logger import JsonLoggerCallback

from search.trial_logs import TrialLogsKept


def rows(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def stand_in_trial(tmp_path: Path):
    """A trial as the loggers see it: a driver staging folder with epochs 1-2, storage that synced after epoch 1."""
    local, remote = tmp_path / "staging" / "t1", tmp_path / "storage" / "t1"
    local.mkdir(parents=True)
    remote.mkdir(parents=True)
    (local / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (remote / "result.json").write_text('{"epoch": 1}\n')
    storage = types.SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(remote))
    return Trial(trial_id="t1", local_path=str(local), path=str(remote), storage=storage, checkpoint=object(),
                 config={}, init_local_path=lambda: None), local, remote


class Trial(types.SimpleNamespace):
    __hash__ = object.__hash__  # the loggers key their open files by trial


def test_without_it_tunes_restart_drops_the_epochs_since_the_last_sync(tmp_path):
    trial, local, _ = stand_in_trial(tmp_path)
    JsonLoggerCallback().log_trial_start(trial)  # what Tune runs as it restarts the trial
    assert rows(local / "result.json") == [1]    # epoch 2 is gone: why the callback exists


def test_the_callback_pushes_the_logs_before_the_restart(tmp_path):
    trial, local, remote = stand_in_trial(tmp_path)
    TrialLogsKept().on_trial_recover(iteration=1, trials=[trial], trial=trial)
    assert rows(remote / "result.json") == [1, 2]
    logger = JsonLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(3, trial, {"epoch": 2})  # the retry continues from its epoch-1 checkpoint
    logger.log_trial_end(trial)
    assert rows(local / "result.json") == [1, 2, 2]
