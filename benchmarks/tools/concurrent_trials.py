"""Epochs per hour of N trials running at once on one node, with loader='pil' and with the shared cache.

N processes (one core each, as Ray would place 1-CPU trials) each train the same small config on
realistic ~500 px JPEGs at 224 px. 'pil' decodes every JPEG in every trial every epoch; 'cache'
shares one decoded memory map per node, built by whichever trial gets the lock first (its build time
is inside the wall clock of the first 'cache' run of each N: the cold figure; a second 'cache' run
reuses it: the warm figure, what every later trial on the node sees).

On a GPU node the N trials share the one visible GPU: that is Ray's fractional placement
(gpus_per_trial = 1/N), and each row then also records every trial's peak GPU memory.

    python -m benchmarks.tools.concurrent_trials --trials 1 2 --images 200 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from benchmarks.record import write_record
from benchmarks.tools.realistic_jpegs import make_jpeg_folder

CONFIG = {"backbone": "resnet10t", "train_size": 224, "eval_size": 224, "batch_size": 32, "num_workers": 0,
          "lr": 0.003, "augment": "none", "scale_min": 0.35}


def one_trial(config: dict, out: str, cache: str) -> tuple[int, float]:
    """Epochs trained, and peak GPU memory in GB (0 on CPU)."""
    os.environ["RESNET_SEARCH_CACHE"] = cache
    import torch
    torch.set_num_threads(1)
    from trainable.local_sink import LocalSink
    from trainable.trial import train_trial
    epochs = train_trial(config, LocalSink(Path(out), printer=lambda _: None))["epoch"]
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0
    return epochs, round(peak, 2)


def run(n: int, loader: str, data: Path, epochs: int, cache: Path, tmp: Path, tag: str, config: dict = CONFIG) -> dict:
    """Each trial writes its metrics.jsonl under tmp/{tag}-{loader}-{n}-{i}."""
    ctx = multiprocessing.get_context("spawn")
    jobs = [({**config, "data": str(data), "epochs": epochs, "seed": i, "loader": loader},
             str(tmp / f"{tag}-{loader}-{n}-{i}"), str(cache)) for i in range(n)]
    started = time.perf_counter()
    with ctx.Pool(n) as pool:
        results = pool.starmap(one_trial, jobs)
    wall = time.perf_counter() - started
    epochs_done = sum(e for e, _ in results)
    return {"trials": n, "loader": loader, "run": tag, "epochs": epochs_done, "wall_s": round(wall, 1),
            "epochs_per_hour": round(epochs_done * 3600 / wall, 1), "peak_gpu_gb": [m for _, m in results]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--backbone", default=CONFIG["backbone"])
    p.add_argument("--batch-size", type=int, default=CONFIG["batch_size"])
    args = p.parse_args()
    CONFIG.update(backbone=args.backbone, batch_size=args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_jpeg_folder(tmp / "jpegs", classes=10, per_class=args.images // 10)
        for n in args.trials:
            cache = tmp / f"cache-{n}"  # a cold node per N
            for loader, tag in (("pil", "run1"), ("cache", "cold"), ("cache", "warm"), ("pil", "run2")):
                rows.append(run(n, loader, data, args.epochs, cache, tmp, tag))
                print(json.dumps(rows[-1]), flush=True)
    summary = []
    for n in args.trials:
        pil = [r["epochs_per_hour"] for r in rows if r["trials"] == n and r["loader"] == "pil"]
        cold, warm = ([r["epochs_per_hour"] for r in rows if r["trials"] == n and r["run"] == t][0]
                      for t in ("cold", "warm"))
        base = sum(pil) / len(pil)
        summary.append({"trials": n, "pil_epochs_per_hour": round(base, 1), "cache_cold": cold, "cache_warm": warm,
                        "warm_vs_pil": round(warm / base, 2), "cold_vs_pil": round(cold / base, 2)})
    figures = {"config": CONFIG, "images": args.images, "epochs": args.epochs, "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d"), "rows": rows, "summary": summary}
    print(json.dumps(figures, indent=1))
    write_record("concurrent_trials", figures)


if __name__ == "__main__":
    main()
