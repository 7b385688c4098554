"""The console command `resnet-search` (cli/main.py): every subcommand reaches its entry point's own parser.

Called through the entry point function (what [project.scripts] installs) and, when this environment has the
script installed, through the script itself. Nothing here runs a search: only --help and bad usage.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import PROG, SUBCOMMANDS, main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"resnet-search": "cli.main:main"}


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "dry-run", "resume", "grow", "ensemble", "predict", "report", "trial"):
        assert f"\n  {name} " in out, name
    assert "python search/run.py" in out  # the older spelling each one equals


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_help_is_its_entry_points_parser(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} {name} ")
    # The options come from the entry point's parser, not a copy: each one's own flags are there.
    own = {"run": "--space", "dry-run": "--space", "resume": "--name", "grow": "--num-samples", "ensemble": "--top-k",
           "predict": "--out", "report": "run_dir", "trial": "--help-config"}[name]
    assert own in out


def test_dry_run_and_resume_pass_their_flag_to_run_py(monkeypatch):
    seen = []
    import search.run
    monkeypatch.setattr(search.run, "main", lambda argv, prog: seen.append((argv, prog)) or 0)
    assert main(["dry-run", "--space", "spaces/full.py"]) == 0
    assert main(["resume", "--name", "x"]) == 0
    assert main(["run", "--space", "spaces/quick.py"]) == 0
    assert seen == [(["--dry-run", "--space", "spaces/full.py"], f"{PROG} dry-run"),
                    (["--resume", "--name", "x"], f"{PROG} resume"),
                    (["--space", "spaces/quick.py"], f"{PROG} run")]


def test_an_unknown_subcommand_is_one_line_with_the_closest_one(capsys):
    assert main(["ensembel", "results/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'ensembel' is not a resnet-search subcommand" in err
    assert "Did you mean `resnet-search ensemble`?" in err


def test_no_arguments_prints_the_usage_and_fails(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith(f"usage: {PROG} SUBCOMMAND")


def test_the_help_loads_no_torch():
    """`resnet-search --help` and the driver's subcommands' help run on a CPU head without importing torch."""
    code = ("import sys, json\nfrom cli.main import main\nmain(['--help'])\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'timm', 'trainable') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_python_search_run_py_still_works_as_the_mission_names_it():
    proc = subprocess.run([sys.executable, "search/run.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: python search/run.py ")


def installed_script() -> str | None:
    """The installed console script beside this interpreter (or on PATH), if this environment has it."""
    beside = Path(sys.executable).with_name("resnet-search")
    return str(beside) if beside.exists() else shutil.which("resnet-search")


def test_the_installed_script_runs_the_same_main():
    script = installed_script()
    if script is None:
        pytest.skip("resnet-search is not installed in this environment (pip install -e . installs it)")
    proc = subprocess.run([script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "subcommands:" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run([script, "report", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: resnet-search report "), proc.stderr[-2000:]
