"""Hyperparameter search: python search/run.py --space spaces/full.py --data DATA

parse → load and check the space and the data → tune (Optuna TPE + ASHA on Ray Tune) → leaderboard →
summary. Nothing is run before the space, the data and every backbone's budget have been checked.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import UserError

USAGE_EXAMPLES = """examples:
  python search/run.py --space spaces/quick.py                      # CPU demo on builtin:digits
  python search/run.py --space spaces/full.py --data /data/hw1 --gpus-per-trial 1
  python search/run.py --space spaces/full.py --data /data/hw1 --dry-run
  python search/run.py --space spaces/full.py --data builtin:digits --dry-run --gpus-per-trial 0 --cpus-per-trial 2 --no-pretrained
  python search/run.py --name full-20261122 --resume                # continue an interrupted search
  python search/run.py --name full-20261122 --grow --num-samples 96 --space spaces/wider.py   # grow a finished one
  python search/run.py --space spaces/full.py --address auto --storage s3://bucket/tune   # on a cluster
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__, epilog=USAGE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", type=Path, help="space file (spaces/*.py); on --resume, the run's saved copy is used; "
                                              "on --grow, a wider space")
    p.add_argument("--data", help="dataset path or builtin:digits (overrides the space's default)")
    p.add_argument("--name", help="run name: results go to STORAGE/NAME (default: <space>-<date>-<time>)")
    p.add_argument("--seed", type=int, help="sampler and trial seed (overrides the space)")
    p.add_argument("--storage", default="results", help="local dir or cloud URI (s3://, gs://) for Tune's storage")
    p.add_argument("--num-samples", type=int, help="number of trials (on --grow: the total to reach)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (0 = as many as resources allow)")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--no-pretrained", action="store_true",
                   help="train every backbone from scratch (sets the trial key pretrained: False; no weights needed)")
    p.add_argument("--weights-file", metavar="PATH",
                   help="pretrained weights from this local file (.pth/.safetensors) instead of the hub (trial key "
                        "weights_file: a space with one backbone)")
    p.add_argument("--address", help="existing Ray cluster (e.g. auto); default: start Ray locally")
    p.add_argument("--resume", action="store_true", help="continue the search named --name")
    p.add_argument("--grow", action="store_true",
                   help="add trials to the finished search named --name, into its run and Optuna study: --num-samples "
                        "TOTAL, and --space WIDER for a wider space (same metric, max_epochs, ASHA and data; "
                        "search/growth.py); the ensemble is rebuilt over every trial"),
    p.add_argument("--dry-run", action="store_true", help="check space, data and budgets, print the plan, run nothing")
    p.add_argument("--ensemble-top-k", type=int,
                   help="ensemble the best checkpoints of the top K finished trials at the end (default 5; 0 = skip)")
    p.add_argument("--refit", metavar="kfold:K|bag:N",
                   help="after the ensemble, retrain its candidates on train+val (K folds or N bags) as Ray trials and "
                        "ensemble those too (python -m ensemble --help)")
    cost = p.add_argument_group("cost (docs/cost.md)")
    cost.add_argument("--epoch-seconds", metavar="S|BACKBONE=S,...",
                      help="seconds per epoch for the forecast, instead of timing a few batches on this machine")
    cost.add_argument("--gpu-hour-usd", type=float, metavar="USD",
                      help="price of a GPU-hour (of a CPU-hour on a CPU-only search) for the forecast and budget")
    cost.add_argument("--cluster-yaml", type=Path, metavar="PATH",
                      help="price GPU-hours from this Ray cluster file's instance types (a dated price table)")
    cost.add_argument("--budget-gpu-hours", type=float, metavar="H",
                      help="no trial starts that this many accelerator-hours cannot cover (CPU-hours without GPUs); "
                           "--resume with a larger one continues")
    cost.add_argument("--budget-usd", type=float, metavar="USD", help="the same, in dollars (needs a price)")
    cost.add_argument("--keep-all-checkpoints", action="store_true",
                      help="after the ensemble, remove no checkpoint (default: keep each trial's best and the members')")
    cost.add_argument("--keep-train-state", action="store_true",
                      help="after the ensemble, keep the optimizer state in ended trials' checkpoints (default: "
                           "weights only, what the ensemble, predict and refit read)")
    p.add_argument("--smoke-test", action="store_true", help="2 trials x 1 epoch at <= 64 px, to check the plumbing")
    return p


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    parser.prog = prog or parser.prog  # `resnet-search SUBCOMMAND` (cli/main.py) shows its own name
    args = parser.parse_args(argv)
    quiet_local_token_auth(args)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a refused plan prints a command that works
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def quiet_local_token_auth(args) -> None:
    """A Ray this driver starts has token auth on by default, and Ray warns so at every start unless RAY_AUTH_MODE
    is set: setting it to "token", what Ray picks anyway, keeps the auth and drops the warning. Only before Ray is
    imported (Ray reads the mode once, at import: set later, the driver and its GCS would disagree), and only for a
    local Ray: joining a cluster, Ray's message says something about that cluster's auth."""
    if "ray" not in sys.modules and not (args.address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def run(args) -> int:
    from search.plan import Plan

    plan = Plan.from_args(args)
    print(plan.describe())
    if args.dry_run:
        print("Dry run: nothing was started.")
        return 0
    try:
        return plan.execute()
    except Exception as err:  # a disk that fills while the search runs: one message, and how to go on
        from search.disk_space import full_disk_error

        full = full_disk_error(err)
        if full is None:
            raise
        where = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        raise UserError(f"The disk is full{where} ({full.strerror or full}). Every file the search wrote is whole "
                        f"(each is replaced only once its new version is complete). Free space under "
                        f"{plan.storage if not plan.storage_uri.is_cloud else plan.out_dir}, then continue with: "
                        f"{plan.resume_command}") from None


if __name__ == "__main__":
    sys.exit(main())
