"""Private names of Ray, Optuna and timm live in compat/ only (DEVELOPERS.md): this scan fails on any other.

It reads every project module's syntax tree (not tests: they may poke internals to stage a fault) and flags
  - an import from a private module of ray/optuna/timm (a dotted part starting with '_'), or of a private name;
  - an attribute `X._name` where X is bound to an import from ray/optuna/timm;
  - any use of the private attributes this project has needed of their objects (KNOWN_PRIVATE), wherever they
    appear: objects returned by these libraries carry no import to follow.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("ray", "optuna", "timm")
SCANNED = ("core", "search", "ensemble", "worker", "trainable", "spaces", "benchmarks")
# Private attributes of Ray, Optuna and timm objects the project has used (compat/ holds the ones still needed).
KNOWN_PRIVATE = {"_global_registry", "_ot_trials", "_ot_study", "_completed_trials", "_get_trials", "_trial_id",
                 "_experiment_analysis", "_trial_writer", "_trial_result", "_summary_writer_cls", "_storage",
                 "_random_sampler", "_n_startup_trials", "_group", "_get_pruned_trial_score", "_study_id",
                 "_resolve_pretrained_source", "_fs", "_metric", "_mode", "_space", "_brackets", "_rungs",
                 "_num_stopped"}


def private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bound: set[str] = set()  # names bound to imports from the libraries
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    bound.add((alias.asname or alias.name).split(".")[0])
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if alias.name.startswith("_"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if (isinstance(base, ast.Name) and base.id in bound) or node.attr in KNOWN_PRIVATE:
                if not (isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr not in KNOWN_PRIVATE):
                    found.append(f"{path}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.FunctionDef) and node.name in KNOWN_PRIVATE:  # overriding a library's private hook
            found.append(f"{path}:{node.lineno}: def {node.name}")
    return found


def project_files() -> list[Path]:
    return [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]


def test_no_private_name_of_ray_optuna_or_timm_outside_compat():
    found = [use for path in project_files() for use in private_uses(path)]
    assert found == [], "move these into compat/ (one module per library):\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_meant_to_find(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import ray\nfrom ray._private.services import x\nfrom optuna.samplers import _tpe\n"
                      "ray._private.foo()\nstudy._get_trials()\nclass S:\n    def _get_trials(self): pass\n"
                      "self._own = 1\n")
    found = private_uses(sample)
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted([
        "from ray._private.services import ...", "from optuna.samplers import _tpe", "._private", "._get_trials",
        "def _get_trials"])


@pytest.mark.parametrize("module", ["compat.ray_internals", "compat.optuna_internals"])
def test_every_compat_module_declares_its_tested_versions_and_refuses_others(module, monkeypatch):
    import importlib

    from compat import versions

    compat = importlib.import_module(module)
    assert compat.TESTED and all(isinstance(v, str) for v in compat.TESTED)
    compat.check("a feature")  # the installed version is a tested one (CI installs the pinned releases)
    monkeypatch.setattr(versions.metadata, "version", lambda package: "0.0.1")
    with pytest.raises(versions.CompatError, match=r"a feature uses private parts of .* tested with .*this is .* 0\.0\.1"):
        compat.check("a feature")
