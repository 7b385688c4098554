"""search/run.py's user mistakes end in one clear message and write nothing; --dry-run runs nothing."""
from pathlib import Path

import pytest

from conftest import make_image_folder
from search.run import main as search_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path):
    return make_image_folder(tmp_path / "data", per_class=22)  # 66 train: the spaces' batch_size 64 fits


def hub_cache_holding(root: Path, space_file: Path) -> Path:
    """A Hugging Face hub cache in which every backbone in the space's BACKBONES has its timm weights file (empty: the
    plan only looks them up), so a plan with pretrained: True passes offline."""
    import runpy

    import timm

    for backbone in runpy.run_path(str(space_file))["BACKBONES"]:
        repo = timm.models.get_pretrained_cfg(backbone).hf_hub_id
        folder = root / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
        (folder / "snapshots" / ("0" * 40) / "model.safetensors").touch()
    return root


def run(capsys, *args):
    code = search_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # the plan's torch child (parameter counts) in a process of its own: ~9 s
def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, data, capsys):
    storage = tmp_path / "results"
    code, out, err = run(capsys, "--space", str(ROOT / "spaces/quick.py"), "--data", str(data), "--storage",
                         str(storage), "--name", "plan", "--dry-run")
    assert code == 0, err
    assert "3 classes, 66 train, 12 val, 6 test" in out
    assert "16 trials, metric val_acc (max)" in out and "ASHA over epochs: max 3, grace 1, reduction 2" in out
    assert "1 CPU per trial; max concurrent 2" in out and "1 warm starts" in out
    assert "Dry run: nothing was started." in out
    assert not storage.exists()


@pytest.mark.slow  # the plan's torch child, as above: ~8 s
def test_file_uri_storage_is_a_local_folder_that_holds_the_outputs_too(tmp_path, data, capsys, monkeypatch):
    """--storage file:///x is the folder /x: the leaderboard and plan go next to Tune's files there, not into
    ./results (where they went while file:// was treated like a bucket)."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    code, out, err = run(capsys, "--space", str(ROOT / "spaces/quick.py"), "--data", str(data), "--storage",
                         f"file://{store}", "--name", "plan", "--dry-run")
    assert code == 0, err
    assert f"storage    {store / 'plan'}\n" in out and f"outputs    {store / 'plan'}\n" in out
    assert not (tmp_path / "results").exists() and not store.exists()


@pytest.mark.parametrize("given, expected", [
    ("results", "CWD/results"), ("~/runs", "HOME/runs"), ("file:///abs/store", "/abs/store"),
    ("file://localhost/abs/store", "/abs/store"), ("file:///with%20space", "/with space"),
    ("s3://b/t?endpoint_override=127.0.0.1:9000&scheme=http", "s3://b/t?endpoint_override=127.0.0.1:9000&scheme=http"),
    ("gs://bucket/tune", "gs://bucket/tune"),
])
def test_storage_strings_are_read_in_one_place(given, expected, tmp_path, monkeypatch):
    from core.storage import StorageURI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    parsed = StorageURI.parse(given)
    assert parsed.value == expected.replace("CWD", str(tmp_path)).replace("HOME", str(tmp_path / "home"))
    path, _, query = parsed.value.partition("?")
    assert parsed.join("run") == f"{path}/run" + (f"?{query}" if query else "")  # options stay after the path
    assert parsed.is_cloud == ("://" in expected)


@pytest.mark.parametrize("given, message", [
    ("", "--storage is empty"),
    ("file:relative/dir", "is not a file URI (file:///absolute/folder). Give the folder itself (relative/dir)"),
    ("file:///path?opt=1", "has options after '?' or '#', which a local folder does not take"),
    ("file://otherhost/path", "names the host 'otherhost'"),
    ("://bucket", "has no usable scheme"),
])
def test_storage_strings_that_land_where_nobody_looks_are_refused(given, message):
    from core.errors import UserError
    from core.storage import StorageURI

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        StorageURI.parse(given)


@pytest.mark.slow  # full.py's plan: parameter counts and weights of 12 backbones in child processes (~20 s)
def test_smoke_test_shrinks_the_run(tmp_path, data, capsys, monkeypatch):
    # full.py trains from timm's pretrained weights: the plan checks they can be had (here: from a local cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache_holding(tmp_path / "hub", ROOT / "spaces/full.py")))
    code, out, _ = run(capsys, "--space", str(ROOT / "spaces/full.py"), "--data", str(data), "--storage",
                       str(tmp_path / "r"), "--gpus-per-trial", "0", "--cpus-per-trial", "1", "--smoke-test",
                       "--dry-run")
    assert code == 0
    assert "2 trials" in out and "max 1, grace 1" in out and "train 64px, eval 64px" in out


@pytest.mark.parametrize("args, message", [
    (["--space", "spaces/nope.py"], "Space file spaces/nope.py does not exist. Available in spaces/: full.py, quick.py"),
    (["--space", "spaces/quick.py", "--data", "/no/such/data"], "Dataset folder /no/such/data does not exist"),
    (["--space", "spaces/quick.py", "--data", "builtin:digitz"], "Unknown built-in dataset 'builtin:digitz'"),
    pytest.param(["--space", "spaces/full.py", "--data", "builtin:digits"],  # full.py's plan children: ~30 s
                 "spaces/full.py cannot run on this machine as it stands: it asks for 1 GPU per trial, but this "
                 "machine has 0", marks=pytest.mark.slow),
    pytest.param(["--space", "spaces/quick.py", "--cpus-per-trial", "64"],  # after the plan's torch child: ~7 s
                 "asks for 64 CPUs per trial, but this machine has", marks=pytest.mark.slow),
    (["--space", "spaces/quick.py", "--num-samples", "0"],
     "Command-line override: Search setting key 'num_samples' has value 0, but must be int in [1, 1000000]"),
    (["--resume"], "--resume needs --name"),
    (["--name", "ghost", "--resume", "--storage", "STORAGE"], "No search named 'ghost'"),
    (["--name", "x", "--resume", "--num-samples", "3"], "No search named 'x'"),
    (["--space", "spaces/quick.py", "--name", "a/b"], "must be a plain folder name"),
    ([], "--space is required"),
])
def test_user_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [str(tmp_path) if a == "STORAGE" else a for a in args]
    if "--storage" not in args:
        args += ["--storage", str(tmp_path / "results")]
    code, out, err = run(capsys, *args, "--dry-run")
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()
