"""Predict a folder of images with a run's saved ensemble (results/<name>/ensemble.json); no search needed.

    python -m ensemble.predict results/<name> IMAGES_DIR [--out predictions.csv]

IMAGES_DIR is flat (like DATA/test). The output is `image_name,pred_label`: the file stem and the
original class-folder name. Every member's checkpoint must still exist: the ensemble's weights were
chosen with all of them, so a missing one is an error here, not a skip. Members are read from the run's
storage (ensemble.json records it) and run in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from core.data import OK, scan_images, shown
from core.errors import EnsembleError, UserError
from core.files import ENSEMBLE_MANIFEST as MANIFEST
from core.inference import Inference
from core.run_format import check_run_folder
from core.run_lock import RunLock
from core.storage import Location
from core.storage_probe import check_cloud_storage
from ensemble.report import write_predictions
from ensemble.strategies import combine
from ensemble.tasks import Runner


def read_manifest(run_dir: Path) -> dict:
    if Path(run_dir).is_file():
        raise EnsembleError(f"{shown(run_dir)} is a file; give the results folder that holds {MANIFEST} "
                            f"(e.g. {shown(Path(run_dir).parent)}).")
    check_run_folder(run_dir, "its ensemble")
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise EnsembleError(f"No ensemble at {path}. Build one first: python -m ensemble {run_dir}")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise EnsembleError(f"{path} is not valid JSON ({err}); rebuild it with python -m ensemble {run_dir}") from err


def list_images(folder: Path, min_side: int, say=print) -> list[str]:
    """The usable images directly in `folder`, sorted; unusable files are skipped with one counted message."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise EnsembleError(f"Image folder {shown(folder)} {'is not a folder' if folder.exists() else 'does not exist'}; "
                            "give a folder that holds the images (read flat, like DATA/test).")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [str(p) for p in entries if p.is_file()]
    scans = scan_images(folder, files)
    usable = [p for p in files if scans[p].kind == OK and min(scans[p].width, scans[p].height) >= min_side]
    ignored = len(entries) - len(usable)
    if ignored:
        say(f"Skipped {ignored} of {len(entries)} entries in {shown(folder)}: sub-folders, non-images, corrupt, broken "
            f"links, images over Pillow's size limit or smaller than {min_side} px (the folder is read flat).")
    if not usable:
        raise EnsembleError(f"{shown(folder)} has no usable images to predict; put the images directly in it "
                            f"(at least {min_side} px on each side).")
    return usable


def check_out_file(out: Path) -> None:
    """--out must be a file we can create or replace: checked before any member runs, not after."""
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise EnsembleError(f"--out {shown(out)} is a folder; give a file path, e.g. {shown(out / 'prediction.csv')}.")
    if not out.parent.exists():
        raise EnsembleError(f"--out {shown(out)}: the folder {shown(out.parent)} does not exist. Create it first "
                            "or choose another --out.")
    if not out.parent.is_dir():
        raise EnsembleError(f"--out {shown(out)}: {shown(out.parent)} is a file, not a folder. Choose another --out.")
    writable = os.access(out, os.W_OK) if out.exists() else os.access(out.parent, os.W_OK | os.X_OK)
    if not writable:
        raise EnsembleError(f"--out {shown(out)} cannot be written (permission denied on "
                            f"{shown(out if out.exists() else out.parent)}). Choose another --out.")


def predict_folder(run_dir: Path, images_dir: Path, out: Path | None = None, say=print) -> Path:
    """Write the ensemble's predictions for every image in images_dir; returns the CSV's path."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    out = Path(out) if out else run_dir / f"prediction-{Path(images_dir).absolute().name}.csv"
    check_out_file(out)
    files = list_images(images_dir, manifest["min_image_side"], say)
    inference = Inference(**manifest["inference"])
    storage = manifest.get("storage")
    if isinstance(storage, str) and "://" in storage:  # probed as the search probes it: one message, not a hang
        check_cloud_storage(storage, flag=f"{MANIFEST}'s storage")
    # In this process, one member after another (Runner without Ray): the members' own eval pipelines.
    answers = Runner(use_ray=False).member_logits([(m["trial_id"], Location(m["checkpoint"], storage),
                                                    manifest["classes"], files, inference) for m in manifest["members"]])
    logits = [answer["logits"] for answer in answers]
    weights = np.array([m["weight"] for m in manifest["members"]])
    pred = combine(manifest["strategy"], np.stack(logits), weights).argmax(axis=1)
    write_predictions(out, files, pred, manifest["classes"], say)
    say(f"Predictions for {len(files)} images ({manifest['strategy']} of {len(logits)} member(s)): {shown(out)}")
    return out


def _check_inputs(args) -> None:
    manifest = read_manifest(args.run_dir)
    check_out_file(Path(args.out) if args.out else Path(args.run_dir) / f"prediction-{Path(args.images_dir).absolute().name}.csv")
    list_images(args.images_dir, manifest["min_image_side"], say=lambda _: None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a results folder holding ensemble.json")
    p.add_argument("images_dir", type=Path, help="a flat folder of images")
    p.add_argument("--out", type=Path, help="output CSV (default: RUN_DIR/prediction-<folder name>.csv)")
    return p


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    parser.prog = prog or parser.prog  # `resnet-search SUBCOMMAND` (cli/main.py) shows its own name
    args = parser.parse_args(argv)
    try:
        _check_inputs(args)  # a mistake is refused before the lock: it leaves not even the lock's file
        with RunLock(args.run_dir, what="python -m ensemble.predict", create=False):  # not while an ensemble is rebuilt
            predict_folder(args.run_dir, args.images_dir, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
