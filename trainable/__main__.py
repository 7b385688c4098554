"""One trial without Ray, for debugging.

    python -m trainable --data DIR --backbone resnet18 --epochs 3
    python -m trainable --config trial.json --lr 3e-4          # flags override the JSON
    python -m trainable --out results/trials/x --resume          # continue an interrupted run

Every TrialConfig key is a flag (underscores or dashes). Metrics go to stdout and OUT/metrics.jsonl,
checkpoints to OUT/checkpoints/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from trainable.config import TrialConfig, describe_fields
from trainable.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainable", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="JSON file with a flat trial config")
    parser.add_argument("--out", type=Path, help="output directory (default results/trials/<backbone>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--help-config", action="store_true", help="list every config key, default and range")
    parser.add_argument("--list-backbones", action="store_true", help="list the ResNet-family backbones")
    keys = parser.add_argument_group("trial config (override --config)")
    for f in dataclasses.fields(TrialConfig):
        flags = sorted({f"--{f.name}", f"--{f.name.replace('_', '-')}"})
        if f.type == "bool":
            keys.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            keys.add_argument(*flags, dest=f.name, type=kind, default=argparse.SUPPRESS, metavar=f.type.upper())
    return parser


def config_from_args(args: argparse.Namespace) -> dict:
    values = {}
    if args.config:
        try:
            values = json.loads(args.config.read_text())
        except FileNotFoundError:
            raise UserError(f"Config file {args.config} does not exist.") from None
        except json.JSONDecodeError as err:
            raise UserError(f"Config file {args.config} is not valid JSON: {err}.") from None
        if not isinstance(values, dict):
            raise UserError(f"Config file {args.config} must hold one JSON object of key: value pairs.")
    field_names = {f.name for f in dataclasses.fields(TrialConfig)}
    values.update({k: v for k, v in vars(args).items() if k in field_names})
    return values


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        print(describe_fields())
        return 0
    if args.list_backbones:
        from trainable.model import resnet_family_names
        print("\n".join(resnet_family_names()))
        return 0
    try:
        config = config_from_args(args)
        cfg = TrialConfig.from_dict(config)  # validate before creating anything on disk
        out = args.out or Path("results/trials") / f"{cfg.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.resume and not out.exists():
            raise UserError(f"Nothing to resume: {out} does not exist. Drop --resume to start a new run.")
        if not args.resume and out.exists() and any(out.iterdir()):
            raise UserError(f"{out} already holds a run; nothing was overwritten. To continue it: "
                            f"python -m trainable --out {out} --resume")
        if args.resume and not args.config and (out / "config.json").exists():
            config = {**json.loads((out / "config.json").read_text()), **config}
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(TrialConfig.from_dict(config).to_dict(), indent=2))
        from trainable.reporting import LocalReporter
        from trainable.trial import train_trial
        print(f"Trial output: {out}")
        final = train_trial(config, LocalReporter(out, resume=args.resume))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nInterrupted. To continue: python -m trainable --out {out} --resume", file=sys.stderr)
        return 130
    if final:
        print(f"Done: val_acc {final['val_acc']:.4f} after {final['epoch']} epochs. Checkpoints in {out / 'checkpoints'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
