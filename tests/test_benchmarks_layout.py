"""benchmarks/ is one package, imported one way: from the repository root, run as `python -m benchmarks.<folder>.<name>`.
Every script sits in tools/, experiments/ or archive/, is named in benchmarks/README.md, and writes its record
through benchmarks/record.py; no script or test reaches another by file path or by a bare name."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
FOLDERS = ("tools", "experiments", "archive")
# Modules that are not benchmarks of their own: what the benchmarks import, and the space files they search.
NOT_BENCHMARKS = {
    "tools/driver_phases.py": "the phase clock scale_real_ray.py wraps around tuner.fit()",
    "tools/realistic_jpegs.py": "the JPEG folder the loader benchmarks read",
    "experiments/space_tiny100.py": "a space file (search_comparison.py)",
    "experiments/space_finetune_tiny100.py": "a space file (search_vs_recipes.py, refit_tiny100.py)",
}


def scripts() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (BENCHMARKS / folder).glob("*.py") if p.name != "__init__.py")


def name(path: Path) -> str:
    return path.relative_to(BENCHMARKS).as_posix()


def test_every_script_is_in_tools_experiments_or_archive():
    top = sorted(p.name for p in BENCHMARKS.iterdir() if p.is_file())
    assert top == ["README.md", "__init__.py", "record.py"], top
    for folder in FOLDERS:
        assert (BENCHMARKS / folder / "__init__.py").is_file(), folder
    assert not [name(p) for p in BENCHMARKS.rglob("*") if p.is_file() and p.suffix in (".py", ".sh")
                and p.parent.name not in (*FOLDERS, "benchmarks")]


def import_problems(path: Path) -> list[str]:
    """Imports of benchmark modules by a bare name or by file path, sys.path edits, and benchmarks.* imports of
    modules that do not exist."""
    siblings = {p.stem for p in scripts()}
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            modules = []
        for module in modules:
            top = module.split(".")[0]
            if top in siblings:
                problems.append(f"{path.name}:{node.lineno}: bare import of {module}")
            if top == "benchmarks":
                target = ROOT.joinpath(*module.split("."))
                if not (target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()):
                    problems.append(f"{path.name}:{node.lineno}: {module} does not exist")
        if isinstance(node, ast.Attribute) and node.attr == "spec_from_file_location":
            problems.append(f"{path.name}:{node.lineno}: a module loaded by file path")
        if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
            problems.append(f"{path.name}:{node.lineno}: sys.path changed")
    return problems


@pytest.mark.parametrize("path", [*scripts(), BENCHMARKS / "record.py"], ids=name)
def test_benchmarks_import_each_other_as_a_package(path):
    assert import_problems(path) == []


def test_the_tests_import_benchmarks_as_a_package():
    found = [problem for test in sorted((ROOT / "tests").glob("*.py")) if test.name != Path(__file__).name
             for problem in import_problems(test) if "by file path" in problem and "benchmarks" in test.read_text()]
    assert found == []


def test_the_scan_finds_bare_imports_path_loads_and_sys_path_edits(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nfrom scale_simulation import simulate\nimport importlib.util\n"
                      "importlib.util.spec_from_file_location('x', 'benchmarks/tools/x.py')\nsys.path.insert(0, '.')\n"
                      "from benchmarks.tools.no_such_tool import x\nfrom benchmarks.tools.scale_simulation import simulate\n")
    assert sorted(p.split(": ", 1)[1] for p in import_problems(sample)) == [
        "a module loaded by file path", "bare import of scale_simulation",
        "benchmarks.tools.no_such_tool does not exist", "sys.path changed"]


@pytest.mark.parametrize("path", [p for p in scripts() if name(p) not in NOT_BENCHMARKS], ids=name)
def test_every_benchmark_writes_its_record(path):
    tree = ast.parse(path.read_text())
    imported = any(isinstance(n, ast.ImportFrom) and n.module == "benchmarks.record"
                   and "write_record" in [a.name for a in n.names] for n in ast.walk(tree))
    called = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "write_record"
                 for n in ast.walk(tree))
    assert imported and called, f"{name(path)} writes no record with benchmarks.record.write_record"


def test_readme_names_every_script_and_says_how_to_run_it():
    text = (BENCHMARKS / "README.md").read_text()
    listed = [*scripts(), *sorted(BENCHMARKS.rglob("*.sh"))]
    assert [name(p) for p in listed if f"`{name(p)}`" not in text] == []
    assert "python -m benchmarks." in text
