"""python -m ensemble results/<name> [options]: the ensemble stage on its own (a search runs it at its end).

Members are scored in this process by default; with --address they are scored as Ray tasks with the
trials' resources: `--address auto` joins the running cluster (the search's), `--address local` starts
a Ray instance on this machine for the run. `--refit kfold:K|bag:N` also retrains the candidates as Ray
Tune trials (ensemble/refit.py); without --address it starts a local Ray for them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ensemble import strategies
from ensemble.build import __doc__ as build_doc
from ensemble.build import build_ensemble
from ensemble.refit import RefitScheme
from core.storage import run_storage
from ensemble.tasks import Resources
from core.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble", description=build_doc + "\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a search's results folder, results/<name>")
    p.add_argument("--top-k", type=int, default=5, help="candidates: the K best qualifying trials (default 5)")
    p.add_argument("--min-epochs", type=int, help="trials must have run this many epochs (default: the most any ran)")
    p.add_argument("--budget-m", type=float, default=100.0, help="max parameters of the ensemble, millions (default 100)")
    p.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    p.add_argument("--tta-size", type=int, help="inference crop side in px (default: each trial's eval_size)")
    p.add_argument("--strategy", default="auto", choices=["auto", *strategies.STRATEGIES])
    p.add_argument("--metric", default="acc", choices=strategies.METRICS, help="what selection maximises")
    p.add_argument("--cv-folds", type=int, default=5, help="folds of val for choosing the strategy (0 = none)")
    p.add_argument("--min-gain", type=float, default=0.0, help="metric each member beyond the first must add")
    p.add_argument("--data", help="dataset path, if it moved since the search (default: the trials' own)")
    p.add_argument("--storage", help="the search's --storage URI (s3://..., gs://...), when its checkpoints are "
                                     "in the cloud (default: the one in RUN_DIR/plan.json)")
    p.add_argument("--address", help="score members as Ray tasks: 'auto' joins the running cluster, HOST:PORT a "
                                     "given one, 'local' starts Ray here (default: score in this process)")
    p.add_argument("--refit", metavar="kfold:K|bag:N",
                   help="also retrain the candidates on train+val as Ray Tune trials, K folds or N bootstrap bags "
                        "each, and ensemble them on their out-of-fold predictions (prediction_refit.csv); "
                        "re-running the same command resumes or reuses the refit")
    p.add_argument("--cpus-per-task", type=float, help="CPUs per scoring task (default: the run's cpus_per_trial)")
    p.add_argument("--gpus-per-task", type=float, help="GPUs per scoring task (default: the run's gpus_per_trial)")
    return p


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    parser.prog = prog or parser.prog  # `resnet-search SUBCOMMAND` (cli/main.py) shows its own name
    args = parser.parse_args(argv)
    try:
        resources = Resources.of_run(args.run_dir)
        resources = Resources(args.cpus_per_task if args.cpus_per_task is not None else resources.num_cpus,
                              args.gpus_per_task if args.gpus_per_task is not None else resources.num_gpus)
        if args.refit is not None:
            RefitScheme.parse(args.refit)  # a typo ends here, before any member is scored
        # The refit's Tune trials need Ray: without --address it starts (and stops) one on this machine.
        with _ray(args.address or ("local" if args.refit else None)):
            build_ensemble(args.run_dir, top_k=args.top_k, min_epochs=args.min_epochs, budget_m=args.budget_m,
                           tta=args.tta, tta_size=args.tta_size, strategy=args.strategy, metric=args.metric,
                           cv_folds=args.cv_folds, min_gain=args.min_gain, data=args.data,
                           storage=args.storage or run_storage(args.run_dir),
                           resources=resources, use_ray=args.address is not None, refit=args.refit)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


class _ray:
    """Ray for the duration of the run when --address is given; never shuts down a Ray it did not start."""

    def __init__(self, address: str | None):
        self.address, self.started = address, False

    def __enter__(self):
        if self.address is None:
            return self
        import ray

        if not ray.is_initialized():
            ray.init(address=None if self.address == "local" else self.address, logging_level="WARNING")
            self.started = True
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
