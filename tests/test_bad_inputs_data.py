"""Issue #11, part C: data that is wrong in ways a user does not see, `python -m trainable`'s small ones,
damaged checkpoints and `python -m ensemble.predict --out`.

BAD_INPUTS is the table: each case ends with exit code 2, one `error:` message naming what is wrong, where
and how to fix it, no traceback, and every file that was already there unchanged (nothing new either: a
run that fails before its first epoch leaves no --out behind). DAMAGE is the same for checkpoint files,
one layer down: restore() refuses them before anything is applied. The behaviour tests below pin what the
table cannot: EXIF pixels in both loaders, TIFF scaling values, the fallback to the previous checkpoint.
"""
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from ensemble.predict import main as predict_main
from trainable import checkpoint
from trainable.__main__ import main as trainable_main, read_json_object
from core.config import TrialConfig
from core.data import BROKEN_LINK, DUPLICATE, FOLDER_LINK, TOO_LARGE, index_dataset, load_rgb
from trainable.local_sink import LocalSink
from trainable.trial import setup_run, train_trial

TINY = {"backbone": "resnet10t", "train_size": 16, "eval_size": 16, "batch_size": 4, "num_workers": 0,
        "lr": 0.01, "epochs": 2, "seed": 1}
TINY_FLAGS = ["--backbone", "resnet10t", "--epochs", "1", "--train-size", "16", "--eval-size", "16",
              "--batch-size", "2", "--num-workers", "0"]
NON_UTF8 = os.fsdecode(b"caf\xe9")  # a name Linux allows but UTF-8 cannot encode: 'caf\udce9'


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def png(path: Path, color=(120, 60, 30), size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def toy(root: Path, classes=("cat", "dog"), **kwargs) -> Path:
    return make_image_folder(root, classes=classes, per_class=4, val_per_class=2, size=16, test=0, **kwargs)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root (links not followed: some cases are link loops) -> its content's digest."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                found[path] = "link to " + os.readlink(path)
            elif os.path.isfile(path):
                found[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                found[path] = "folder"
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 2-epoch run (checkpoints epoch_0001 and epoch_0002) on a 2-class toy dataset."""
    root = tmp_path_factory.mktemp("trained")
    data = toy(root / "data", seed=3)
    torch.set_num_threads(1)
    config = TrialConfig.from_dict({**TINY, "data": str(data)}).to_dict()  # as python -m trainable saves it
    train_trial(config, LocalSink(root / "run", printer=lambda _: None, config=config))
    return root / "run", data


# ------------------------------------------------------------------------------------ the table

@dataclass
class Case:
    id: str
    setup: Callable  # (tmp_path, trained, monkeypatch) -> argv
    expect: tuple[str, ...]  # substrings of the message: what, where, how
    cli: Callable = trainable_main


def trial(data: Path, out: Path, *extra) -> list[str]:
    return ["--data", str(data), *TINY_FLAGS, "--out", str(out), *extra]


def nested_too_deep(t, *_):
    toy(t / "d" / "train")  # the archive's train/ and val/ inside DATA/train
    return trial(t / "d", t / "out")


def one_folder_deeper(t, *_):
    toy(t / "d" / "hw1")
    return trial(t / "d", t / "out")


def single_class(t, *_, name="cat"):
    toy(t / "d", classes=(name,))
    return trial(t / "d", t / "out")


def no_class_folders(t, *_):
    for i in range(3):
        png(t / "d" / "train" / f"{i}.png", (i, 0, 0))
    return trial(t / "d", t / "out")


def only_corrupt_in_dog(t, *_):
    toy(t / "d", classes=("cat",))
    (t / "d/train/dog").mkdir()
    (t / "d/train/dog/a.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return trial(t / "d", t / "out")


def only_oversized_in_dog(t, _, monkeypatch):
    toy(t / "d", classes=("cat",))
    png(t / "d/train/dog/big.png", size=(30, 30))    # 900 px: over the limit
    png(t / "d/train/dog/bomb.png", size=(50, 50))   # 2,500 px: over twice the limit, Pillow refuses to open it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)
    return trial(t / "d", t / "out")


def only_a_folder_link_loop_in_dog(t, *_):
    toy(t / "d", classes=("cat",))
    (t / "d/train/dog").mkdir()
    os.symlink("../dog", t / "d/train/dog/again")  # would recurse until the path is too long
    return trial(t / "d", t / "out")


def only_looping_file_links_in_dog(t, *_):
    toy(t / "d", classes=("cat",))
    (t / "d/train/dog").mkdir()
    os.symlink("b.png", t / "d/train/dog/a.png")
    os.symlink("a.png", t / "d/train/dog/b.png")
    return trial(t / "d", t / "out")


def val_class_misspelt(t, *_):
    toy(t / "d")
    (t / "d/val/cat").rename(t / "d/val/cot")
    return trial(t / "d", t / "out")


def val_repeats_train(t, *_):
    toy(t / "d")
    shutil.copy(t / "d/train/cat/0.png", t / "d/val/cat/copy.png")
    return trial(t / "d", t / "out")


def val_all_corrupt(t, *_):
    toy(t / "d")
    shutil.rmtree(t / "d/val")
    (t / "d/val/cat").mkdir(parents=True)
    (t / "d/val/cat/x.png").write_bytes(b"")
    return trial(t / "d", t / "out")


def corrupt_test_folder(t, *_):
    toy(t / "d")
    (t / "d/test").mkdir()
    (t / "d/test/x.png").write_text("not a png")
    return trial(t / "d", t / "out")


def holdout_empty(t, *_):
    for k, name in enumerate(("cat", "dog")):
        png(t / "d/train" / name / "only.png", (k * 100, 0, 0))
    return trial(t / "d", t / "out")


def weights_file_folder(t, *_):
    toy(t / "d")
    (t / "w").mkdir()
    return trial(t / "d", t / "out", "--weights-file", str(t / "w"))


def config_file(t, payload: bytes, name="trial.json") -> Path:
    (t / name).write_bytes(payload)
    return t / name


def with_config(t, payload: bytes, *extra):
    toy(t / "d")
    return ["--config", str(config_file(t, payload)), "--data", str(t / "d"), "--out", str(t / "out"), *extra]


def existing_run(t, trained, *_):
    run, _ = trained
    shutil.copytree(run, t / "run")
    return [*TINY_FLAGS, "--out", str(t / "run")]


def resume_on_other_classes(t, trained, *_):
    run, _ = trained
    shutil.copytree(run, t / "run")
    toy(t / "other", classes=("cat", "dog", "fox"))
    return ["--out", str(t / "run"), "--resume", "--data", str(t / "other"), "--epochs", "3"]


def resume_with_broken_saved_config(t, trained, *_):
    run, _ = trained
    shutil.copytree(run, t / "run")
    (t / "run/config.json").write_text('{"backbone": "resnet10t",')
    return ["--out", str(t / "run"), "--resume"]


def fake_ensemble(t) -> Path:
    """An ensemble.json whose member checkpoint does not exist: any inference would fail on it, so a
    message about --out proves --out is checked first."""
    run = t / "results/toy"
    run.mkdir(parents=True)
    (run / "ensemble.json").write_text(json.dumps({
        "classes": ["cat", "dog"], "strategy": "logit_average", "min_image_side": 8, "storage": None,
        "inference": {"flip": False, "size": None},
        "members": [{"trial_id": "aaa111", "checkpoint": str(t / "gone/checkpoint_000001"), "weight": 1.0}]}))
    png(t / "images/x.png")
    return run


def predict_to(out: Callable[[Path], Path]):
    def setup(t, *_):
        run = fake_ensemble(t)
        return [str(run), str(t / "images"), "--out", str(out(t))]
    return setup


def predict_out_in_a_file(t):
    (t / "notes.txt").write_text("x")
    return t / "notes.txt/pred.csv"


BAD_INPUTS = [
    # --- data layouts (python -m trainable --data D)
    Case("train-inside-train", nested_too_deep, ("unpacked one level too deep", "train holds train, val",
                                                 "move the contents")),
    Case("dataset-one-folder-deeper", one_folder_deeper, ("No train folder", "one folder deeper", "hw1 as the data folder")),
    Case("single-class", single_class, ("single class folder (cat)", "needs at least 2", "Add one folder per class")),
    Case("single-class-non-utf8-name", lambda t, *_: single_class(t, name=NON_UTF8),
         ("single class folder (caf\\xe9)", "needs at least 2")),
    Case("data-missing", lambda t, *_: trial(t / "nope", t / "out"), ("nope does not exist", "Expected layout")),
    Case("data-is-a-file", lambda t, *_: (t / "f").write_text("x") and trial(t / "f", t / "out"),
         ("is not a folder", "Expected layout")),
    Case("train-without-class-folders", no_class_folders, ("train has no class folders", "Expected layout")),
    Case("class-with-only-corrupt-images", only_corrupt_in_dog, ("no usable images", "train/dog", "Add images")),
    Case("class-with-only-oversized-images", only_oversized_in_dog,
         ("2 image(s) over Pillow's decompression-bomb limit", "downscale them", "no usable images: ")),
    Case("folder-link-loop", only_a_folder_link_loop_in_dog, ("folder link(s) back to a folder already read",
                                                              "dog/again", "no usable images")),
    Case("file-link-loop", only_looping_file_links_in_dog, ("2 link(s) that point nowhere or loop", "fix or remove the links",
                                                            "no usable images")),
    Case("val-class-unknown", val_class_misspelt, ("no matching train class", "did you mean 'cat'", "Rename or remove")),
    Case("val-repeats-train-images", val_repeats_train, ("copies of train images", "val/cat/copy.png = train/cat/0.png",
                                                         "Remove them from val/")),
    Case("val-all-corrupt", val_all_corrupt, ("val has no usable images", "remove it to hold out")),
    Case("test-all-corrupt", corrupt_test_folder, ("test has 1 file(s) but no usable image", "Fix or remove them")),
    Case("holdout-empty", holdout_empty, ("hold-out", "is empty", "provide DATA/val")),
    # --- python -m trainable: config file and --out
    Case("config-is-a-folder", lambda t, *_: (t / "cfg").mkdir() or ["--config", str(t / "cfg"), "--out", str(t / "out")],
         ("cfg is a folder", "give the path of a JSON file")),
    Case("config-missing", lambda t, *_: ["--config", str(t / "none.json"), "--out", str(t / "out")],
         ("none.json does not exist", "check the path")),
    Case("config-latin-1", lambda t, *_: with_config(t, '{"backbone": "resnet10t", "note": "café"}'.encode("latin-1")),
         ("is not UTF-8, UTF-16 or UTF-32 text", "save it as UTF-8")),
    Case("config-not-json", lambda t, *_: with_config(t, b"backbone: resnet10t\n"),
         ("trial.json is not valid JSON", "line 1 column 1", "fix the file there")),
    Case("config-a-list", lambda t, *_: with_config(t, b'[{"lr": 0.1}]'), ("holds a JSON list", "one JSON object")),
    Case("config-bom-unknown-key", lambda t, *_: with_config(t, b'\xef\xbb\xbf{"lrr": 0.1}'),
         ("Unknown trial config key 'lrr'", "Did you mean: lr", "--help-config")),
    Case("config-utf16-bad-value", lambda t, *_: with_config(t, '{"lr": 0}'.encode("utf-16")),
         ("'lr' has value 0", "(0.0, 10.0]")),
    Case("weights-file-is-a-folder", weights_file_folder,
         ("Could not load pretrained weights", "w: weights_file is a folder", "Give the path of a .pth/.safetensors")),
    Case("weights-file-missing", lambda t, *_: toy(t / "d") and trial(t / "d", t / "out", "--weights-file", "none.pth"),
         ("from none.pth: weights_file does not exist", "Give the path of a .pth/.safetensors file")),
    Case("flag-bad-value", lambda t, *_: toy(t / "d") and trial(t / "d", t / "out", "--lr", "-1"), ("'lr' has value -1.0",)),
    Case("out-is-a-file", lambda t, *_: toy(t / "d") and (t / "o").write_text("x") and trial(t / "d", t / "o"),
         ("--out", "is a file, not a folder", "give a folder path")),
    Case("out-under-a-file", lambda t, *_: toy(t / "d") and (t / "o").write_text("x") and trial(t / "d", t / "o/run"),
         ("cannot be created", "o is a file", "Choose another --out")),
    Case("out-holds-a-run", existing_run, ("already holds a run; nothing was overwritten", "--resume")),
    Case("resume-nothing", lambda t, *_: ["--out", str(t / "out"), "--resume"], ("Nothing to resume", "Drop --resume")),
    Case("resume-other-classes", resume_on_other_classes,
         ("trained on 2 classes, but the data now has 3", "new: fox", "start a new run")),
    Case("resume-broken-saved-config", resume_with_broken_saved_config,
         ("The run's config", "config.json is not valid JSON", "fix the file there")),
    # --- python -m ensemble.predict
    Case("predict-out-is-a-folder", predict_to(lambda t: t), ("is a folder", "give a file path"), predict_main),
    Case("predict-out-parent-missing", predict_to(lambda t: t / "no/such/p.csv"), ("no/such does not exist",
                                                                                   "Create it first"), predict_main),
    Case("predict-out-parent-is-a-file", predict_to(predict_out_in_a_file), ("notes.txt is a file, not a folder",
                                                                            "Choose another --out"), predict_main),
    Case("predict-no-ensemble", lambda t, *_: ["results/none", str(t)], ("No ensemble at", "Build one first"),
         predict_main),
    Case("predict-run-dir-is-the-manifest", lambda t, *_: [str(fake_ensemble(t) / "ensemble.json"), str(t / "images")],
         ("ensemble.json is a file", "give the results folder that holds ensemble.json", "results/toy"), predict_main),
    Case("predict-images-missing", lambda t, *_: [str(fake_ensemble(t)), str(t / "nope"), "--out", str(t / "p.csv")],
         ("Image folder", "nope does not exist", "give a folder that holds the images"), predict_main),
    Case("predict-no-usable-images", lambda t, *_: [str(fake_ensemble(t)), str(t / "results")],
         ("results has no usable images to predict", "put the images directly in it"), predict_main),
]


def test_the_table_is_at_least_30_cases():
    assert len(BAD_INPUTS) >= 30 and len({c.id for c in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_is_one_clear_message_and_changes_nothing(case, tmp_path, trained, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = case.setup(tmp_path, trained, monkeypatch)
    before = snapshot(tmp_path)
    code = case.cli(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    for part in case.expect:
        assert part in out + err, (part, out + err)
    assert "Traceback" not in out + err
    (out + err).encode("utf-8")  # printable: a name that is not UTF-8 is shown escaped, never raw
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------ damaged checkpoints

@pytest.fixture(scope="module")
def objects(trained):
    """What a trial restores into: its model, optimizer, ... built from the trained run's config."""
    _, data = trained
    run = setup_run(TrialConfig.from_dict({**TINY, "data": str(data)}), torch.device("cpu"))
    return {"model": run.model, "ema": None, "optimizer": run.optimizer, "scheduler": run.scheduler, "scaler": None,
            "classes": run.index.classes, "loader_generator": run.loader_generator}


def state_of(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def other_weights(path: Path) -> None:
    saved = torch.load(path, weights_only=False)
    saved["model"].pop(next(iter(saved["model"])))
    torch.save(saved, path)


DAMAGE = {
    "model-truncated": (checkpoint.MODEL_FILE, truncate, "cannot be read"),
    "model-empty": (checkpoint.MODEL_FILE, lambda p: p.write_bytes(b""), "cannot be read"),
    "model-text": (checkpoint.MODEL_FILE, lambda p: p.write_text("hello"), "cannot be read"),
    "model-missing": (checkpoint.MODEL_FILE, Path.unlink, "is missing"),
    "model-foreign-dict": (checkpoint.MODEL_FILE, lambda p: torch.save({"weights": 1}, p), "not a checkpoint of this project"),
    "model-other-network": (checkpoint.MODEL_FILE, other_weights, "holds weights of another model"),
    "state-truncated": (checkpoint.TRAIN_STATE_FILE, truncate, "cannot be read"),
    "state-empty": (checkpoint.TRAIN_STATE_FILE, lambda p: p.write_bytes(b""), "cannot be read"),
    "state-missing": (checkpoint.TRAIN_STATE_FILE, Path.unlink, "is missing"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused_before_anything_is_applied(kind, trained, objects, tmp_path):
    run, _ = trained
    directory = shutil.copytree(run / "checkpoints/epoch_0002", tmp_path / "epoch_0002")
    name, damage, reason = DAMAGE[kind]
    damage(directory / name)
    before = state_of(objects["model"])
    with pytest.raises(checkpoint.CheckpointDamaged, match=reason) as caught:
        checkpoint.restore(directory, **objects)
    assert str(directory / name) in str(caught.value)
    after = state_of(objects["model"])
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_epochs_state(trained, objects, tmp_path):
    run, _ = trained
    copy = shutil.copytree(run, tmp_path / "run")
    truncate(copy / "checkpoints/epoch_0002" / checkpoint.MODEL_FILE)
    warnings = []
    epoch, history = checkpoint.restore_latest_good(
        LocalSink(copy, resume=True).checkpoints_to_resume(), warnings.append, **objects)
    assert epoch == 1 and len(history) == 1
    saved = checkpoint.load_model_file(run / "checkpoints/epoch_0001")["model"]
    restored = objects["model"].state_dict()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)  # epoch 1's weights, not epoch 2's
    state = torch.load(run / "checkpoints/epoch_0001" / checkpoint.TRAIN_STATE_FILE, weights_only=False)
    assert objects["optimizer"].state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    assert "epoch_0002/model.pt cannot be read" in warnings[0] and "trying the previous one" in warnings[0]
    assert "(epoch 1)" in warnings[1] and "trained again" in warnings[1]


def test_no_good_checkpoint_starts_fresh_with_a_warning(trained, objects, tmp_path):
    run, _ = trained
    copy = shutil.copytree(run, tmp_path / "run")
    for d in (copy / "checkpoints").iterdir():
        (d / checkpoint.MODEL_FILE).write_bytes(b"")
    warnings = []
    assert checkpoint.restore_latest_good(LocalSink(copy, resume=True).checkpoints_to_resume(),
                                          warnings.append, **objects) == (0, [])
    assert len(warnings) == 3 and "starts again from epoch 1" in warnings[-1]


def test_cli_resume_with_a_damaged_latest_checkpoint_retrains_the_lost_epoch(trained, tmp_path, capsys):
    run, _ = trained
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "checkpoints/epoch_0002" / checkpoint.TRAIN_STATE_FILE).write_text("not a checkpoint")
    assert trainable_main(["--out", str(copy), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "epoch_0002/train_state.pt cannot be read" in err and "resumed from" in err and "Traceback" not in err
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # epoch 2's old row was replaced by the retrained one
    torch.load(copy / "checkpoints/epoch_0002" / checkpoint.TRAIN_STATE_FILE, weights_only=False)  # readable again


def test_tune_trial_finds_the_older_checkpoints_tune_kept(tmp_path):
    from ray import tune

    from worker.tune_sink import older_checkpoints

    trial_dir = tmp_path / "trial"
    for name in ("checkpoint_000000", "checkpoint_000001", "checkpoint_000002", "checkpoint_000003", "checkpoint_tmp1"):
        (trial_dir / name).mkdir(parents=True)
    (trial_dir / "checkpoint_000004").write_text("a file, not a checkpoint folder")
    older = older_checkpoints(tune.Checkpoint(str(trial_dir / "checkpoint_000002")))
    assert [Path(c.path).name for c in older] == ["checkpoint_000001", "checkpoint_000000"]  # newest first


# ------------------------------------------------------------------------------------ images

def test_exif_orientation_gives_the_same_upright_pixels_in_pil_and_cache(tmp_path):
    from trainable.decoded_cache import ensure_decoded

    stored = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # 3 wide, 2 high, every pixel distinct
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    upright = np.rot90(stored, k=-1)  # 2 wide, 3 high
    assert np.array_equal(np.asarray(load_rgb(str(tmp_path / "phone.png"))), upright)
    cached = ensure_decoded([str(tmp_path / "phone.png")], short_side=2, workers=1)
    assert np.array_equal(cached.image(0).permute(1, 2, 0).numpy(), upright)


@pytest.mark.parametrize("mode, values, dtype", [
    ("I;16", [0, 128 * 257, 65535], np.uint16),       # 16-bit scans: PIL's convert would clip 32,896 to 255
    ("I", [0, 128 * 257, 65535], np.int32),           # 32-bit integer TIFFs holding 16-bit data
    ("F", [0.0, 0.5, 1.0], np.float32),               # float TIFFs in 0..1
])
def test_16_bit_and_float_tiffs_are_scaled_to_8_bit_not_clipped(tmp_path, mode, values, dtype):
    from trainable.decoded_cache import ensure_decoded

    pixels = np.array([values * 3] * 3, dtype=dtype)  # 9 wide, 3 high
    path = tmp_path / f"scan-{mode.replace(';', '')}.tif"
    Image.fromarray(pixels).save(path)  # the dtype picks the mode
    with Image.open(path) as im:
        assert im.mode == mode  # the file really holds that mode
    expected = np.array([[0, 128, 255] * 3] * 3, dtype=np.uint8)
    rgb = np.asarray(load_rgb(str(path)))
    assert np.array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    cached = ensure_decoded([str(path)], short_side=3, workers=1)
    assert np.array_equal(cached.image(0).permute(1, 2, 0).numpy(), rgb)


def test_oversized_images_are_skipped_with_why_and_how_not_called_corrupt(tmp_path, monkeypatch):
    root = toy(tmp_path / "d")
    png(root / "train/cat/big.png", size=(30, 30))
    png(root / "train/cat/bomb.png", size=(50, 50))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the 16x16 toy images stay under it
    warnings = []
    index = index_dataset(root, warn=warnings.append)
    assert sorted(Path(p).name for p in index.skipped[TOO_LARGE]) == ["big.png", "bomb.png"]
    assert len(index.train) == 8
    [message] = warnings
    assert "decompression-bomb limit of 400 pixels" in message and "downscale them" in message
    assert "corrupt" not in message


# ------------------------------------------------------------------------------------ layouts

def test_link_loops_end_in_a_warning_not_a_hang(tmp_path):
    root = toy(tmp_path / "d")
    os.symlink("..", root / "train/cat/up")          # a link to train/: a loop, and it would pull dog/ into cat
    os.symlink("x.png", root / "train/dog/y.png")    # two file links pointing at each other
    os.symlink("y.png", root / "train/dog/x.png")
    warnings = []
    index = index_dataset(root, warn=warnings.append)
    assert index.class_counts() == [4, 4]
    assert [Path(p).name for p in index.skipped[FOLDER_LINK]] == ["up"]
    assert sorted(Path(p).name for p in index.skipped[BROKEN_LINK]) == ["x.png", "y.png"]
    assert any("folder link(s) back to a folder already read" in w for w in warnings)


def test_copies_of_a_file_count_once_and_copies_in_test_or_two_classes_are_warned(tmp_path):
    root = toy(tmp_path / "d")
    shutil.copy(root / "train/cat/0.png", root / "train/cat/0_again.png")   # same class: counted once
    os.link(root / "train/dog/1.png", root / "train/dog/1_hardlink.png")     # a hard link is a copy too
    shutil.copy(root / "train/cat/1.png", root / "train/dog/cat-in-dog.png")  # another class: conflicting labels
    (root / "test").mkdir()
    shutil.copy(root / "train/cat/2.png", root / "test/t0.png")              # test image seen in training
    png(root / "test/t1.png", (1, 2, 3))
    warnings = []
    index = index_dataset(root, warn=warnings.append)
    assert sorted(Path(p).name for p in index.skipped[DUPLICATE]) == ["0_again.png", "1_hardlink.png"]
    assert index.class_counts() == [4, 5]
    assert any("copies of an image in another class" in w and "dog/cat-in-dog.png = train/cat/1.png" in w
               for w in warnings)
    assert any("1 test image(s)" in w and "test/t0.png" in w for w in warnings)
    assert len(index.test) == 2


def test_copies_in_one_class_are_never_split_between_train_and_the_holdout(tmp_path):
    root = toy(tmp_path / "d")
    shutil.rmtree(root / "val")
    for i in range(4):
        shutil.copy(root / f"train/cat/{i}.png", root / f"train/cat/{i}-copy.png")
    index = index_dataset(root, val_fraction=0.25, warn=lambda _: None)
    digests = lambda samples: {hashlib.sha256(Path(p).read_bytes()).digest() for p, _ in samples}
    assert not digests(index.train) & digests(index.val)
    assert len(index.skipped[DUPLICATE]) == 4


# ------------------------------------------------------------------------------------ names that are not UTF-8

def test_non_utf8_file_names_reach_prediction_csv_escaped(trained, tmp_path, capsys):
    run, data = trained
    images = tmp_path / "images"
    png(images / (NON_UTF8 + ".png"), (200, 10, 10))
    png(images / "plain.png", (10, 10, 200))
    results = tmp_path / "results/toy"
    results.mkdir(parents=True)
    classes = checkpoint.load_model_file(run / "checkpoints/epoch_0002")["classes"]
    (results / "ensemble.json").write_text(json.dumps({
        "classes": classes, "strategy": "logit_average", "min_image_side": 8, "storage": None,
        "inference": {"flip": False, "size": None},
        "members": [{"trial_id": "aaa111", "checkpoint": str(run / "checkpoints/epoch_0002"), "weight": 1.0}]}))
    assert predict_main([str(results), str(images), "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "image_name,pred_label"
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["caf\\xe9", "plain"]
    assert all(r.split(",")[1] in classes for r in rows[1:])


def test_non_utf8_names_in_data_are_indexed_and_reported_printably(tmp_path):
    root = toy(tmp_path / "d")
    png(root / "train/cat" / (NON_UTF8 + ".png"), (250, 250, 0))
    (root / "train/dog" / (NON_UTF8 + ".jpg")).write_bytes(b"broken")
    warnings = []
    index = index_dataset(root, warn=warnings.append)
    assert index.class_counts() == [5, 4]
    [message] = warnings
    assert "train/dog/caf\\xe9.jpg" in message
    message.encode("utf-8")


# ------------------------------------------------------------------------------------ config encodings

@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
def test_config_files_are_read_in_every_unicode_encoding(tmp_path, encoding):
    path = tmp_path / "trial.json"
    path.write_bytes(json.dumps({"backbone": "resnet10t", "note": "café ✓"}, ensure_ascii=False).encode(encoding))
    assert read_json_object(path, "Config file") == {"backbone": "resnet10t", "note": "café ✓"}


def test_ctrl_c_before_the_first_epoch_leaves_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    import trainable.trial

    def interrupted(config, reporter):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainable.trial, "train_trial", interrupted)
    toy(tmp_path / "d")
    assert trainable_main(trial(tmp_path / "d", tmp_path / "out")) == 130
    err = capsys.readouterr().err
    assert "nothing was written" in err and "--resume" not in err
    assert not (tmp_path / "out").exists()
