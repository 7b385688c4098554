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
from ensemble.destination import DEFAULTS, resolve
from ensemble.run_checks import check_run_ready
from ensemble.refit import RefitScheme
from core.storage import StorageURI, run_storage
from core.storage_probe import check_cloud_storage
from ensemble.tasks import Resources
from core.errors import UserError
from core.run_lock import RunLock


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble", description=build_doc + "\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a search's results folder, results/<name>")
    p.add_argument("--top-k", type=int, help="candidates: the K best qualifying trials (default: the search's "
                                           "--ensemble-top-k, 5)")
    p.add_argument("--min-epochs", type=int, help="trials must have run this many epochs (default: the most any ran)")
    p.add_argument("--budget-m", type=float, help="max parameters of the ensemble, millions (default: the space's "
                                                "param_budget_m, 100)")
    p.add_argument("--tta", action="store_true", default=None, help="average each image with its horizontal mirror")
    p.add_argument("--tta-size", type=int, help="inference crop side in px (default: each trial's eval_size)")
    p.add_argument("--strategy", choices=["auto", *strategies.STRATEGIES], help="default auto")
    p.add_argument("--metric", choices=strategies.METRICS, help="what selection maximises (default acc)")
    p.add_argument("--cv-folds", type=int, help="folds of val for choosing the strategy (0 = none; default 5)")
    p.add_argument("--min-gain", type=float, help="metric each member beyond the first must add (default 0)")
    p.add_argument("--out", type=Path, help="write this ensemble to OUT/ (default: RUN_DIR itself with the search's "
                                            "options, RUN_DIR/ensembles/<options>/ with any other)")
    p.add_argument("--partial", action="store_true",
                   help="ensemble an unfinished search's finished trials (default: refused until it is resumed)")
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
        for flag, value in (("--cpus-per-task", args.cpus_per_task), ("--gpus-per-task", args.gpus_per_task)):
            if value is not None and not value >= (1e-9 if flag == "--cpus-per-task" else 0):
                raise UserError(f"{flag} is {value:g}, but must be {'> 0' if flag == '--cpus-per-task' else '>= 0'} "
                                "(leave it out to use the run's own).")
        resources = Resources.of_run(args.run_dir)
        resources = Resources(args.cpus_per_task if args.cpus_per_task is not None else resources.num_cpus,
                              args.gpus_per_task if args.gpus_per_task is not None else resources.num_gpus)
        if args.refit is not None:
            RefitScheme.parse(args.refit)  # a typo ends here, before any member is scored
        # The run is ours until we exit (core/run_lock.py); the refit's Tune trials need Ray: without --address
        # it starts (and stops) one on this machine.
        storage = args.storage or run_storage(args.run_dir)
        if storage is not None:  # one reading of a storage string, and a bucket probed as the search probes it
            storage = StorageURI.parse(storage).value
            if "://" in storage:
                check_cloud_storage(storage)
        given = {key: getattr(args, key) for key in DEFAULTS}
        options, out_dir, where = resolve(args.run_dir, given, args.out)
        with RunLock(args.run_dir, what="python -m ensemble", create=False), \
                _ray(args.address or ("local" if args.refit else None)):
            check_run_ready(args.run_dir, partial=args.partial, data=args.data)
            if where:
                print(where)
            build_ensemble(args.run_dir, **options, data=args.data, storage=storage,
                           resources=resources, use_ray=args.address is not None, refit=args.refit, out_dir=out_dir,
                           options=options)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: Tune saved the refit's state at the first
        print(f"\nInterrupted. Run the same command again to continue: finished refit models are kept, and "
              f"{args.run_dir}'s files are whole (each is replaced only once its new version is complete).",
              file=sys.stderr)
        return 130
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
