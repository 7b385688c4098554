"""Test accuracy of a search's ensemble against its best single member, from one search run.

Reads results/<name>/ensemble.json and prediction.csv (written by the search's ensemble stage), the
candidates' cached test logits in ensemble_cache/, and DATA/test_labels.csv (image_name,label).
"Best single member" is the candidate with the best validation accuracy — what you would submit
without an ensemble; every candidate's test accuracy is listed too.

    python -m benchmarks.experiments.ensemble_vs_single results/<name> --labels ../shared/datasets/tiny100/test_labels.csv

For a bare Tune experiment (benchmarks/experiments/search_comparison.py's runs have no leaderboard), give
--space: the leaderboard is rebuilt from Tune's saved results and the ensemble stage run first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from benchmarks.record import write_record


def accuracy(names, predicted_labels, truth: dict) -> float:
    hits = [truth[n] == p for n, p in zip(names, predicted_labels)]
    return sum(hits) / len(hits)


def ensemble_bare_experiment(run_dir: Path, space_path: Path, top_k: int) -> None:
    from ray import tune

    from ensemble.build import build_ensemble
    from search.leaderboard import build_leaderboard
    from search.outputs import write_leaderboard
    from search.space_file import load_space
    from search.tuner import trainable_with_resources

    space = load_space(space_path)
    results = tune.Tuner.restore(str(run_dir.resolve()), trainable=trainable_with_resources(space)).get_results()
    data = next(iter(results)).config["data"]
    write_leaderboard(run_dir, build_leaderboard(results, space, space.trial_config({}, data)), None)
    build_ensemble(run_dir, top_k=top_k)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--space", type=Path, help="space file, to ensemble a bare Tune experiment first")
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args()
    if args.space and not (args.run_dir / "ensemble.json").exists():
        ensemble_bare_experiment(args.run_dir, args.space, args.top_k)
    truth = dict(pd.read_csv(args.labels, dtype=str).itertuples(index=False, name=None))
    manifest = json.loads((args.run_dir / "ensemble.json").read_text())
    predictions = pd.read_csv(args.run_dir / "prediction.csv", dtype=str)
    rows = []
    for entry in manifest["scores"]["members"]:
        (cache,) = (args.run_dir / "ensemble_cache").glob(f"{entry['trial_id']}-*plain-eval*.pt")
        c = torch.load(cache, weights_only=False)
        names = [Path(f).stem for f in c["test_files"]]
        pred = [c["classes"][i] for i in c["test_logits"].argmax(axis=1)]
        rows.append({"model": entry["trial_id"], "val_acc": entry["acc"], "test_acc": accuracy(names, pred, truth),
                     "params_m": entry["param_count"] / 1e6})
    members = pd.DataFrame(rows).sort_values("val_acc", ascending=False)
    best = members.iloc[0]
    ensemble_test = accuracy(predictions["image_name"], predictions["pred_label"], truth)
    chosen = "+".join(f"{m['trial_id']}x{m['weight']:.2f}" for m in manifest["members"])
    print(members.to_markdown(index=False, floatfmt=".4f"))
    summary = {"ensemble": manifest["strategy"], "members": chosen, "params_m": manifest["param_total"] / 1e6,
               "ensemble_test_acc": ensemble_test, "best_single": best["model"], "best_single_test_acc": best["test_acc"],
               "gain": ensemble_test - best["test_acc"], "test_images": len(predictions)}
    print(json.dumps(summary))
    write_record("ensemble_vs_single", {"run": str(args.run_dir), "members": rows, **summary})


if __name__ == "__main__":
    main()
