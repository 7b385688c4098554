"""Packages match processes: the import-linter contracts in pyproject.toml (layers, no cycles, what core, the
driver and worker/ may import), and, in fresh interpreters, that importing the driver loads no torch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER_PACKAGES = ("core", "compat", "search", "ensemble", "worker")


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter (the test extra) is not installed")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


def driver_modules() -> list[str]:
    """Every module of the packages the driver process may import (trainable/ is the trial's)."""
    found = []
    for package in DRIVER_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] in ("__init__", "__main__") or parts[-1] in ("scoring",):  # worker.scoring: the task body
                continue
            found.append(".".join(parts))
    return found


def test_importing_every_driver_module_loads_neither_torch_nor_timm():
    # A fresh interpreter, with search/ first on sys.path as `python search/run.py` has it.
    modules = driver_modules()
    assert "search.plan" in modules and "ensemble.build" in modules and "worker.tune_trial" in modules
    code = ("import sys, json; sys.path.insert(0, 'search'); import run; "
            + "; ".join(f"import {m}" for m in modules)
            + "; print(json.dumps(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_core_imports_neither_ray_nor_optuna():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted((ROOT / "core").glob("*.py"))
               if p.stem != "__init__"]
    code = ("import sys, json; " + "; ".join(f"import {m}" for m in modules)
            + "; print(json.dumps(sorted(m for m in ('torch', 'timm', 'ray', 'optuna') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
