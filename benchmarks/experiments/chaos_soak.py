"""Chaos soak (issue 25 item 6): a search on the local multi-node cluster (tests/local_cluster.py) with S3
storage (moto's server on localhost) while a random worker node is SIGKILLed every 20-40 s (and replaced, as the
autoscaler would) and the driver is SIGKILLed and resumed --driver-kills times at random moments.

    python -m benchmarks.experiments.chaos_soak --trials 32 --epochs 3 --workers 2 --driver-kills 3

At the end it checks, trial by trial, that the leaderboard, the Optuna study and what Tune stored in the bucket
agree (every trial finished or failed for a stated reason; every study trial the leaderboard names ended the
same way; nothing left RUNNING; orphans asked by a killed driver were failed and rerun: reasked_from), that no
trial's epochs went backwards further than its last checkpoint, and that the ensemble was built. Records the
kills survived, the epochs retrained per kill and the wall time (benchmarks/record.py). Not a test: minutes of
CPU, and the timing of kills is random by design (seeded).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.record import write_record

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "soak"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def space(trials: int, epochs: int) -> str:
    return f'''
SETTINGS = {{"num_samples": {trials}, "max_epochs": {epochs}, "grace_period": 1, "reduction_factor": 2,
            "cpus_per_trial": 1, "max_failures": 3, "train_size": 16, "eval_size": 16, "tpe_startup_trials": 4,
            "trial": {{"num_workers": 0, "backbone": "resnet10t", "batch_size": 8, "resume_state_every": 1}}}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 5e-2, log=True)
    trial.suggest_categorical("head", ["linear", "mlp"])
'''


def moto_server():
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    return server, f"127.0.0.1:{port}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kill-every", type=float, nargs=2, default=(20.0, 40.0), metavar=("MIN_S", "MAX_S"))
    p.add_argument("--driver-kills", type=int, default=3)
    p.add_argument("--driver-kill-after", type=float, nargs=2, default=(30.0, 90.0), metavar=("MIN_S", "MAX_S"),
                   help="each driver run is killed this long after it started, until --driver-kills are done")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--dir", type=Path, help="working folder (default: a new temp dir)")
    args = p.parse_args(argv)

    from tests.conftest import make_image_folder
    from tests.local_cluster import LocalCluster

    rng = random.Random(args.seed)
    work = args.dir or Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    data = make_image_folder(work / "data", classes=("a", "b", "c", "d"), per_class=12, size=16, noise=60.0)
    (work / "space.py").write_text(space(args.trials, args.epochs))
    os.environ.update(S3_ENV)
    server, endpoint = moto_server()
    storage = f"s3://{BUCKET}/tune?endpoint_override={endpoint}&scheme=http"
    workers = {f"w{i + 1}": 1 for i in range(args.workers)}
    events, started = [], time.time()
    with LocalCluster(work / "cluster", workers=workers, env_extra={**S3_ENV, "RESNET_SEARCH_CACHE": str(work / "cache")}
                      ) as cluster:
        cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(work / "space.py"), "--data", str(data),
               "--address", cluster.address, "--storage", storage, "--name", "soak", "--ensemble-top-k", "3"]
        env = cluster.env(extra={"PYTHONPATH": str(ROOT), **S3_ENV})

        def start(resume: bool, n: int):
            log = open(work / f"driver-{n}.log", "w")
            return subprocess.Popen(cmd[:2] + ["--name", "soak", "--resume", "--address", cluster.address,
                                               "--storage", storage] if resume else cmd,
                                    cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        run, driver_kills, next_worker = 0, 0, args.workers + 1
        driver = start(False, run)
        driver_started = time.time()
        kill_driver_at = driver_started + rng.uniform(*args.driver_kill_after) if args.driver_kills else None
        next_worker_kill = time.time() + rng.uniform(*args.kill_every)
        codes = []
        while True:
            if time.time() - started > args.timeout:  # recorded as such: what had happened by then
                os.killpg(driver.pid, signal.SIGKILL)
                path = write_record("chaos_soak", {"timed_out_after_s": args.timeout, "trials": args.trials,
                                                   "driver_kills": driver_kills, "driver_runs": run + 1,
                                                   "worker_kills": sum("worker" in e["event"] for e in events),
                                                   "events": events, "seed": args.seed})
                raise SystemExit(f"the soak ran past {args.timeout} s (record {path}); logs in {work}")
            code = driver.poll()
            if code is not None:
                codes.append(code)
                events.append({"t": time.time() - started, "event": f"driver run {run} exited {code}"})
                if code == 0:
                    break
                run += 1  # an interrupted or failed driver run: resume it, as a user would
                driver, driver_started = start(True, run), time.time()
                continue
            now = time.time()
            if kill_driver_at is not None and now >= kill_driver_at:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait(30)
                driver_kills += 1
                events.append({"t": now - started, "event": f"driver run {run} SIGKILLed"})
                run += 1
                driver, driver_started = start(True, run), time.time()
                kill_driver_at = (driver_started + rng.uniform(*args.driver_kill_after)
                                  if driver_kills < args.driver_kills else None)
            if now >= next_worker_kill:
                alive = [n for n, node in cluster.nodes.items() if n != "head" and node.alive]
                victim = rng.choice(alive)
                cluster.kill_worker(victim)
                name = f"w{next_worker}"
                next_worker += 1
                cluster.add_worker(name, cpus=1, wait=False)  # the autoscaler's replacement
                events.append({"t": now - started, "event": f"worker {victim} SIGKILLed, {name} started"})
                next_worker_kill = now + rng.uniform(*args.kill_every)
            time.sleep(0.5)
        wall = time.time() - started
        checks = check(work / "results" / "soak", storage, args.trials)
    server.stop()
    worker_kills = sum("worker" in e["event"] for e in events)
    figures = {"trials": args.trials, "max_epochs": args.epochs, "workers": args.workers, "wall_s": round(wall, 1),
               "worker_kills": worker_kills, "driver_kills": driver_kills, "driver_runs": run + 1,
               "driver_exit_codes": codes, **checks,
               "epochs_retrained_per_kill": round(checks["epochs_retrained"] / max(worker_kills + driver_kills, 1), 2),
               "events": events, "seed": args.seed}
    path = write_record("chaos_soak", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "events"}, indent=2))
    print(f"Record: {path}; logs in {work}")
    return 0 if checks["agree"] else 1


def check(run_dir: Path, storage: str, trials: int) -> dict:
    """Leaderboard vs study vs what Tune stored in the bucket, trial by trial."""
    import optuna
    import pandas as pd
    import pyarrow.fs

    from core.storage import join_uri
    from search.study import load_study

    table = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    study = load_study(run_dir)
    by_ray = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    expected = {"completed": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED,
                "failed": optuna.trial.TrialState.FAIL}
    disagree = [r.trial_id for r in table.itertuples()
                if r.trial_id not in by_ray or by_ray[r.trial_id].state != expected.get(r.status)]
    running = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    reasked = [t.number for t in study.trials if "reasked_from" in t.user_attrs]
    fs, base = pyarrow.fs.FileSystem.from_uri(join_uri(storage, "soak"))
    retrained, rows_total, backwards = 0, 0, []
    for r in table.itertuples():
        try:
            with fs.open_input_stream(f"{base}/{r.trial_id}/result.json") as f:
                epochs = [json.loads(line)["epoch"] for line in f.read().decode().splitlines() if line.strip()]
        except (OSError, ValueError):
            epochs = []
        rows_total += len(epochs)
        retrained += len(epochs) - len(set(epochs))
        if epochs and sorted(set(epochs)) != list(range(1, max(epochs) + 1)):
            backwards.append(r.trial_id)
    unreasoned = [r.trial_id for r in table.itertuples() if r.status == "failed" and not str(r.reason).strip()]
    ensemble = (run_dir / "ensemble.json").is_file()
    return {"leaderboard_trials": len(table), "statuses": dict(Counter(table["status"])),
            "study_trials": len(study.trials), "study_running": len(running), "reasked_orphans": len(reasked),
            "leaderboard_vs_study_disagree": disagree, "failed_without_reason": unreasoned,
            "epochs_reported": rows_total, "epochs_retrained": retrained, "epoch_gaps": backwards,
            "ensemble_built": ensemble,
            "agree": (len(table) == trials and not disagree and not running and not unreasoned and not backwards
                      and ensemble)}


if __name__ == "__main__":
    sys.exit(main())
