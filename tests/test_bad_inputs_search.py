"""Bad inputs to `python search/run.py`: each ends in exactly one clear message (what, where, how to fix),
exit 2, no traceback, and nothing on disk changed (the pre-existing run and everything else byte-identical,
no new files or folders). Run in-process for speed; two cases through a real subprocess.

Each case: (id, argv, files to write first, fragments the message must hold). In argv, DATA, DATA1
(one class short of top-5), HOLDOUT (no val/), STORAGE, SPACE, W_* (weights files) and CLOSED (a local port
nobody listens on) are replaced by paths under the test's tmp dir.
"""
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import S3_BUCKET, S3_CREDENTIALS, make_image_folder
from search.run import main as search_main

ROOT = Path(__file__).resolve().parents[1]

# A valid, tiny space: each case breaks one thing in it (or in a flag).
SETTINGS = ('{"num_samples": 2, "max_epochs": 1, "cpus_per_trial": 1, "train_size": 32, "eval_size": 32, '
            '"trial": {"backbone": "resnet10t", "batch_size": 8, "num_workers": 0%s}%s}')
DEFINE = 'def define(trial):\n    trial.suggest_float("lr", 1e-3, 1e-1, log=True)\n'


def space(settings_trial="", settings="", define=DEFINE, extra=""):
    return f"SETTINGS = {SETTINGS % (settings_trial, settings)}\n\n{define}{extra}"


GOOD = space()
S = ["--space", "SPACE"]

CASES = [
    # --- space files
    ("space-missing", ["--space", "nope.py"], {}, ["Space file nope.py does not exist"]),
    ("space-is-a-folder", ["--space", "DATA"], {}, ["is a folder; give a space file in it"]),
    ("space-not-utf8", S, {"SPACE": "SETTINGS = {}\n".encode("utf-16")}, ["is not UTF-8 text", "save it as UTF-8"]),
    ("space-syntax-error", S, {"SPACE": "SETTINGS = {\n"}, ["space.py:1: syntax error", "Fix the space file"]),
    ("space-raises-on-load", S, {"SPACE": "import no_such_module\n"}, ["space.py:1: loading raised",
                                                                       "ModuleNotFoundError"]),
    ("space-calls-exit", S, {"SPACE": "import sys\nsys.exit(3)\n"}, ["space.py:2: loading raised SystemExit"]),
    ("space-no-define", S, {"SPACE": "SETTINGS = {}\n"}, ["no define(trial) function", "spaces/quick.py"]),
    ("settings-unknown-key", S, {"SPACE": space(settings=', "num_trials": 3')}, ["SETTINGS", "num_trials"]),
    ("settings-wrong-type", S, {"SPACE": space(settings=', "max_epochs": "ten"')}, ["SETTINGS", "max_epochs"]),
    ("settings-unknown-metric", S, {"SPACE": space(settings=', "metric": "val_f1"')}, ["SETTINGS", "val_f1"]),
    ("settings-mode-mismatch", S, {"SPACE": space(settings=', "metric": "val_loss"')},
     ["val_loss", "must be minimised"]),
    ("settings-grace-over-max", S, {"SPACE": space(settings=', "grace_period": 5')},
     ["grace_period is 5", "max_epochs"]),
    ("trial-unknown-key", S, {"SPACE": space(settings_trial=', "learning_rate": 0.1')},
     ["learning_rate", "Did you mean: lr?"]),
    ("settings-trial-key-at-top", S, {"SPACE": space(settings=', "lr": 0.01')},
     ["SETTINGS: Unknown search setting key 'lr'", "move it under SETTINGS['trial']"]),
    ("trial-wrong-type", S, {"SPACE": space(settings_trial=', "pretrained": "no"')},
     ["SETTINGS['trial']: Trial config key 'pretrained' has value 'no', but must be bool"]),
    ("trial-unknown-backbone", S, {"SPACE": space().replace('"resnet10t"', '"resnet10"')},
     ["SETTINGS['trial']: Unknown backbone 'resnet10'", "Did you mean: resnet10t"]),
    ("define-no-argument", S, {"SPACE": space(define='def define():\n    pass\n')},
     ["define(trial) raised TypeError"]),
    ("define-unknown-key", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_float("lrr", 0.1, 1)\n')},
     ["lrr"]),
    ("define-empty-choices", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_categorical("head", [])\n')},
     ["space.py:4: define(trial) raised ValueError", "choices"]),
    ("define-low-above-high", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_float("lr", 0.1, 0.001)\n')},
     ["space.py:4: define(trial) raised ValueError", "low <= high"]),
    ("define-out-of-range", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_float("drop_rate", 0.0, 2.0)\n')},
     ["parameter 'drop_rate' = 2.0", "drop_rate"]),
    ("define-name-error", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_float("lr", lo, 1)\n')},
     ["space.py:4: define(trial) raised NameError"]),
    ("define-reserved-key", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_int("epochs", 1, 3)\n')},
     ["epochs", "which the search owns"]),
    ("define-returns-list", S, {"SPACE": space(define='def define(trial):\n    return [1]\n')},
     ["must return None or a dict"]),
    ("unknown-backbone", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_categorical("backbone", ["resnet9000"])\n')},
     ["Unknown backbone 'resnet9000'", "--list-backbones"]),
    ("not-a-resnet", S, {"SPACE": space(define='def define(trial):\n    trial.suggest_categorical("backbone", ["vit_tiny_patch16_224"])\n')},
     ["not a ResNet-family one"]),
    ("warm-starts-not-a-list", S, {"SPACE": GOOD + "WARM_STARTS = {'lr': 0.01}\n"}, ["WARM_STARTS must be a list"]),
    ("warm-start-outside", S, {"SPACE": GOOD + "WARM_STARTS = [{'lr': 5.0}]\n"}, ["WARM_STARTS[0]", "outside"]),
    ("warm-start-unused-key", S, {"SPACE": GOOD + "WARM_STARTS = [{'lr': 0.01, 'head': 'mlp'}]\n"},
     ["WARM_STARTS[0] sets ['head']"]),
    # --- flags
    ("no-space", [], {}, ["--space is required"]),
    ("data-missing", S + ["--data", "/no/such/data"], {"SPACE": GOOD}, ["Dataset folder /no/such/data does not exist"]),
    ("data-unknown-builtin", S + ["--data", "builtin:digitz"], {"SPACE": GOOD}, ["Unknown built-in dataset"]),
    ("num-samples-zero", S + ["--num-samples", "0"], {"SPACE": GOOD}, ["Command-line override", "num_samples"]),
    ("seed-negative", S + ["--seed", "-1"], {"SPACE": GOOD}, ["Command-line override", "seed"]),
    ("max-concurrent-negative", S + ["--max-concurrent", "-1"], {"SPACE": GOOD}, ["max_concurrent"]),
    ("too-many-cpus", S + ["--cpus-per-trial", "4096"], {"SPACE": GOOD}, ["cpus_per_trial"]),
    ("gpu-without-gpu", S + ["--gpus-per-trial", "1"], {"SPACE": GOOD}, ["1 GPU per trial, but this machine has 0",
                                                                          "--gpus-per-trial 0"]),
    ("ensemble-top-k-negative", S + ["--ensemble-top-k", "-1"], {"SPACE": GOOD}, ["--ensemble-top-k is -1"]),
    ("name-with-slash", S + ["--name", "a/b"], {"SPACE": GOOD}, ["must be a plain folder name"]),
    ("name-hidden", S + ["--name", ".x"], {"SPACE": GOOD}, ["must be a plain folder name"]),
    ("name-control-char", S + ["--name", "a\nb"], {"SPACE": GOOD}, ["control character"]),
    ("name-too-long", S + ["--name", "n" * 300], {"SPACE": GOOD}, ["--name is 300 bytes long", "shorter --name"]),
    ("name-exists", S + ["--name", "existing"], {"SPACE": GOOD}, ["'existing' already exists", "--resume"]),
    # --- resume
    ("resume-without-name", ["--resume"], {}, ["--resume needs --name"]),
    ("resume-unknown", ["--resume", "--name", "ghost"], {}, ["No search named 'ghost'", "without --resume"]),
    ("resume-override", ["--resume", "--name", "existing", "--num-samples", "3"], {},
     ["--num-samples cannot change a search being resumed"]),
    ("resume-smoke-test", ["--resume", "--name", "existing", "--smoke-test"], {},
     ["--smoke-test cannot change a search being resumed"]),
    ("resume-other-space", ["--resume", "--name", "existing", "--space", "SPACE"], {"SPACE": GOOD + "# edited\n"},
     ["--space SPACE".replace("SPACE", ""), "differs from the copy it started with", "cannot change a search being resumed"]),
    # --- storage
    ("storage-unknown-scheme", S + ["--storage", "s4://bucket/tune"], {"SPACE": GOOD},
     ["--storage s4://bucket/tune", "'s4://'", "s3://BUCKET/PATH"]),
    ("storage-hdfs-unusable", S + ["--storage", "hdfs://namenode:8020/tune"], {"SPACE": GOOD},
     ["--storage hdfs://namenode:8020/tune", "pyarrow cannot open hdfs://"]),
    ("storage-no-bucket", S + ["--storage", "s3://"], {"SPACE": GOOD}, ["--storage s3://: no bucket name",
                                                                         "s3://BUCKET/PATH"]),
    ("storage-bad-option", S + ["--storage", "s3://b/tune?endpoint=x"], {"SPACE": GOOD},
     ["Unexpected query parameter in S3 URI: 'endpoint'", "endpoint_override=HOST:PORT"]),
    ("storage-under-proc", S + ["--storage", "/proc/runs"], {"SPACE": GOOD},
     ["--storage '/proc/runs' is under /proc, a view of the kernel, not a disk"]),
    ("storage-empty", S + ["--storage", ""], {"SPACE": GOOD}, ["--storage is empty"]),
    ("storage-file-uri-options", S + ["--storage", "file:///tmp/x?opt=1"], {"SPACE": GOOD},
     ["has options after '?' or '#'"]),
    ("storage-file-relative", S + ["--storage", "file:relative"], {"SPACE": GOOD}, ["is not a file URI"]),
    ("storage-s3-no-dns", S + ["--storage", "s3://bucket/tune?endpoint_override=no-such-host.invalid:9000&scheme=http"],
     {"SPACE": GOOD}, ["its host name does not resolve (network/DNS)"]),
    ("storage-is-a-file", S + ["--storage", "SPACE"], {"SPACE": GOOD}, ["is a file, not a folder", "--storage results"]),
    ("storage-parent-is-a-file", S + ["--storage", "SPACE/results"], {"SPACE": GOOD},
     ["cannot be created", "is a file"]),
    ("storage-s3-unreachable", S + ["--storage", "s3://bucket/tune?endpoint_override=CLOSED&scheme=http"],
     {"SPACE": GOOD}, ["did not answer", "Check the endpoint"]),
    # --- address
    ("address-nobody-listens", S + ["--address", "CLOSED"], {"SPACE": GOOD},
     ["no Ray cluster answers at 127.0.0.1:", "leave --address out"]),
    ("address-not-ray", S + ["--address", "SILENT"], {"SPACE": GOOD},
     ["something listens at 127.0.0.1:", "not a Ray head", "GCS port"]),
    ("address-port-out-of-range", S + ["--address", "127.0.0.1:99999"], {"SPACE": GOOD}, ["is not an address"]),
    ("address-not-an-address", S + ["--address", "headnode"], {"SPACE": GOOD},
     ["--address headnode is not an address", "HOST:PORT"]),
    # --- refit
    ("refit-kfold-above-the-smallest-class", S + ["--refit", "kfold:20"], {"SPACE": GOOD},
     ["--refit kfold:20 needs at least 20 train+val images in every class, but class 'cat' has 16",
      "Use kfold:16 or bag:N"]),
    # --- metric, batch size
    ("top5-with-3-classes", S, {"SPACE": space(settings=', "metric": "val_top5_acc"')},
     ["'val_top5_acc' is reported only with more than 5 classes", "has 3", "val_macro_f1"]),
    ("fixed-batch-too-large", S, {"SPACE": space(settings_trial=', "batch_size": 64').replace('"batch_size": 8, ', "")},
     ["SETTINGS['trial']: batch_size 64 is larger than the 36 training images", "batch_size <= 36"]),
    ("sampled-batch-too-large", S, {"SPACE": space(define=DEFINE + '    trial.suggest_int("batch_size", 8, 48, step=8)\n')},
     ["parameter 'batch_size' = 48", "larger than the 36 training images"]),
    ("choice-batch-too-large", S,
     {"SPACE": space(define=DEFINE + '    trial.suggest_categorical("batch_size", [8, 16, 40])\n')},
     ["parameter 'batch_size' = 40"]),
    ("holdout-batch-too-large", S + ["--data", "HOLDOUT"], {"SPACE": space(settings_trial=', "batch_size": 32').replace('"batch_size": 8, ', "")},
     ["batch_size 32 is larger than the 30 training images", "after the 0.1 val hold-out"]),
    # --- weights
    ("weights-missing", S, {"SPACE": space(settings_trial=', "weights_file": "/no/such/w.pth"')},
     ["weights_file /no/such/w.pth does not exist", "drop weights_file"]),
    ("weights-relative", S, {"SPACE": space(settings_trial=', "weights_file": "w.pth"')},
     ["weights_file w.pth is a relative path", "absolute path"]),
    ("weights-a-folder", S, {"SPACE": space(settings_trial=', "weights_file": "W_DIR"')},
     ["is a folder, not a weights file"]),
    ("weights-not-a-state-dict", S, {"SPACE": space(settings_trial=', "weights_file": "W_GARBAGE"')},
     ["is not a state dict", "torch.save(model.state_dict(), path)"]),
    ("weights-wrong-shapes", S, {"SPACE": space(settings_trial=', "weights_file": "W_SHAPES"')},
     ["does not fit backbone 'resnet10t'", "size mismatch for conv1.0.weight"]),
    ("weights-no-matching-keys", S, {"SPACE": space(settings_trial=', "weights_file": "W_OTHER_KEYS"')},
     ["lacks 70 of the 70 weights of backbone 'resnet10t'", "random weights"]),
    ("pretrained-offline-no-cache", S, {"SPACE": space(settings_trial=', "pretrained": True')},
     ["pretrained weights for backbone 'resnet10t' are not in this machine's cache", "HF_HUB_OFFLINE is set",
      "weights_file"]),
    # what the machine lacks, all of it in one message with one command that works here
    ("resources-all-at-once", S + ["--gpus-per-trial", "1", "--cpus-per-trial", str((os.cpu_count() or 1) + 1)],
     {"SPACE": space(settings_trial=', "pretrained": True')},
     ["1 GPU per trial, but this machine has 0", f"{(os.cpu_count() or 1) + 1} CPUs per trial",
      "pretrained weights for backbone 'resnet10t' are not in this machine's cache", "this command runs here:",
      f"--gpus-per-trial 0 --cpus-per-trial {os.cpu_count() or 1} --no-pretrained"]),
    ("pretrained-flags-contradict", S + ["--no-pretrained", "--weights-file", "/w.pth"], {"SPACE": GOOD},
     ["--no-pretrained and --weights-file contradict each other"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data sets, weights files and ports shared by every case (made once; no case may change them).
    Weights files are safetensors written from numpy: this test process never imports torch."""
    from numpy import zeros
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("world")
    make_image_folder(root / "data")                                   # 3 classes x 12 train, val/ given
    make_image_folder(root / "holdout", classes=("a", "b", "c"), per_class=11, val_per_class=0)  # 10 train each
    (root / "w_dir").mkdir()
    (root / "garbage.pth").write_bytes(b"not a pickle")
    save_file({"conv1.0.weight": zeros((2, 2), "float32")}, root / "shapes.safetensors")  # resnet10t: [24, 3, 3, 3]
    save_file({"encoder.weight": zeros(2, "float32")}, root / "other_keys.safetensors")
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    silent = socket.socket()  # listens (the kernel completes connections) but never answers, like a non-Ray service
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    yield {"DATA": root / "data", "HOLDOUT": root / "holdout", "W_DIR": root / "w_dir",
            "W_GARBAGE": root / "garbage.pth", "W_SHAPES": root / "shapes.safetensors",
            "W_OTHER_KEYS": root / "other_keys.safetensors",
            "CLOSED": closed, "SILENT": f"127.0.0.1:{silent.getsockname()[1]}"}
    silent.close()


def each_item_once(real, seed: list):
    """A child-process check (a list of items in, one answer per item out, each a pure function of its item)
    that runs every item at most once for the whole table: the known items in one child up front."""
    seen = {json.dumps(item, sort_keys=True): answer for item, answer in zip(seed, real(seed))}
    def cached(items):
        todo = [i for i in items if json.dumps(i, sort_keys=True) not in seen]
        seen.update((json.dumps(i, sort_keys=True), a) for i, a in zip(todo, real(todo) if todo else []))
        return [seen[json.dumps(i, sort_keys=True)] for i in items]
    return cached


@pytest.fixture(scope="module")
def children_once(world, tmp_path_factory):
    """Two children for the whole table (parameter counts, weights loading) instead of one or two per case:
    each imports torch, which costs seconds."""
    import search.preflight as preflight
    import search.space_file as space_file

    counts = [{"backbone": b, "head": "linear", "head_hidden": 512, "num_classes": 3}
              for b in ("resnet10t", "resnet10", "resnet9000", "vit_tiny_patch16_224")]
    weights = [{"backbone": "resnet10t", "weights_file": str(world[k]) if k else "", "num_classes": 3}
               for k in ("W_GARBAGE", "W_SHAPES", "W_OTHER_KEYS", "")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
        mp.setattr(space_file, "count_parameters", each_item_once(space_file.count_parameters, counts))
        mp.setattr(preflight, "check_weights", each_item_once(preflight.check_weights, weights))
        yield


def one_error_line(err: str) -> bool:
    return [line[:6] for line in err.splitlines() if line.startswith("error")] == ["error:"]


def snapshot(root: Path) -> dict:
    """Every file and folder under root, with its bytes' hash: what "nothing changed" is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def arrange(case_files: dict, argv: list, world: dict, tmp_path: Path, monkeypatch) -> list:
    """A tmp dir holding the space, storage/ with a run named 'existing', and the args with placeholders filled."""
    storage = tmp_path / "storage"
    existing = storage / "existing"
    existing.mkdir(parents=True)
    (existing / "space.py").write_text(GOOD)
    (existing / "leaderboard.csv").write_text("rank,trial_id\n1,abc\n")
    (existing / "plan.json").write_text(json.dumps({"results_format": 2, "settings": {"num_samples": 2},
                                                    "smoke_test": False, "data": "builtin:digits"}))
    paths = {"SPACE": tmp_path / "space.py", "STORAGE": storage}
    for key, text in case_files.items():
        if isinstance(text, bytes):
            paths[key].write_bytes(text)
            continue
        for name, value in world.items():
            text = text.replace(f'"{name}"', json.dumps(str(value)))
        paths[key].write_text(text)
    places = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in paths.items()}}
    args = [places.get(a, a).replace("CLOSED", places["CLOSED"]).replace("SILENT", places["SILENT"]).replace("SPACE/", places["SPACE"] + "/")
            for a in argv]
    if "--storage" not in args:
        args += ["--storage", str(storage)]
    if "--data" not in args and "--resume" not in args:
        args += ["--data", places["DATA"]]
    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.chdir(tmp_path)  # a stray relative write (e.g. results/) would show in the snapshot
    return args


@pytest.mark.parametrize("case, argv, files, fragments", CASES, ids=[c[0] for c in CASES])
@pytest.mark.usefixtures("children_once")
def test_bad_input_ends_in_one_message_and_changes_nothing(case, argv, files, fragments, world, tmp_path, capsys,
                                                           monkeypatch):
    args = arrange(files, argv, world, tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    code = search_main(args + ["--dry-run"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert one_error_line(err), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert "Traceback" not in out + err
    assert snapshot(tmp_path) == before


def test_the_table_covers_every_kind_of_input():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert len(CASES) >= 35
    assert {"space", "settings", "define", "data", "name", "resume", "storage", "address", "top5", "weights",
            "pretrained"} <= kinds


@pytest.mark.usefixtures("children_once")
def test_the_command_the_refusal_prints_works(world, tmp_path, capsys, monkeypatch):
    argv = S + ["--gpus-per-trial", "1", "--cpus-per-trial", str((os.cpu_count() or 1) + 1)]
    args = arrange({"SPACE": space(settings_trial=', "pretrained": True')}, argv, world, tmp_path, monkeypatch)
    assert search_main(args + ["--dry-run"]) == 2
    err = capsys.readouterr().err
    command = shlex.split(err.split("this command runs here: ")[1].split(" (or use --address")[0])
    assert command[:2] == ["python", "search/run.py"] and "--dry-run" in command
    code = search_main(command[2:])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Dry run: nothing was started." in out


@pytest.mark.usefixtures("children_once")
def test_a_missing_s3_bucket_is_named(s3_endpoint, world, tmp_path, capsys, monkeypatch):
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://no-such-bucket/tune?endpoint_override={s3_endpoint}&scheme=http"
    args = arrange({"SPACE": GOOD}, S + ["--storage", uri], world, tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    code = search_main(args + ["--dry-run"])
    out, err = capsys.readouterr()
    assert code == 2 and one_error_line(err), err
    assert "the bucket 'no-such-bucket' does not exist" in err and "Create it" in err
    assert snapshot(tmp_path) == before
    # the bucket that exists passes the same check (the plan is printed)
    good = f"s3://{S3_BUCKET}/tune?endpoint_override={s3_endpoint}&scheme=http"
    code = search_main(args[:args.index("--storage")] + ["--storage", good] + args[args.index("--storage") + 2:]
                       + ["--name", "fresh", "--dry-run"])
    assert code == 0, capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, fragment", [
    (["--storage", "s4://bucket/tune"], "not one Ray Tune's storage (pyarrow.fs) understands"),
    (["--address", "CLOSED"], "no Ray cluster answers at"),
], ids=["storage", "address"])
def test_no_traceback_reaches_the_terminal(argv, fragment, world, tmp_path):
    (tmp_path / "space.py").write_text(GOOD)
    argv = [world["CLOSED"] if a == "CLOSED" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(tmp_path / "space.py"),
                           "--data", str(world["DATA"]), "--name", "r", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and one_error_line(proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.py"]  # no results/ left behind


@pytest.mark.usefixtures("children_once")
def test_a_cluster_that_refuses_the_driver_leaves_no_run_behind(world, tmp_path, capsys, monkeypatch):
    # The port answered the preflight (say, a Ray head of another version, or token auth): ray.init fails.
    import search.execute
    import search.preflight

    def refuse(**kwargs):
        raise ConnectionError("Could not connect to the GCS at 10.0.0.5:6379")
    monkeypatch.setattr(search.preflight, "_check_address", lambda address: None)
    monkeypatch.setattr(search.execute.ray, "init", refuse)
    monkeypatch.setattr(search.execute.ray, "is_initialized", lambda: False)  # another test's Ray may be up
    args = arrange({"SPACE": GOOD}, S + ["--address", "10.0.0.5:6379", "--name", "fresh"], world, tmp_path,
                   monkeypatch)
    before = snapshot(tmp_path)
    assert search_main(args) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "--address 10.0.0.5:6379: could not join the Ray cluster" in err, err
    assert snapshot(tmp_path) == before  # no storage/fresh: the same --name works once the cluster is fixed
