"""The search driver runs on a CPU head node that may schedule a thousand GPUs: it must not load torch or timm.
Every driver module is imported in a fresh interpreter by tests/test_layering.py; these cover what runs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # full.py's 12 backbones counted in a child process that imports torch and timm (~12 s)
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
            "from core.torch_free import import_tensorboardx_without_torch; "
            "import_tensorboardx_without_torch(); from tensorboardX import SummaryWriter; "
            "from ray.tune.logger import TBXLoggerCallback; TBXLoggerCallback(); "
            "print('torch' in sys.modules); import torch; print(torch.ones(2).sum().item())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "2.0"]
