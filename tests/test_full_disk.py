"""Full disks (search/disk_space.py, core/atomic.py): the plan refuses a storage without room for the
checkpoints; a file written on a full disk leaves the old one whole and no temp file; a disk that fills while
the search runs ends in one message, and --resume rebuilds the leaderboard from Tune's state even when a
0-byte one was left behind. A real tmpfs where this machine lets us mount one (root), else an equivalent."""
import errno
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_image_folder
from core.atomic import write_text
from search.disk_space import check_free_space, checkpoint_bytes, full_disk_error

SPACE = '''SETTINGS = {"num_samples": 1, "max_epochs": 1, "cpus_per_trial": 1, "train_size": 16, "eval_size": 16,
            "max_failures": 0, "trial": {"backbone": "resnet10t", "batch_size": 8, "num_workers": 0}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
'''


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (unmounted afterwards), or None where mounting is not allowed."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_file_written_on_a_full_disk_leaves_the_old_one_whole(small_disk):
    if small_disk is None:
        pytest.skip("mount -t tmpfs is not allowed here (not root)")
    target = small_disk / "leaderboard.csv"
    write_text(target, "rank,trial_id\n1,abc\n")
    with pytest.raises(OSError) as raised:
        write_text(target, "x" * 4_000_000)  # twice the disk
    assert raised.value.errno == errno.ENOSPC and full_disk_error(raised.value) is raised.value
    assert target.read_text() == "rank,trial_id\n1,abc\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["leaderboard.csv"]  # no temp file left


def test_checkpoint_bytes_are_an_upper_bound_from_the_largest_model():
    from search.space_file import Space

    class Settings:
        num_samples, keep_checkpoints, trial = 10, 2, {"ema": True}

    space = Space.__new__(Space)
    object.__setattr__(space, "settings", Settings())
    assert checkpoint_bytes(space, 1_000_000) == 10 * 3 * 16 * 1_000_000


@pytest.mark.slow  # the plan's torch child (parameter counts)
def test_the_plan_refuses_a_storage_without_room_for_the_checkpoints(small_disk, tmp_path, capsys, monkeypatch):
    from search.run import main as search_main

    data = make_image_folder(tmp_path / "data")
    (tmp_path / "space.py").write_text(SPACE)
    storage = small_disk if small_disk is not None else tmp_path / "storage"
    if small_disk is None:  # the equivalent: the same disk, reported as holding 2 MB free
        import shutil

        import search.disk_space

        monkeypatch.setattr(search.disk_space.shutil, "disk_usage",
                            lambda path: shutil._ntuple_diskusage(2_000_000, 0, 2_000_000))
    code = search_main(["--space", str(tmp_path / "space.py"), "--data", str(data), "--storage", str(storage / "r"),
                        "--name", "toy", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert "free, but the checkpoints need at least" in err and "1 trials x 3 kept checkpoints" in err
    assert "pass --storage on a larger disk" in err
    assert not (storage / "r").exists()


def test_the_plan_passes_a_storage_with_room_and_warns_when_only_small_models_fit(tmp_path, monkeypatch):
    import shutil

    import search.disk_space

    space = type("S", (), {"settings": type("T", (), {"num_samples": 1, "keep_checkpoints": 1, "trial": {}})()})()
    warnings = []
    check_free_space(space, tmp_path / "new" / "run", 1000, 2000, warn=warnings.append)
    assert warnings == []
    monkeypatch.setattr(search.disk_space.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 0, 2 * 24 * 10**6))  # 48 MB free
    check_free_space(space, tmp_path / "run", 10**6, 10**7, warn=warnings.append)  # 24 MB .. 240 MB
    assert len(warnings) == 1 and "take up to 0.24 GB if every trial sampled the largest model" in warnings[0]


@pytest.mark.slow  # a real one-trial search, then its resume
def test_a_disk_that_fills_during_the_search_ends_in_one_message_and_resume_rebuilds(ray_session, tmp_path, capsys,
                                                                                       monkeypatch):
    import search.outputs
    from search.run import main as search_main

    data = make_image_folder(tmp_path / "data")
    (tmp_path / "space.py").write_text(SPACE)
    argv = ["--data", str(data), "--storage", str(tmp_path / "results"), "--name", "toy"]

    real_write = search.outputs.write_text

    def full(path, text):  # the disk fills just as the leaderboard is written
        if Path(path).name == "leaderboard.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, text)

    monkeypatch.setattr(search.outputs, "write_text", full)
    code = search_main(["--space", str(tmp_path / "space.py"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert "The disk is full writing" in err and "leaderboard.csv" in err
    assert "python search/run.py --name toy --resume" in err
    run = tmp_path / "results" / "toy"
    assert not (run / "leaderboard.csv").exists()
    monkeypatch.setattr(search.outputs, "write_text", real_write)
    (run / "leaderboard.csv").write_bytes(b"")  # what a non-atomic writer left on a full disk
    code = search_main([*argv, "--resume"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(run / "leaderboard.csv")
    assert len(table) == 1 and table["status"].iloc[0] == "completed"
