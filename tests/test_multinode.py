"""A search on a real multi-node Ray cluster (tests/local_cluster.py: a head with CPU 0 and worker nodes, each
its own `ray start` on this machine, token authentication on), asserted from the files the search leaves:

- trials run on several worker nodes and never on the head, and so do the ensemble's member-scoring tasks;
- a driver or a node without the cluster's token is refused (InvalidAuthToken) and the cluster does not grow;
- a worker node killed mid-search (SIGKILL to its whole process group) loses nothing: its trial resumes on
  another node from its last checkpoint, read back from S3 storage (moto), and every trial finishes;
- with --storage s3://... (moto's S3 API on localhost) trials checkpoint into the bucket, and the ensemble's
  scoring tasks, on worker nodes, read every member from there.

Run with `pytest -s tests/test_multinode.py` to see what was killed, when, and what was recovered.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import S3_BUCKET, S3_CREDENTIALS, make_image_folder
from local_cluster import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Ray's GCS client retries a refused connection once a second, 20 times by default; 3 tries show the refusal.
QUICK_REFUSAL = {"RAY_NUM_REDIS_GET_RETRIES": "3"}
AUTH_REFUSED = "InvalidAuthToken: Authentication token is missing or incorrect"


def space(num_samples: int, max_epochs: int, loader: str = "pil") -> str:
    return f'''
SETTINGS = {{"num_samples": {num_samples}, "max_epochs": {max_epochs}, "grace_period": {max_epochs},
            "cpus_per_trial": 1, "max_concurrent": 2, "max_failures": 2, "train_size": 32, "eval_size": 32,
            "trial": {{"num_workers": 0, "backbone": "resnet10t", "batch_size": 8, "loader": "{loader}"}}}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    # The trials run in the nodes' worker processes: they get the nodes' environment, not the driver's.
    # w1 and w2 each get their own cache dir, as each machine of a real cluster has its own local disk.
    # Dummy S3 keys on every node: a search may store its checkpoints in moto's local S3 (s3_endpoint).
    with LocalCluster(root, workers={"w1": 1, "w2": 1},
                      env_extra={"RESNET_SEARCH_CACHE": str(root / "cache"), **S3_CREDENTIALS},
                      node_env={w: {"RESNET_SEARCH_CACHE": str(root / f"{w}-local-disk")} for w in ("w1", "w2")}) as c:
        print(f"\n[cluster] started at {c.address}: {c.describe()}; token {c.token_path}")
        yield c
    print("\n[cluster] stopped: each node's process group, nothing else")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "data", per_class=24)


def start_search(cluster, tmp_path, data, name, text, log_name="driver.log", ensemble_top_k=0, storage=None):
    """The search's driver, and its results folder. storage: a URI (s3://...), else one local dir: storage
    that every node (here: process) shares."""
    space_file = tmp_path / f"{name}.py"
    space_file.write_text(text)
    storage = storage or str(tmp_path / "results")
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(space_file), "--data", str(data),
           "--address", cluster.address, "--storage", storage, "--name", name, "--ensemble-top-k", str(ensemble_top_k)]
    with open(tmp_path / log_name, "w") as log:
        # cwd tmp_path: with cloud storage the leaderboard goes to ./results/<name>, not into the repository.
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=cluster.env(extra={"PYTHONPATH": str(ROOT)}), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    driver.log_path = tmp_path / log_name
    return driver, tmp_path / "results" / name


def kill_driver(driver) -> None:
    try:
        os.killpg(driver.pid, signal.SIGKILL)  # its own session: the driver and nothing else
    except ProcessLookupError:
        pass
    driver.wait(10)


def finish(driver, timeout):
    """The driver's exit code ("timeout" if it ran past timeout) and its output; it never outlives the test."""
    try:
        code = driver.wait(timeout)
    except BaseException as err:  # a timeout, or the test interrupted
        kill_driver(driver)
        if not isinstance(err, subprocess.TimeoutExpired):
            raise
        code = "timeout"
    return code, driver.log_path.read_text()


def results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return lines


def trial_dirs(experiment: Path | None) -> list[Path]:
    return sorted(p.parent for p in experiment.glob("*/params.json")) if experiment else []


def driver_artifacts(cluster, name: str) -> Path | None:
    """Where the driver keeps its trials' result.json while their storage is a bucket: Ray's session dir,
    /tmp/.../session_*/artifacts/<time>/<name>/driver_artifacts (uploaded to the bucket only now and then)."""
    found = sorted(cluster.temp_dir.glob(f"session_*/artifacts/*/{name}/driver_artifacts"))
    return found[-1] if found else None


def test_trials_run_on_several_worker_nodes_never_the_head(cluster, data, tmp_path):
    driver, experiment = start_search(cluster, tmp_path, data, "spread", space(num_samples=4, max_epochs=2,
                                                                               loader="cache"), ensemble_top_k=4)
    code, log = finish(driver, 300)
    assert code == 0, log[-4000:]
    names = cluster.node_names()
    table = pd.read_csv(experiment / "leaderboard.csv")
    assert len(table) == 4 and (table["status"] == "completed").all(), table.to_string()
    placed = {}
    for d in trial_dirs(experiment):
        rows = results(d)
        assert [r["epoch"] for r in rows] == [1, 2], d.name
        assert all(r["node_id"] and r["hostname"] and r["node_ip"] for r in rows)
        placed[d.name] = {names.get(r["node_id"], r["node_id"]) for r in rows}
    print(f"\n[spread] trial -> node: {placed}")
    used = set().union(*placed.values())
    assert used <= {"w1", "w2"}, f"a trial ran outside the worker nodes (the head has CPU 0): {placed}"
    assert used == {"w1", "w2"}, f"all trials ran on one node: {placed}"
    # loader=cache: each node decoded the data once, into its own local cache, whatever number of trials ran there
    # (and at most once more for the ensemble's scoring tasks: val + test, whatever number of members).
    for node in used:
        built = sorted((cluster.root / f"{node}-local-disk" / "decoded").glob("*/build.json"))
        images = sorted(json.loads(b.read_text())["images"] for b in built)
        trials_here = sum(node in nodes for nodes in placed.values())
        print(f"[spread] {node}: {trials_here} trials, decoded caches built: {len(built)} ({images} images)")
        assert images in ([3 * 4 + 6, 3 * (24 + 4)], [3 * (24 + 4)]), built  # val + test; train + val

    # The ensemble stage ran inside the driver while Ray was up: every member scored by a Ray task on a worker
    # node (the head has CPU 0 and no copy of the work), none in the driver.
    manifest = json.loads((experiment / "ensemble.json").read_text())
    scored = {m["trial_id"]: names.get(m["scored_on"]["node_id"], m["scored_on"]["node_id"])
              for m in manifest["scores"]["members"]}
    print(f"[spread] ensemble member -> node that scored it: {scored}")
    assert len(scored) == 4 and set(scored.values()) <= {"w1", "w2"}, scored
    assert (experiment / "prediction.csv").exists()


DRIVER = ("import ray\n"
          "ray.init(address={address!r}, logging_level='ERROR')\n"
          "print('CONNECTED to', len([n for n in ray.nodes() if n['Alive']]), 'nodes')\n")


@pytest.mark.parametrize("credentials", ["the token", "no token", "a wrong token", "token mode, no token"])
def test_a_driver_needs_the_token(cluster, credentials):
    env = {"the token": cluster.env(),
           "no token": cluster.env(token=False, extra=QUICK_REFUSAL),
           "a wrong token": cluster.env(token=False, extra={**QUICK_REFUSAL, "RAY_AUTH_MODE": "token",
                                                            "RAY_AUTH_TOKEN": secrets.token_hex(32)}),
           "token mode, no token": cluster.env(token=False, extra={**QUICK_REFUSAL, "RAY_AUTH_MODE": "token"}),
           }[credentials]
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(address=cluster.address)], env=env,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    said = next((line for line in out.splitlines() if "CONNECTED" in line or "AuthenticationError:" in line), out[-300:])
    print(f"\n[auth] driver with {credentials}: exit {proc.returncode}: {said[:160]}")
    if credentials == "the token":
        assert proc.returncode == 0 and f"CONNECTED to {len(cluster.alive_nodes())} nodes" in out, out[-3000:]
        return
    assert proc.returncode != 0 and "CONNECTED" not in out, out[-3000:]
    assert "AuthenticationError" in out, out[-3000:]
    if credentials == "token mode, no token":  # refused on the client, before it connects
        assert "Token authentication is enabled but no authentication token was found" in out
    else:  # refused by the cluster
        assert AUTH_REFUSED in out, out[-3000:]


@pytest.mark.parametrize("credentials", ["no token", "a wrong token"])
def test_a_node_without_the_token_cannot_join(cluster, credentials):
    before = cluster.alive_nodes()
    env = cluster.env(token=False, extra=QUICK_REFUSAL)
    if credentials == "a wrong token":
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    name = "intruder-" + credentials.replace(" ", "-")
    node = cluster.add_worker(name, cpus=1, env=env, wait=False)  # tracked: stopped with the cluster anyway
    try:
        code = node.process.wait(90)
    except subprocess.TimeoutExpired:
        code = None
    log = node.log.read_text()
    after = cluster.alive_nodes()
    print(f"\n[auth] `ray start --address` with {credentials}: exit {code}; nodes before {len(before)}, "
          f"after {len(after)}")
    assert code not in (None, 0), f"a node with {credentials} is still running:\n{log[-3000:]}"
    assert AUTH_REFUSED in log, log[-3000:]
    assert len(after) == len(before)
    assert not any(f"node:{name}" in n["resources"] for n in after)


def test_a_killed_worker_node_loses_no_trial(cluster, data, tmp_path, s3_endpoint):
    """With --storage s3://... (moto's S3 API), SIGKILL worker w1's process group (ray start, raylet, the trial's
    process) once a trial on it has checkpointed two epochs into the bucket; a replacement node joins, as the
    autoscaler would start one. The trial must continue on another node from its last checkpoint, read back from
    the bucket, and every trial must finish."""
    import pyarrow.fs

    num_samples, max_epochs = 3, 6
    w1 = cluster.nodes["w1"]
    assert w1.alive, "this test needs w1 (run it with the module's other tests or alone, not after a failure)"
    name = "faults"
    storage = f"s3://{S3_BUCKET}/faults?endpoint_override={s3_endpoint}&scheme=http"
    fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
    in_bucket = f"{S3_BUCKET}/faults/{name}"

    def checkpointed(trial: str, index: int) -> bool:
        info = fs.get_file_info(f"{in_bucket}/{trial}/checkpoint_{index:06d}/model.pt")
        return info.type == pyarrow.fs.FileType.File

    started = time.time()
    driver, run_dir = start_search(cluster, tmp_path, data, name, space(num_samples, max_epochs), storage=storage)
    victim, seen = None, []
    try:
        deadline = time.time() + 240
        while victim is None:
            assert driver.poll() is None, "the search ended before a trial on w1 had checkpointed:\n" + \
                driver.log_path.read_text()[-3000:]
            assert time.time() < deadline, "no trial on w1 reached epoch 2 in 240 s"
            for d in trial_dirs(driver_artifacts(cluster, name)):
                rows = results(d)
                if rows and rows[-1]["node_id"] == w1.node_id and 2 <= rows[-1]["epoch"] < max_epochs - 1:
                    if checkpointed(d.name, rows[-1]["training_iteration"] - 1):
                        victim, seen = d, rows
                        break
            time.sleep(0.2)
        experiment = driver_artifacts(cluster, name)  # the driver's copy of each trial's result.json
        finished_before = {d.name: results(d) for d in trial_dirs(experiment)
                           if len(results(d)) == max_epochs}
        cluster.kill_worker("w1")
        killed_at = w1.killed_at - started
        report = [f"[fault] killed: node w1 ({w1.node_id[:8]}), SIGKILL to its process group, {killed_at:.1f} s "
                  f"into the search, while trial {victim.name} had reported epochs 1..{seen[-1]['epoch']} there "
                  f"(checkpoint_{seen[-1]['training_iteration'] - 1:06d} in the bucket); "
                  f"{len(finished_before)} trial(s) already finished"]
        w3 = cluster.add_worker("w3", cpus=1)  # as the autoscaler would replace a lost node
        report.append(f"[fault] replacement node w3 ({w3.node_id[:8]}) joined {time.time() - w1.killed_at:.1f} s "
                      "after the kill")
    except BaseException:
        kill_driver(driver)
        raise

    code, log = finish(driver, 300)
    report.append("[fault] Tune: " + " / ".join(line.strip() for line in log.splitlines()
                                                if f"trial {victim.name} failed at epoch" in line
                                                or "its node has died" in line or "terminated unexpectedly" in line))
    names = cluster.node_names()
    rows = results(victim)
    epochs = [r["epoch"] for r in rows]
    where = [names.get(r["node_id"], r["node_id"][:8]) for r in rows]
    on_w1 = [r["epoch"] for r in rows if r["node_id"] == w1.node_id]
    after = [r for r in rows if r["node_id"] != w1.node_id]
    report.append(f"[fault] recovered: trial {victim.name} epochs {epochs} on nodes {where}; resumed at epoch "
                  f"{after[0]['epoch'] if after else '-'} on {where[len(on_w1)] if after else '-'} "
                  f"after {len(on_w1)} epoch(s) on w1")
    table = pd.read_csv(run_dir / "leaderboard.csv") if (run_dir / "leaderboard.csv").exists() else None
    if table is not None:
        report.append(f"[fault] search ended (exit {code}): " + ", ".join(
            f"{r.trial_id} {r.status} ({r.epochs} epochs)" for r in table.itertuples()))
    report = "\n".join(report)
    print("\n" + report)

    assert code == 0, report + "\n" + log[-4000:]
    assert table is not None and len(table) == num_samples and (table["status"] == "completed").all(), report
    # The victim continued from its checkpoint on another node: its own epoch counter (restored from the
    # checkpoint in the bucket, not Tune's) goes on from the last epoch w1 reported, each epoch exactly once.
    assert epochs == list(range(1, max_epochs + 1)), report
    assert on_w1 == list(range(1, len(on_w1) + 1)) and len(on_w1) >= len(seen) >= 2, report
    assert after and after[0]["epoch"] == on_w1[-1] + 1 and after[0]["epoch"] > 1, report
    assert {names.get(r["node_id"]) for r in after} <= {"w2", "w3"}, report
    # Tune saw the node die (detected by the GCS health check) and retried the trial: not a silent restart.
    assert f"trial {victim.name} failed at epoch" in log and "retried from its last checkpoint" in log, log[-4000:]
    assert f"its node has died. Node Id: {w1.node_id}" in log, log[-4000:]
    assert w1.node_id not in {n["node_id"] for n in cluster.alive_nodes()}, "the GCS still lists w1 as alive"
    # No finished trial was lost or rerun; every checkpoint is in the bucket and none on the local disk.
    for name_, before in finished_before.items():
        assert results(experiment / name_) == before, name_
    for d in trial_dirs(experiment):
        assert [r["epoch"] for r in results(d)] == list(range(1, max_epochs + 1)), d.name
    kept = fs.get_file_info(pyarrow.fs.FileSelector(f"{in_bucket}/{victim.name}"))
    assert any(f.base_name.startswith("checkpoint_") for f in kept), "the victim has no checkpoint in the bucket"
    assert not list(tmp_path.rglob("model.pt")), "a checkpoint was written or synced to the local disk"


def test_an_s3_search_ensembles_on_worker_nodes_straight_from_the_bucket(cluster, data, tmp_path, s3_endpoint):
    """--storage s3://... (moto's S3 API on localhost): trials checkpoint into the bucket from the worker nodes,
    and the ensemble's scoring tasks, on worker nodes, read every member from there; nothing is synced down."""
    import pyarrow.fs

    storage = f"s3://{S3_BUCKET}/multinode?endpoint_override={s3_endpoint}&scheme=http"
    driver, run_dir = start_search(cluster, tmp_path, data, "s3spread", space(num_samples=2, max_epochs=2),
                                   ensemble_top_k=2, storage=storage)
    code, log = finish(driver, 420)
    assert code == 0, log[-4000:]
    fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
    in_bucket = {f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(f"{S3_BUCKET}/multinode/s3spread",
                                                                           recursive=True))}
    assert not list(tmp_path.rglob("model.pt")), "a checkpoint was written or synced to the local disk"
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert manifest["selection"]["skipped"] == [] and len(manifest["scores"]["members"]) == 2
    table = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str}).set_index("trial_id")
    names = cluster.node_names()
    scored = {}
    for member in manifest["scores"]["members"]:
        checkpoint = table.loc[member["trial_id"], "best_checkpoint"]
        assert checkpoint.startswith(f"{S3_BUCKET}/multinode/s3spread/") and f"{checkpoint}/model.pt" in in_bucket
        assert member["acc"] == pytest.approx(table.loc[member["trial_id"], "best_val_acc"], abs=1e-6)
        scored[member["trial_id"]] = names.get(member["scored_on"]["node_id"], member["scored_on"]["node_id"])
    print(f"\n[s3] members read from the bucket, scored on: {scored}")
    assert set(scored.values()) <= {"w1", "w2", "w3"}, scored  # never the head
