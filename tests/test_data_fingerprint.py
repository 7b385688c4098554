"""The dataset a trial sees is the plan's (core/data_fingerprint.py): a class removed or added, a file added or
truncated, a file rewritten in place are each refused with one message, by the trial, the ensemble and a
resume; a copy of the data elsewhere (mtimes not kept) is the same dataset."""
import json
import os
import shutil

import pytest

from conftest import make_image_folder
from core.data import DataError, index_dataset
from core.data_fingerprint import check_fingerprint, fingerprint


def index(root):
    return index_dataset(root, warn=lambda _: None)


def changed(root, how):
    if how == "class-removed":
        shutil.rmtree(root / "train" / "fox")
        shutil.rmtree(root / "val" / "fox")
    elif how == "class-added":
        make_image_folder(root / "extra", classes=("owl",), per_class=12, val_per_class=4, test=0)
        shutil.move(root / "extra" / "train" / "owl", root / "train" / "owl")
        shutil.move(root / "extra" / "val" / "owl", root / "val" / "owl")
        shutil.rmtree(root / "extra")
    elif how == "file-added":  # a new image (a copy of one would be skipped as a duplicate)
        make_image_folder(root / "extra", classes=("cat",), per_class=1, val_per_class=0, test=0, seed=9)
        shutil.move(root / "extra" / "train" / "cat" / "0.png", root / "train" / "cat" / "extra.png")
        shutil.rmtree(root / "extra")
    elif how == "file-truncated":  # still an image Pillow reads: a shorter valid PNG in the same place
        shutil.copy(root / "test" / "t000.png", root / "train" / "cat" / "1.png")
        os.truncate(root / "train" / "cat" / "2.png", 10)  # and one cut short (skipped by the index)
    elif how == "rewritten-in-place":
        path = root / "train" / "dog" / "3.png"
        stat = path.stat()
        path.write_bytes(path.read_bytes())
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.mark.parametrize("how, says", [
    ("class-removed", "3 classes then, 2 now"),
    ("class-added", "3 classes then, 4 now"),
    ("file-added", "images then"),
    ("file-truncated", "images then"),
    ("rewritten-in-place", "modification times differ"),
])
def test_a_changed_dataset_is_refused_with_one_message(tmp_path, how, says):
    root = make_image_folder(tmp_path / "data")
    recorded = fingerprint(index(root))
    check_fingerprint(recorded, index(root), who="x", fix="y")  # unchanged: fine
    changed(root, how)
    with pytest.raises(DataError) as raised:
        check_fingerprint(recorded, index(root), who="Trial on DATA", fix="Restore it.")
    message = str(raised.value)
    assert message.startswith("Trial on DATA: the dataset at") and says in message and message.endswith("Restore it.")


def test_a_copy_elsewhere_without_its_mtimes_is_the_same_dataset(tmp_path):
    root = make_image_folder(tmp_path / "data")
    recorded = fingerprint(index(root))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # new mtimes
    check_fingerprint(recorded, index(copy), who="x", fix="y")
    check_fingerprint("", index(copy), who="x", fix="y")  # a run from before fingerprints: not checked


def test_a_trial_refuses_a_dataset_changed_after_the_plan(tmp_path):
    from core.errors import UserError
    from trainable.local_sink import LocalSink
    from trainable.trial import train_trial

    root = make_image_folder(tmp_path / "data")
    config = {"backbone": "resnet10t", "data": str(root), "epochs": 1, "batch_size": 8, "num_workers": 0,
              "train_size": 16, "eval_size": 16, "data_fingerprint": fingerprint(index(root))}
    changed(root, "class-removed")
    with pytest.raises(UserError, match="the dataset at .* changed since the search's plan indexed it"):
        train_trial(config, LocalSink(tmp_path / "trial", printer=lambda _: None))


def test_the_ensemble_and_a_resume_refuse_a_changed_dataset(tmp_path, capsys):
    from ensemble.__main__ import main as ensemble_main
    from search.plan import _fingerprint

    root = make_image_folder(tmp_path / "data")
    recorded = fingerprint(index(root))
    run = tmp_path / "results" / "toy"
    run.mkdir(parents=True)
    plan = {"results_format": 2, "settings": {"num_samples": 1, "seed": 0, "trial": {}}, "data": str(root),
            "data_fingerprint": recorded}
    (run / "plan.json").write_text(json.dumps(plan))
    (run / "leaderboard.csv").write_text("rank,trial_id,status,reason,epochs,best_checkpoint\n1,abc,completed,,1,\n")
    changed(root, "file-added")
    before = sorted(p.name for p in run.iterdir())
    assert ensemble_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "python -m ensemble: the dataset at" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir() if p.name != ".run.lock") == before
    with pytest.raises(DataError, match="--resume: the dataset at .*start a new search under another --name"):
        _fingerprint(index(root), plan)
    assert _fingerprint(index(root), None) != recorded  # a new search fingerprints the data as it is
