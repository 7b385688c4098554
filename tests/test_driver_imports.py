"""The search driver runs on a CPU head node that may schedule a thousand GPUs: it must not load torch or timm."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER_MODULES = ["search.plan", "search.execute", "search.tuner", "search.searcher", "search.space_file",
                  "search.leaderboard", "search.outputs", "search.tensorboard_hparams", "search.tune_reporter",
                  "search.concurrency", "search.windowed_tpe", "search.study", "search.report", "search.saved_plan",
                  "search.preflight", "search.suggestion_pool", "search.trainable_lookups", "trainable.trial_status",
                  "trainable.report_policy"]


def test_importing_the_driver_loads_neither_torch_nor_timm():
    # A fresh interpreter, with search/ first on sys.path as `python search/run.py` has it.
    code = ("import sys, json; sys.path.insert(0, 'search'); import run; "
            + "; ".join(f"import {m}" for m in DRIVER_MODULES)
            + "; print(json.dumps(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_space_check_counts_parameters_in_a_child_process():
    from search.space_file import check_space, load_space

    code = ("import sys, json; from search.space_file import check_space, load_space; "
            "check_space(load_space('spaces/full.py'), num_classes=100, samples=8); "
            "print(json.dumps([m for m in ('torch', 'timm') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_tensorboardx_is_loaded_without_torch_and_torch_stays_importable():
    # Tune's TensorBoard logger imports tensorboardX, which imports torch whenever it is installed.
    code = ("import sys; sys.path.insert(0, 'search'); "
            "from search.tensorboard_hparams import import_tensorboardx_without_torch; "
            "import_tensorboardx_without_torch(); from tensorboardX import SummaryWriter; "
            "from ray.tune.logger import TBXLoggerCallback; TBXLoggerCallback(); "
            "print('torch' in sys.modules); import torch; print(torch.ones(2).sum().item())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "2.0"]
