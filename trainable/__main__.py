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
import os
import sys
import time
from pathlib import Path

from core.config import TrialConfig, describe_fields
from core.errors import UserError


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


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a file in UTF-8 (BOM or not), UTF-16 or UTF-32: json detects which from the bytes."""
    try:
        values = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path (relative paths start at {Path.cwd()}).") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder; give the path of a JSON file.") from None
    except PermissionError:
        raise UserError(f"{what} {path} cannot be read (permission denied); check its permissions.") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{what} {path} is not UTF-8, UTF-16 or UTF-32 text ({err.reason} at byte {err.start}); "
                        "save it as UTF-8.") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON: {err}; fix the file there.") from None
    if not isinstance(values, dict):
        raise UserError(f"{what} {path} holds a JSON {type(values).__name__}, but must hold one JSON object of key: "
                        "value pairs, e.g. {\"backbone\": \"resnet18\", \"lr\": 0.001}.")
    return values


def config_from_args(args: argparse.Namespace) -> dict:
    values = read_json_object(args.config, "Config file") if args.config else {}
    field_names = {f.name for f in dataclasses.fields(TrialConfig)}
    values.update({k: v for k, v in vars(args).items() if k in field_names})
    return values


SIZE_SAMPLE = 200      # training images whose headers decide the size
SIZE_STEP, SIZE_RANGE = 32, (32, 224)


def sizes_from_data(config: dict) -> dict:
    """train_size / eval_size from the data when neither the config nor a flag gives them: the median short side
    of a sample of training images, rounded down to a multiple of 32 within [32, 224] (8x8 digits upscaled to
    224 px would cost 49 times the compute for nothing; photos keep timm's 224). Returns the keys to add."""
    missing = [k for k in ("train_size", "eval_size") if k not in config]
    if not missing:
        return {}
    from PIL import Image

    from core.data import index_dataset, resolve_data_root

    defaults = TrialConfig()
    cfg = TrialConfig.from_dict({k: v for k, v in config.items() if k not in missing})
    index = index_dataset(resolve_data_root(cfg.data), val_fraction=cfg.val_fraction, seed=cfg.seed,
                          min_image_side=cfg.min_image_side)
    sides = []
    for path, _ in index.train[:: max(1, len(index.train) // SIZE_SAMPLE)][:SIZE_SAMPLE]:
        with Image.open(path) as image:  # the header only
            sides.append(min(image.size))
    if not sides:
        return {}
    median = sorted(sides)[len(sides) // 2]
    size = min(max(median // SIZE_STEP * SIZE_STEP, SIZE_RANGE[0]), SIZE_RANGE[1])
    chosen = {k: size for k in missing}
    print(f"Image size {size} px for {', '.join(missing)}, from the data (median short side {median} px of "
          f"{len(sides)} training images; timm's default would be {defaults.train_size}). Set --train-size / "
          "--eval-size to choose.")
    return chosen


def check_out_dir(out: Path, resume: bool) -> None:
    """--out must be (or become) a folder we can write; checked before any data is read or trained on."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder path for the trial's output.")
    if resume and not out.exists():
        raise UserError(f"Nothing to resume: {out} does not exist. Drop --resume to start a new run.")
    if not resume and out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds a run; nothing was overwritten. To continue it: "
                        f"python -m trainable --out {out} --resume")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out} cannot be created: {existing} is a file. Choose another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} cannot be written: no write permission in {existing}. Choose another --out.")


def main(argv=None, prog=None) -> int:
    parser = build_parser()
    parser.prog = prog or parser.prog  # `resnet-search SUBCOMMAND` (cli/main.py) shows its own name
    args = parser.parse_args(argv)
    if args.help_config:
        print(describe_fields())
        return 0
    if args.list_backbones:
        from trainable.model import resnet_family_names
        print("\n".join(resnet_family_names()))
        return 0
    out = None
    try:
        config = config_from_args(args)
        cfg = TrialConfig.from_dict(config)  # validate before creating anything on disk
        out = args.out or Path("results/trials") / f"{cfg.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_out_dir(out, args.resume)
        if args.resume and not args.config and (out / "config.json").exists():
            config = {**read_json_object(out / "config.json", "The run's config"), **config}
        config.update(sizes_from_data(config))
        resolved = TrialConfig.from_dict(config).to_dict()
        from trainable.local_sink import LocalSink
        from trainable.trial import train_trial
        print(f"Trial output: {out}")
        # OUT and OUT/config.json appear with the first epoch: data or setup errors leave nothing behind.
        final = train_trial(config, LocalSink(out, resume=args.resume, config=resolved))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if out is not None and (out / "metrics.jsonl").exists():
            print(f"\nInterrupted. To continue: python -m trainable --out {out} --resume", file=sys.stderr)
        else:
            print("\nInterrupted before the first epoch finished; nothing was written.", file=sys.stderr)
        return 130
    if final:
        print(f"Done: val_acc {final['val_acc']:.4f} after {final['epoch']} epochs. Checkpoints in {out / 'checkpoints'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
