"""A search with --storage s3://... against a real S3 API on localhost (moto's server, started and stopped
here; pyarrow's S3 filesystem pointed at it with endpoint_override): the trials checkpoint into the bucket,
and the ensemble stage at the search's end reads every member from the bucket, with no sync-down.

Single node: the driver starts its own local Ray (a subprocess, so its workers get the dummy credentials).
The same on the local multi-node cluster: tests/test_multinode.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import S3_BUCKET as BUCKET
from conftest import S3_CREDENTIALS as CREDENTIALS
from conftest import make_image_folder

pytestmark = pytest.mark.slow

pytest.importorskip("moto.server", reason="moto[server] is in the test extra")

ROOT = Path(__file__).resolve().parents[1]
SPACE = '''
SETTINGS = {"num_samples": 2, "max_epochs": 2, "grace_period": 2, "cpus_per_trial": 1, "max_concurrent": 2,
            "train_size": 32, "eval_size": 32,
            "trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
'''


def test_a_search_on_s3_storage_ensembles_its_members_straight_from_the_bucket(s3_endpoint, tmp_path):
    import pyarrow.fs

    data = make_image_folder(tmp_path / "data", per_class=16)
    (tmp_path / "space.py").write_text(SPACE)
    storage = f"s3://{BUCKET}/tune?endpoint_override={s3_endpoint}&scheme=http"
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT), "RESNET_SEARCH_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    # cwd tmp_path: with cloud storage the leaderboard and ensemble go to ./results/<name>, not the repository's.
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(tmp_path / "space.py"),
                           "--data", str(data), "--storage", storage, "--name", "s3run", "--ensemble-top-k", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run_dir = tmp_path / "results" / "s3run"

    # Trials checkpointed into the bucket, and nowhere on the local disk.
    fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
    in_bucket = [f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(f"{BUCKET}/tune/s3run", recursive=True))
                 if f.path.endswith("/model.pt")]
    assert in_bucket, "no checkpoint in the bucket"
    assert not list(tmp_path.rglob("model.pt")), "a checkpoint was written or synced to the local disk"

    # The ensemble read every member from the bucket: none skipped, each checkpoint a path in the bucket,
    # and each member's val accuracy the one its trial reported at that checkpoint.
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert manifest["selection"]["skipped"] == [] and "Skipping trial" not in out
    assert manifest["storage"] == storage
    leaderboard = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert sorted(manifest["selection"]["candidates"]) == sorted(leaderboard.index)
    for member in manifest["scores"]["members"]:
        checkpoint = leaderboard.loc[member["trial_id"], "best_checkpoint"]
        assert checkpoint.startswith(f"{BUCKET}/tune/s3run/") and f"{checkpoint}/model.pt" in in_bucket
        assert member["acc"] == pytest.approx(leaderboard.loc[member["trial_id"], "best_val_acc"], abs=1e-6)
        assert member["scored_on"]["node_id"]  # a Ray task, while the search's Ray was still up
    assert (run_dir / "prediction.csv").exists()

    # Later, on its own: `python -m ensemble RUN` finds the bucket from the run's plan.json, no --storage.
    again = subprocess.run([sys.executable, "-m", "ensemble", str(run_dir), "--top-k", "1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    # --top-k 1 is not the search's own (2): written beside it (ensemble/destination.py)
    manifest = json.loads((run_dir / "ensembles" / "top_k1" / "ensemble.json").read_text())
    assert manifest["storage"] == storage and manifest["selection"]["skipped"] == []
