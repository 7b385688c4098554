"""Storage that stays bounded (search/cleanup.py): after the ensemble, exactly each ended trial's best checkpoint,
every ensemble member's and every checkpoint of an unfinished trial are kept; on a local folder and on S3 (moto)."""
import json
import types
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest

from conftest import S3_BUCKET, S3_CREDENTIALS
from search import cleanup

# trial -> (status, its checkpoints, the best one); t3 is an ensemble member whose best is not its member
# checkpoint (a stale manifest would name another), t4 was interrupted: --resume needs all of its checkpoints.
TRIALS = {
    "t1": ("completed", [1, 2, 3], 3),
    "t2": ("stopped_early", [1, 2], 1),
    "t3": ("completed", [1, 2, 3], 2),
    "t4": ("interrupted", [1, 2], 1),
}
MEMBERS = [("t1", 3), ("t3", 3)]
KEPT = {("t1", 3), ("t2", 1), ("t3", 2), ("t3", 3), ("t4", 1), ("t4", 2)}


def name(k: int) -> str:
    return f"checkpoint_{k:06d}"


def stage(fs: pyarrow.fs.FileSystem, root: str, recorded_root: str, out_dir: Path) -> pd.DataFrame:
    """Writes the experiment (model.pt 1000 bytes, train_state.pt 3000 per checkpoint), ensemble.json; returns the
    leaderboard. recorded_root: how the leaderboard records checkpoint paths (local path, or inside the bucket)."""
    rows = []
    for trial_id, (status, checkpoints, best) in TRIALS.items():
        for k in checkpoints:
            folder = f"{root}/{trial_id}/{name(k)}"
            fs.create_dir(folder)
            with fs.open_output_stream(f"{folder}/model.pt") as f:
                f.write(b"m" * 1000)
            with fs.open_output_stream(f"{folder}/train_state.pt") as f:
                f.write(b"s" * 3000)
        with fs.open_output_stream(f"{root}/{trial_id}/result.json") as f:
            f.write(b"{}")
        rows.append({"trial_id": trial_id, "status": status, "best_checkpoint": f"{recorded_root}/{trial_id}/{name(best)}"})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ensemble.json").write_text(json.dumps(
        {"members": [{"trial_id": t, "checkpoint": f"{recorded_root}/{t}/{name(k)}"} for t, k in MEMBERS]}))
    return pd.DataFrame(rows)


def left(experiment: str) -> set:
    return {(f.trial_id, int(f.name.split("_")[1])) for f in cleanup.checkpoint_folders(experiment)}


def test_local_cleanup_keeps_exactly_what_the_ensemble_and_resume_need(tmp_path):
    root = tmp_path / "results" / "run"
    table = stage(pyarrow.fs.LocalFileSystem(), str(root), str(root), root)
    before = cleanup.kept_bytes(str(root))
    assert before.after == 10 * 4000 and before.kept == 10
    done = cleanup.clean(str(root), table, root)
    assert left(str(root)) == KEPT
    # 4 folders go; the 4 kept ones of ended trials lose train_state.pt; interrupted t4's 2 stay whole
    assert (done.before, done.after, done.kept, done.removed, done.states_removed) == (40_000, 12_000, 6, 4, 4)
    assert done.text().startswith("Checkpoints kept: 0.0 MB in 6 folder(s) (removed 0.0 MB: 4 folder(s): no ensemble "
                                  "member, not a trial's best; the optimizer state of 4 ended trial checkpoint(s)")
    assert (root / "t1" / "result.json").exists()          # only checkpoint folders go
    again = cleanup.clean(str(root), table, root)
    assert (again.removed, again.states_removed) == (0, 0)  # a second run removes nothing more


def test_ended_trials_keep_their_weights_and_unfinished_ones_everything(tmp_path):
    root = tmp_path / "run"
    table = stage(pyarrow.fs.LocalFileSystem(), str(root), str(root), root)
    cleanup.clean(str(root), table, root)
    for trial_id, k in KEPT:
        files = sorted(p.name for p in (root / trial_id / name(k)).iterdir())
        assert files == (["model.pt", "train_state.pt"] if trial_id == "t4" else ["model.pt"]), (trial_id, k)


def test_keep_train_state(tmp_path):
    root = tmp_path / "run"
    table = stage(pyarrow.fs.LocalFileSystem(), str(root), str(root), root)
    done = cleanup.clean(str(root), table, root, keep_train_state=True)
    assert (done.after, done.states_removed) == (24_000, 0)
    for trial_id, k in KEPT:
        assert (root / trial_id / name(k) / "train_state.pt").exists()


def test_nothing_is_removed_before_the_ensemble_is_written(tmp_path):
    root = tmp_path / "run"
    table = stage(pyarrow.fs.LocalFileSystem(), str(root), str(root), root)
    (root / "ensemble.json").unlink()
    plan = types.SimpleNamespace(experiment_path=str(root), out_dir=root, ensemble_top_k=5, refit=None)
    assert "no ensemble written: none removed" in cleanup.after_ensemble(plan, table)
    assert len(left(str(root))) == 10
    (root / "ensemble.json").write_text(json.dumps({"members": []}))
    plan.refit = "kfold:3"
    assert "the refit did not finish" in cleanup.after_ensemble(plan, table)
    plan.keep_all_checkpoints = True
    assert "--keep-all-checkpoints" in cleanup.after_ensemble(plan, table) and len(left(str(root))) == 10


def test_s3_cleanup_through_the_bucket(s3_endpoint, tmp_path, monkeypatch):
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    experiment = f"s3://{S3_BUCKET}/tune/run?endpoint_override={s3_endpoint}&scheme=http"
    fs, root = pyarrow.fs.FileSystem.from_uri(experiment)
    table = stage(fs, root, root, tmp_path / "out")  # Tune records bucket checkpoints as paths inside the bucket
    done = cleanup.clean(experiment, table, tmp_path / "out")
    assert left(experiment) == KEPT and done.removed == 4
    assert fs.get_file_info(f"{root}/t1/result.json").type == pyarrow.fs.FileType.File
