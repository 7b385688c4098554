"""One command owns a run folder at a time (core/run_lock.py): the search, the ensemble and predict take it;
a second command ends in one message naming the holder and writes nothing; a dead holder's lock is taken
over with a warning. Waits on files and pipes, never on timing."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import S3_BUCKET, S3_CREDENTIALS, make_image_folder
from core.files import RUN_LOCK, RUN_OWNER
from core.run_lock import Holder, RunLock, RunLocked

ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent("""
    import sys
    from core.run_lock import RunLock
    lock = RunLock(sys.argv[1], what="x", command="python search/run.py --name toy").acquire()
    print("held", flush=True)
    sys.stdin.readline()   # hold until the test writes a line (or closes stdin)
    if sys.argv[2] == "release":
        lock.release()
    else:
        import os
        os._exit(0)        # ends without releasing: the kernel frees the flock, the owner record stays
""")


def holder(folder: Path, end: str = "release") -> subprocess.Popen:
    """A child that holds folder's run lock until told to end; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), end], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def test_a_held_run_refuses_a_second_owner_with_the_holders_name(tmp_path):
    run = tmp_path / "toy"
    proc = holder(run)
    try:
        with pytest.raises(RunLocked) as raised:
            RunLock(run, what="the search").acquire()
        message = str(raised.value)
        assert f"pid {proc.pid} on " in message and "python search/run.py --name toy" in message
        assert "started 20" in message and "run the search again; nothing was written" in message
    finally:
        proc.communicate("\n")
    assert proc.returncode == 0
    with RunLock(run):  # released: free again, and no warning
        pass


def test_a_lock_whose_holder_died_is_taken_over_with_a_warning(tmp_path):
    run = tmp_path / "toy"
    proc = holder(run, end="die")
    proc.communicate("\n")
    assert (run / RUN_OWNER).is_file()  # it never released
    warnings = []
    with RunLock(run, warn=warnings.append):
        assert Holder.from_json((run / RUN_OWNER).read_text()).pid == os.getpid()
    assert len(warnings) == 1 and f"pid {proc.pid}" in warnings[0] and "taking it over" in warnings[0]
    assert not (run / RUN_OWNER).exists()


def test_a_command_that_wrote_nothing_leaves_no_folder(tmp_path):
    with RunLock(tmp_path / "fresh"):
        assert (tmp_path / "fresh" / RUN_LOCK).exists()
    assert not (tmp_path / "fresh").exists()
    with RunLock(tmp_path / "kept"):
        (tmp_path / "kept" / "leaderboard.csv").write_text("x\n")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [RUN_LOCK, "leaderboard.csv"]
    with RunLock(tmp_path / "absent", create=False):  # the ensemble on a missing folder: its own checks say so
        pass
    assert not (tmp_path / "absent").exists()


def test_a_bucket_marker_refuses_a_live_holder_and_takes_over_a_stale_one(s3_endpoint, tmp_path, monkeypatch):
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = f"s3://{S3_BUCKET}/lock-test/toy?endpoint_override={s3_endpoint}&scheme=http"
    first = RunLock(tmp_path / "a", bucket=bucket).acquire()
    try:
        with pytest.raises(RunLocked, match="is in use by pid"):
            RunLock(tmp_path / "b", bucket=bucket).acquire()  # another driver's folder, the same bucket
        assert not (tmp_path / "b").exists()
    finally:
        first.release()
    with RunLock(tmp_path / "b", bucket=bucket):  # released: free
        pass
    # A marker from another host whose heartbeat stopped long ago is stale: taken over with a warning.
    import pyarrow.fs

    from core.storage import join_uri

    fs, path = pyarrow.fs.FileSystem.from_uri(join_uri(bucket, RUN_OWNER))
    dead = Holder("node-7", 4242, "2026-01-01T00:00:00", "python search/run.py --name toy", "t0k3n", heartbeat=0.0)
    with fs.open_output_stream(path) as f:
        f.write(dead.to_json().encode())
    warnings = []
    with RunLock(tmp_path / "c", bucket=bucket, warn=warnings.append):
        pass
    assert len(warnings) == 1 and "pid 4242 on node-7" in warnings[0] and "heartbeat stopped" in warnings[0]
    # a fresh heartbeat from another host is a live holder
    alive = Holder("node-7", 4242, "2026-01-01T00:00:00", "python search/run.py --name toy", "t0k3n",
                   heartbeat=__import__("time").time())
    with fs.open_output_stream(path) as f:
        f.write(alive.to_json().encode())
    with pytest.raises(RunLocked, match="pid 4242 on node-7"):
        RunLock(tmp_path / "d", bucket=bucket).acquire()


SPACE = '''SETTINGS = {"num_samples": 2, "max_epochs": 1, "cpus_per_trial": 1, "max_concurrent": 1, "train_size": 16,
            "eval_size": 16, "tpe_startup_trials": 1,
            "trial": {"backbone": "resnet10t", "batch_size": 8, "num_workers": 0}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
'''


@pytest.mark.slow  # the plan's torch child, and ensemble/predict commands through their CLIs
def test_every_command_refuses_a_run_another_holds_and_changes_nothing(tmp_path, capsys, monkeypatch):
    from ensemble.__main__ import main as ensemble_main
    from ensemble.predict import main as predict_main
    from search.run import main as search_main

    data = make_image_folder(tmp_path / "data")
    (tmp_path / "space.py").write_text(SPACE)
    storage = tmp_path / "results"
    run = storage / "toy"
    run.mkdir(parents=True)
    (run / "leaderboard.csv").write_text("rank,trial_id\n1,abc\n")
    (run / "ensemble.json").write_text('{"min_image_side": 8}')  # enough for predict's checks before the lock
    proc, fresh = holder(run), holder(storage / "new")  # "new": a start that holds the name, nothing written yet
    try:
        before = snapshot(tmp_path)
        monkeypatch.setenv("RAY_ADDRESS", "")
        commands = {
            "search": (["--space", str(tmp_path / "space.py"), "--data", str(data), "--storage", str(storage),
                        "--name", "new"], search_main, fresh.pid),
            "ensemble": ([str(run)], ensemble_main, proc.pid),
            "predict": ([str(run), str(data / "test")], predict_main, proc.pid),
        }
        for name, (argv, command, pid) in commands.items():
            assert command(argv) == 2, name
            err = capsys.readouterr().err
            assert err.count("error:") == 1 and f"is in use by pid {pid}" in err, (name, err)
            assert "Traceback" not in err
        assert snapshot(tmp_path) == before
    finally:
        proc.communicate("\n")
        fresh.communicate("\n")


@pytest.mark.slow  # two real searches (two plans with their torch children, one Ray run): a minute or two
def test_two_searches_with_one_name_started_together_one_runs_the_other_is_refused(tmp_path):
    data = make_image_folder(tmp_path / "data")
    (tmp_path / "space.py").write_text(SPACE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(ROOT / "search/run.py"), "--space", str(tmp_path / "space.py"), "--data", str(data),
            "--storage", str(tmp_path / "results"), "--name", "toy", "--ensemble-top-k", "0"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = [(proc.wait(timeout=900), *proc.communicate()) for proc in procs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    (refused,) = [err for code, _, err in outcomes if code == 2]
    assert refused.count("error:") == 1 and "Traceback" not in refused
    # it met the lock (named by its owner record, or before the holder had written that record: the lock is taken
    # first, the record written next), or it came after the first had finished and found the run
    assert any(said in refused for said in ("is in use by pid", "is in use by another process", "already exists")), refused
    run = tmp_path / "results" / "toy"
    import pandas as pd

    assert len(pd.read_csv(run / "leaderboard.csv")) == 2  # the one search's trials
    assert "resumes" not in json.loads((run / "provenance.json").read_text())  # the second left no trace
    assert not (run / RUN_OWNER).exists()


def never_started_folder(run: Path, asked: bool = False) -> Path:
    """What a start that failed before Tune's first state leaves: its start files and a study holding at most
    the enqueued warm starts (asked=True: a trial was asked, so it is a run)."""
    import optuna

    from search.study import journal_storage

    run.mkdir(parents=True)
    (run / "space.py").write_text(SPACE)
    (run / "plan.json").write_text("{}")
    (run / "provenance.json").write_text("{}")
    study = optuna.create_study(storage=journal_storage(run / "optuna_study.log"), study_name="toy")
    study.enqueue_trial({"lr": 0.01})
    if asked:
        study.ask()
    return run


def test_a_start_that_never_reached_tune_leaves_a_folder_a_fresh_start_reuses(tmp_path):
    from search.run_folder import never_started, set_aside_abandoned_start

    run = never_started_folder(tmp_path / "toy")
    assert never_started(run)
    assert not never_started(never_started_folder(tmp_path / "ran", asked=True))
    said = []
    aside = set_aside_abandoned_start(run, say=said.append)
    assert sorted(p.name for p in aside.iterdir()) == ["optuna_study.log", "plan.json", "provenance.json", "space.py"]
    assert [p.name for p in run.iterdir()] == [aside.name] and "kept in" in said[0]  # nothing deleted


@pytest.mark.slow  # the plan's torch child
def test_the_plan_lets_a_fresh_start_reuse_a_never_started_folder_but_not_a_run(tmp_path, capsys):
    from search.run import main as search_main

    data = make_image_folder(tmp_path / "data")
    (tmp_path / "space.py").write_text(SPACE)
    never_started_folder(tmp_path / "results" / "toy")
    never_started_folder(tmp_path / "results" / "ran", asked=True)
    argv = ["--space", str(tmp_path / "space.py"), "--data", str(data), "--storage", str(tmp_path / "results")]
    assert search_main([*argv, "--name", "toy", "--dry-run"]) == 0
    assert search_main([*argv, "--name", "ran", "--dry-run"]) == 2
    assert "A search named 'ran' already exists" in capsys.readouterr().err
