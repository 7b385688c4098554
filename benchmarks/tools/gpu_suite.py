"""The GPU figures in one command (issue #14): the GPU tests, then each measurement against a baseline
measured in the same run. Writes OUT/gpu_suite.json and OUT/gpu_suite.md (a table for BENCHMARKS.md).

    # on an offline GPU node, with the wheel folder made by benchmarks/tools/gpu_wheels.sh (docs/gpu-node.md):
    python -m benchmarks.tools.gpu_suite --wheels ./wheels --out gpu-suite
    # the CPU rehearsal (tiny sizes; tests/test_gpu_suite.py runs it so the suite cannot rot):
    python -m benchmarks.tools.gpu_suite --rehearsal --out /tmp/gpu-rehearsal

Parts, each in its own process under a time limit, so a hang or a crash costs one part, not the run;
inside a part each measurement that fails is recorded with its error and the next one runs:
    tests       pytest -m gpu tests/test_gpu.py
    step        train images/s, resnet50 at 224 px, bf16 + channels_last + fused AdamW + cudnn.benchmark:
                trial vs the reference loop (benchmarks/tools/trial_vs_reference.py) on synthetic tensors and on
                JPEGs through both loaders; then each switch off in turn, and with torch.compile
    loader      the loader alone: images/s delivered to the device with N workers, pil vs cache, with and
                without an augment policy; from these and the step figure: cache workers to keep the GPU fed
    fractional  1, 2, 4 small trials sharing the GPU (benchmarks/tools/concurrent_trials.py): train images/s per
                GPU and each trial's peak GPU memory
    checkpoint  full trial checkpoint save/restore seconds vs the weights alone, resnet50 and
                seresnextaa101d_32x8d

This file imports only the standard library at module level: with --wheels it installs the project first.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.record import write_record  # standard library only, like this module

ROOT = Path(__file__).resolve().parents[2]
CPUS = os.cpu_count() or 1
PARTS = ("tests", "step", "loader", "fractional", "checkpoint")

# Sizes are bounded so the whole suite fits in ~8 minutes on one H100-class GPU with 16 cores; the time
# limits only stop a hung part (they add up to more than 8 minutes on purpose).
PROFILES = {
    "gpu": {
        "backbone": "resnet50", "size": 224, "batch_size": 128, "workers": max(1, CPUS - 2), "batches": 15,
        "warmup": 3, "compile": True, "torch_threads": None,
        "jpegs": {"classes": 10, "per_class": 240, "long_side": 500},  # ~one pass of the step part's batches
        "loader_workers": sorted({1, 4, max(1, CPUS - 2)}), "loader_batches_per_worker": 6,
        "augments": ["none", "trivialaugment"],
        "fractional": [1, 2, 4], "fractional_config": {"backbone": "resnet10t", "train_size": 224, "eval_size": 224,
                                                        "batch_size": 64}, "fractional_epochs": 2,
        "fractional_worker_cores": max(0, CPUS - 4),
        "checkpoint_models": ["resnet50", "seresnextaa101d_32x8d"], "checkpoint_repeats": 3,
        "timeouts": {"tests": 180, "step": 300, "loader": 150, "fractional": 180, "checkpoint": 120},
    },
    "rehearsal": {
        "backbone": "resnet10t", "size": 32, "batch_size": 8, "workers": 0, "batches": 2, "warmup": 1,
        "torch_threads": 1,  # tiny convolutions on a shared CPU: more threads only contend  # minutes of compile on 2 shared cores; test_trial covers the switch reaching the objects
        "jpegs": {"classes": 3, "per_class": 6, "long_side": 48},
        "loader_workers": [0, 1], "loader_batches_per_worker": 2, "augments": ["none", "trivialaugment"],
        "compile": False,  # minutes of compile on 2 shared cores; test_trial covers the switch reaching the objects
        "fractional": [1], "fractional_config": {"backbone": "resnet10t", "train_size": 32, "eval_size": 32,
                                                     "batch_size": 8}, "fractional_epochs": 1,
        "fractional_worker_cores": 0,
        "checkpoint_models": ["resnet10t"], "checkpoint_repeats": 1,
        "timeouts": {"tests": 120, "step": 120, "loader": 120, "fractional": 120, "checkpoint": 120},
    },
}
SWITCHES = {"--no-amp": "fp32 (no bf16 autocast)", "--no-channels-last": "channels_last off",
            "--no-fused": "foreach AdamW (not fused)", "--no-cudnn-benchmark": "cudnn.benchmark off",
            "--compile": "with torch.compile"}
STEP_TRIAL = "trial, synthetic, all switches on"


class SuiteError(Exception):
    """Something the person running the suite can fix; main prints it as one message."""


# ------------------------------------------------------------------------------------ the parts (children)

class Recorder:
    """Rows of one part, rewritten to its file after each one, so a killed part keeps what it measured."""

    def __init__(self, path: Path, part: str):
        self.path, self.part, self.rows, self.extra = path, part, [], {}

    def measure(self, name: str, fn, *, unit: str = "img/s", baseline: dict | None = None, digits: int = 1) -> dict:
        row = {"part": self.part, "measurement": name, "unit": unit}
        if baseline is not None:
            row["baseline"] = baseline["measurement"]
        started = time.perf_counter()
        try:
            row["value"] = round(float(fn()), digits)
            if baseline is not None and baseline.get("value"):
                row["baseline_value"] = baseline["value"]
                row["ratio"] = round(row["value"] / baseline["value"], 2)
        except Exception as err:  # one bad measurement must not lose the others
            row["error"] = f"{type(err).__name__}: {err}"[:500]
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - started, 1)
        self.add(row)
        _free_device_memory()
        return row

    def skip(self, name: str, reason: str, unit: str = "img/s") -> dict:
        return self.add({"part": self.part, "measurement": name, "unit": unit, "skipped": reason})

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.path.write_text(json.dumps({"rows": self.rows, **self.extra}, indent=1))
        return row


def _free_device_memory():
    import gc
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def jpeg_folder(profile: dict, work: Path) -> Path:
    from benchmarks.tools.realistic_jpegs import make_jpeg_folder
    spec = profile["jpegs"]
    return make_jpeg_folder(work / "jpegs", classes=spec["classes"], per_class=spec["per_class"],
                            long_side=spec["long_side"])


def step_argv(profile: dict, data: Path) -> list[str]:
    return ["--data", str(data), "--backbone", profile["backbone"], "--size", str(profile["size"]),
            "--batch-size", str(profile["batch_size"]), "--workers", str(profile["workers"]),
            "--batches", str(profile["batches"]), "--warmup", str(profile["warmup"])]


def part_step(profile: dict, work: Path, rec: Recorder) -> None:
    import torch
    from benchmarks.tools.trial_vs_reference import (add_num_classes, build_parser, reference_images_per_s,
                                                     trial_images_per_s)
    from trainable.trial import pick_device

    device = pick_device()
    rec.extra["machine"] = machine(torch, device)
    data = jpeg_folder(profile, work)
    base = step_argv(profile, data)

    def args(*flags):
        return add_num_classes(build_parser().parse_args(base + list(flags)))

    reference = rec.measure("reference loop, synthetic", lambda: reference_images_per_s(args("--synthetic"), device))
    trial = rec.measure(STEP_TRIAL, lambda: trial_images_per_s(args("--synthetic"), device, "pil"), baseline=reference)
    for flag, what in SWITCHES.items():
        if flag != "--compile":
            rec.measure(f"trial, synthetic, {what}", lambda: trial_images_per_s(args("--synthetic", flag), device, "pil"),
                        baseline=trial)
    jpeg_reference = rec.measure("reference loop, JPEGs", lambda: reference_images_per_s(args(), device))
    for loader in ("pil", "cache"):
        rec.measure(f"trial, JPEGs, loader={loader}", lambda: trial_images_per_s(args(), device, loader),
                    baseline=jpeg_reference)
    # Last: compiling takes a minute or more, and a part that runs out of time loses only what is left.
    name = f"trial, synthetic, {SWITCHES['--compile']}"
    if profile["compile"]:
        rec.measure(name, lambda: trial_images_per_s(args("--synthetic", "--compile"), device, "pil"), baseline=trial)
    else:
        rec.skip(name, "compile is off in this profile")


def machine(torch, device) -> dict:
    cuda = device.type == "cuda"
    return {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})",
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1) if cuda else 0,
            "cpus": CPUS, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}


def delivered_images_per_s(loader, device, batches: int, workers: int) -> float:
    """Images/s arriving on the device, timed from the moment every worker has delivered its first batch
    (worker start untimed; from there the workers are about equally far into their next batch)."""
    import torch
    from benchmarks.tools.trial_vs_reference import Limited

    warmup, seen, start = max(1, workers), 0, None
    for i, (images, _) in enumerate(Limited(loader, batches + warmup)):
        images = images.to(device, non_blocking=True)
        if i < warmup:
            start = time.perf_counter()
            continue
        seen += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def part_loader(profile: dict, work: Path, rec: Recorder) -> None:
    from benchmarks.tools.loader_throughput import DATA_CONFIG, cache_loader, pil_loader
    from trainable.cached_pipeline import on_device
    from core.config import TrialConfig
    from core.data import index_dataset
    from trainable.decoded_cache import ensure_decoded
    from trainable.trial import pick_device

    device = pick_device()
    index = index_dataset(jpeg_folder(profile, work), warn=lambda _: None)
    size = profile["size"]
    base = TrialConfig(train_size=size, eval_size=size, batch_size=profile["batch_size"])
    decoded = ensure_decoded([p for p, _ in index.train + index.val], base.required_cache_side,
                             workers=max(1, profile["workers"]))
    for augment in profile["augments"]:
        cfg = TrialConfig(**{**base.to_dict(), "augment": augment})
        for n in profile["loader_workers"]:
            batches = profile["loader_batches_per_worker"] * max(1, n)
            pil = rec.measure(f"loader=pil, augment={augment}, {n} workers",
                              lambda: delivered_images_per_s(pil_loader(index, cfg, n), device, batches, n))
            rec.measure(f"loader=cache, augment={augment}, {n} workers",
                        lambda: delivered_images_per_s(on_device(cache_loader(decoded, index, cfg, n), DATA_CONFIG,
                                                                 device), device, batches, n), baseline=pil)


def part_fractional(profile: dict, work: Path, rec: Recorder) -> None:
    from benchmarks.tools.concurrent_trials import CONFIG, run

    data = jpeg_folder(profile, work)
    one = None
    for n in profile["fractional"]:
        config = {**CONFIG, **profile["fractional_config"], "num_workers": profile["fractional_worker_cores"] // n}
        out = work / f"fractional-{n}"
        result = {}

        def shared():
            result.update(run(n, "cache", data, profile["fractional_epochs"], work / "cache", out, "share",
                              config=config))
            # Each trial's own last-epoch train images/s, summed: the GPU's throughput while they overlap.
            return sum(json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["train_images_per_s"]
                       for d in sorted(out.glob("share-cache-*")))

        row = rec.measure(f"{n} trial(s) sharing the GPU, train img/s per GPU", shared, baseline=one)
        one = one or row
        rec.measure(f"{n} trial(s) sharing the GPU, epochs per hour (wall clock, start-up included)",
                    lambda: result["epochs_per_hour"], unit="epochs/h")
        peak = result.get("peak_gpu_gb") or []
        rec.measure(f"{n} trial(s) sharing the GPU, peak GPU memory per trial", lambda: max(peak), unit="GB",
                    digits=2)


def part_checkpoint(profile: dict, work: Path, rec: Recorder) -> None:
    import argparse as ap

    import torch
    from benchmarks.tools.trial_vs_reference import SyntheticBatches
    from trainable import checkpoint
    from core.config import TrialConfig
    from trainable.loop import train_one_epoch
    from trainable.trial import pick_device, setup_run

    device = pick_device()
    data = jpeg_folder(profile, work)
    folder = work / "checkpoint"
    folder.mkdir(exist_ok=True)
    for name in profile["checkpoint_models"]:
        built = {}

        def build():
            cfg = TrialConfig.from_dict({"backbone": name, "data": str(data), "train_size": 64, "eval_size": 64,
                                         "batch_size": 4, "num_workers": 0})
            run = setup_run(cfg, device)
            # One update, so the optimizer holds its moments as in a real checkpoint.
            batch = SyntheticBatches(ap.Namespace(batch_size=4, size=64, num_classes=len(run.index.classes)), device, 1)
            train_one_epoch(run.step_model, batch, run.optimizer, run.scheduler, run.step, epoch=0, scaler=run.scaler)
            built["run"] = run
            return run.n_params / 1e6

        rec.measure(f"{name}: parameters", build, unit="M", digits=1)
        run = built.get("run")
        if run is None:
            for what in ("save weights only", "save trial checkpoint", "restore weights only", "restore trial checkpoint"):
                rec.skip(f"{name}: {what}", "the model was not built (see its parameters row)", unit="s")
            continue
        repeats = profile["checkpoint_repeats"]

        def save_weights():
            return _median_seconds(lambda: torch.save(run.model.state_dict(), folder / "weights.pt"), repeats)

        def save_full():
            return _median_seconds(lambda: checkpoint.save(
                folder, model=run.model, ema=None, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                epoch=1, classes=run.index.classes, config=run.cfg.to_dict(), data_config=run.data_config,
                metrics={}, loader_generator=run.loader_generator, history=[]), repeats)

        def restore_weights():
            return _median_seconds(lambda: run.model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu")),
                                   repeats)

        def restore_full():
            return _median_seconds(lambda: checkpoint.restore(
                folder, model=run.model, ema=None, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                classes=run.index.classes, loader_generator=run.loader_generator), repeats)

        weights = rec.measure(f"{name}: save weights only (torch.save state_dict)", save_weights, unit="s", digits=3)
        rec.measure(f"{name}: save trial checkpoint", save_full, unit="s", digits=3, baseline=weights)
        weights = rec.measure(f"{name}: restore weights only", restore_weights, unit="s", digits=3)
        rec.measure(f"{name}: restore trial checkpoint", restore_full, unit="s", digits=3, baseline=weights)
        built.clear()
    shutil.rmtree(folder, ignore_errors=True)  # a seresnextaa101d checkpoint with its Adam moments is ~1 GB


def _median_seconds(fn, repeats: int) -> float:
    import torch
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


PART_FUNCTIONS = {"step": part_step, "loader": part_loader, "fractional": part_fractional,
                  "checkpoint": part_checkpoint}


def run_part_here(part: str, work: Path) -> None:
    profile = json.loads((work / "profile.json").read_text())
    if profile["torch_threads"]:
        import torch
        torch.set_num_threads(profile["torch_threads"])
    PART_FUNCTIONS[part](profile, work, Recorder(work / f"{part}.json", part))


# ------------------------------------------------------------------------------------ the driver (parent)

def install_from_wheels(wheels: Path, work: Path) -> dict:
    """The project and its other dependencies from the wheel folder; the node's own torch/torchvision stay."""
    from importlib.metadata import PackageNotFoundError, version

    if not wheels.is_dir():
        raise SuiteError(f"--wheels {wheels} is not a folder; fill one with `bash benchmarks/tools/gpu_wheels.sh "
                         f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]} {wheels}` "
                         "on a machine with package access and copy it here.")
    try:
        keep = {name: version(name) for name in ("torch", "torchvision")}
    except PackageNotFoundError as err:
        raise SuiteError(f"This Python ({sys.executable}) has no {err.name}: the suite uses the node's own CUDA build "
                         "of torch and torchvision (e.g. NVIDIA's PyTorch container); it never installs them.") from None
    constraints = work / "keep-torch.txt"
    constraints.write_text("".join(f"{name}=={v}\n" for name, v in keep.items()))
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "-c", str(constraints),
           "-e", f"{ROOT}[test]"]
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SuiteError(f"Installing from {wheels} failed (torch {keep['torch']} kept); pip said:\n"
                         f"{done.stdout[-1500:]}{done.stderr[-1500:]}\nIf a wheel is missing, rerun "
                         "benchmarks/tools/gpu_wheels.sh for this node's Python; if torch is outside the supported range "
                         "(docs/gpu-node.md), use a container with a torch in it.")
    return {"wheels": str(wheels), "kept": keep}


def child_env(work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RESNET_SEARCH_CACHE"] = str(work / "cache")  # the suite's own node cache, never ~/.cache
    return env


def has_cuda(env: dict) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, env=env, timeout=120)
    if probe.returncode != 0:
        raise SuiteError(f"`import torch` fails in {sys.executable}: {probe.stderr.strip()[-500:]}")
    return probe.stdout.strip() == "True"


def run_bounded(cmd: list[str], timeout: int, **kwargs) -> int | None:
    """The exit code, or None when it ran past `timeout`: then its whole process group (DataLoader workers,
    trial processes) is killed, so nothing it started keeps the GPU."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def run_tests(work: Path, env: dict, timeout: int) -> tuple[dict, dict]:
    report = work / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py",
           f"--junitxml={report}"]
    started = time.perf_counter()
    with open(work / "gpu-tests.log", "w") as log:
        timed_out = run_bounded(cmd, timeout, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) is None
    tail = (work / "gpu-tests.log").read_text()[-3000:]
    seconds = round(time.perf_counter() - started, 1)
    summary = {"command": "python -m pytest -m gpu tests/test_gpu.py", "seconds": seconds, "timed_out": timed_out}
    row = {"part": "tests", "measurement": "GPU tests (pytest -m gpu)", "unit": "passed", "seconds": seconds}
    if not report.exists():
        row["error"] = f"timed out after {timeout} s" if timed_out else f"pytest wrote no report: {tail[-300:]}"
        return {**summary, "output_tail": tail}, row
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    row.update(value=passed, unit=f"passed of {counts['tests']} ({len(failed)} failed, {counts['skipped']} skipped)")
    return {**summary, **counts, "passed": passed, "failed": failed, "output_tail": tail if failed else ""}, row


def run_child(part: str, work: Path, env: dict, timeout: int) -> tuple[list[dict], dict, dict]:
    out = work / f"{part}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.tools.gpu_suite", "--part", part, "--work", str(work)]
    started = time.perf_counter()
    status = {"timed_out": False}
    with open(work / f"{part}.log", "w") as log:
        rc = run_bounded(cmd, timeout, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    status["timed_out"], status["rc"] = rc is None, rc
    status["seconds"] = round(time.perf_counter() - started, 1)
    saved = json.loads(out.read_text()) if out.exists() else {"rows": []}
    rows = saved.pop("rows")
    if status["timed_out"] or status.get("rc"):
        why = f"timed out after {timeout} s" if status["timed_out"] else f"exited with {status['rc']}"
        tail = (work / f"{part}.log").read_text()[-300:].strip()
        rows.append({"part": part, "measurement": f"{part} (the rest of the part)", "unit": "",
                     "error": f"{why}; see {work / f'{part}.log'}: {tail}"})
    return rows, saved, status


def workers_to_feed(rows: list[dict]) -> list[dict]:
    """Cache-loader workers whose delivered images/s reach the trial step's images/s, per augment policy."""
    step = next((r for r in rows if r["measurement"] == STEP_TRIAL and r.get("value")), None)
    derived = []
    for augment in sorted({r["measurement"].split("augment=")[1].split(",")[0] for r in rows
                           if r["measurement"].startswith("loader=cache")}):
        measured = sorted((int(r["measurement"].rsplit(", ", 1)[1].split()[0]), r["value"]) for r in rows
                          if r["measurement"].startswith(f"loader=cache, augment={augment},") and r.get("value"))
        row = {"part": "loader", "measurement": f"cache workers to keep the GPU fed, augment={augment}",
               "unit": "workers", "baseline": STEP_TRIAL}
        if step is None or not measured:
            row["error"] = "needs the step figure and a cache-loader figure from this run"
        else:
            enough = [n for n, v in measured if v >= step["value"]]
            per_worker = max(v / max(n, 1) for n, v in measured)
            row.update(value=enough[0] if enough else math.ceil(step["value"] / per_worker),
                       baseline_value=step["value"],
                       how="smallest measured N that keeps up" if enough else
                       "extrapolated: step img/s / best measured img/s per worker")
        derived.append(row)
    return derived


def _installed(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def markdown(result: dict) -> str:
    m = result.get("machine") or {}
    lines = [
        f"GPU suite, {result['date']}: {m.get('device', '?')} ({m.get('gpu_memory_gb', '?')} GB), {m.get('cpus', CPUS)} CPU "
        f"cores, torch {m.get('torch', '?')} (CUDA {m.get('cuda')}), Python {m.get('python', '?')}; profile "
        f"`{result['profile_name']}`.",
        f"Command: `{result['command']}`. Every ratio is against the baseline named in its row, measured in the same "
        "run, once (no repeats).",
        "",
        "| part | measurement | value | unit | baseline (same run) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        value = r.get("value", "")
        if "error" in r:
            value = f"error: {r['error'][:120]}".replace("|", "/").replace("\n", " ")
        elif "skipped" in r:
            value = f"skipped: {r['skipped']}"
        baseline = f"{r['baseline']} ({r['baseline_value']})" if "baseline_value" in r else r.get("baseline", "")
        lines.append(f"| {r['part']} | {r['measurement']} | {value} | {r['unit']} | {baseline} | {r.get('ratio', '')} |")
    return "\n".join(lines) + "\n"


def run_suite(args) -> dict:
    profile_name = "rehearsal" if args.rehearsal else "gpu"
    profile = {**PROFILES[profile_name]}
    if args.checkpoint_models:
        profile["checkpoint_models"] = args.checkpoint_models
    if args.timeout:
        profile["timeouts"] = {part: args.timeout for part in PARTS}
    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "profile.json").write_text(json.dumps(profile, indent=1))
    started = time.perf_counter()
    result = {"command": " ".join(["python", "-m", "benchmarks.tools.gpu_suite", *sys.argv[1:]]), "profile_name": profile_name,
              "profile": profile, "date": time.strftime("%Y-%m-%d %H:%M"), "install": None, "machine": None,
              "gpu_tests": None, "parts": {}, "rows": [], "errors": []}
    if args.wheels:
        result["install"] = install_from_wheels(args.wheels.resolve(), work)
    env = child_env(work)
    if not args.rehearsal and not has_cuda(env):
        raise SuiteError("No CUDA device is visible to torch here, so there are no GPU figures to measure. On a GPU "
                         "node check `nvidia-smi` and that torch is a CUDA build; to rehearse on CPU add --rehearsal.")
    for part in args.parts:
        timeout = profile["timeouts"][part]
        print(f"== {part} (at most {timeout} s)", flush=True)
        if part == "tests":
            result["gpu_tests"], row = run_tests(work, env, timeout)
            rows, status = [row], {"seconds": row["seconds"], "timed_out": result["gpu_tests"]["timed_out"]}
        else:
            rows, saved, status = run_child(part, work, env, timeout)
            result["machine"] = result["machine"] or saved.get("machine")
        result["parts"][part] = status
        result["rows"] += rows
    result["rows"] += workers_to_feed(result["rows"]) if {"step", "loader"} <= set(args.parts) else []
    result["errors"] = [f"{r['part']}: {r['measurement']}: {r['error']}" for r in result["rows"] if "error" in r]
    result["machine"] = result["machine"] or {"device": "unknown (the step part gave none)", "cpus": CPUS,
                                              "torch": _installed("torch"), "python": platform.python_version()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_suite.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_suite.md").write_text(markdown(result))
    write_record("gpu_suite", result, out_dir=out)  # commit, command, machine, date beside the table
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu-suite"), help="folder for gpu_suite.json/.md (and work/)")
    p.add_argument("--rehearsal", action="store_true", help="tiny sizes on CPU: checks the suite, measures nothing")
    p.add_argument("--wheels", type=Path, help="install the project from this wheel folder first (offline)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--checkpoint-models", nargs="+", help="backbones for the checkpoint part")
    p.add_argument("--timeout", type=int, help="seconds each part may run (default: the profile's, per part)")
    p.add_argument("--part", choices=sorted(PART_FUNCTIONS), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.part:
        run_part_here(args.part, args.work)
        return 0
    try:
        result = run_suite(args)
    except SuiteError as err:
        print(f"gpu_suite: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"{len(result['errors'])} error(s); wrote {args.out / 'gpu_suite.json'} and {args.out / 'gpu_suite.md'} "
          f"in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
