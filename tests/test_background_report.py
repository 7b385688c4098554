"""report_in_background (worker/tune_trial.py, BackgroundTuneSink): the trial trains on while Tune persists
its checkpoint and the driver answers; results, ASHA's decisions, checkpoints and exact resume are as with
synchronous reports."""
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import fit_with_one_retry, reported_rows
from core.errors import TrialStopped

TINY = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
        "lr": 0.01, "seed": 1}


@pytest.fixture
def fake_tune(monkeypatch):
    """tune.report replaced by one that blocks until the test answers (as the driver does), recording what came."""
    import ray

    from worker import tune_sink

    calls, answers, given, entered = [], [], [], threading.Event()

    def report(metrics, checkpoint=None):
        files = sorted(p.name for p in Path(checkpoint.path).iterdir()) if checkpoint is not None else None
        # Whether every earlier report had been answered when this one reached Tune: one in flight at a time.
        calls.append((metrics["epoch"], files))
        answered.append(all(a.is_set() for a in given))
        answer = answers.pop(0) if answers else threading.Event()
        given.append(answer)
        entered.set()
        answer.wait(60)  # the test answers; a bound only so that a broken test fails instead of hanging
        if getattr(answer, "stop", False):
            raise SystemExit(0)  # what Tune's session does to the report of a trial it stops
        if getattr(answer, "error", None):
            raise answer.error

    monkeypatch.setattr(tune_sink.tune, "report", report)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node"))
    answered = []
    return SimpleNamespace(calls=calls, answers=answers, entered=entered, answered=answered)


def answer(stop=False, error=None, now=True):
    event = threading.Event()
    event.stop, event.error = stop, error
    if now:
        event.set()
    return event


def test_report_returns_at_once_and_the_next_waits_for_the_answer(fake_tune, tmp_path):
    from worker.tune_sink import BackgroundTuneSink

    first = answer(now=False)
    fake_tune.answers[:] = [first, answer()]
    reporter = BackgroundTuneSink()
    ckpt = tmp_path / "trial-ckpt-1"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"w")

    reporter.send({"epoch": 1}, ckpt)
    assert not ckpt.exists()  # taken over: the trial may delete its path
    assert fake_tune.entered.wait(60) and not first.is_set()  # send() returned while Tune still holds the report
    assert fake_tune.calls == [(1, ["model.pt"])]               # Tune got the checkpoint's files

    second = threading.Thread(target=reporter.send, args=({"epoch": 2}, None))
    second.start()
    first.set()
    second.join(60)
    reporter.flush()
    assert fake_tune.calls == [(1, ["model.pt"]), (2, None)] and not reporter.stopped()
    assert fake_tune.answered == [True, True]  # the second reached Tune only once the first was answered
    staging = reporter._staging
    reporter.close()
    assert not staging.exists()


def test_a_stop_is_seen_between_batches_and_ends_the_trial(fake_tune):
    from worker.tune_sink import BackgroundTuneSink

    fake_tune.answers[:] = [answer(stop=True)]
    reporter = BackgroundTuneSink()
    reporter.send({"epoch": 1}, None)
    wait_until(reporter.stopped)
    with pytest.raises(TrialStopped):
        reporter.send({"epoch": 2}, None)
    assert [epoch for epoch, _ in fake_tune.calls] == [1]                # nothing reaches Tune after the stop
    reporter.close()


def test_a_failed_report_is_raised_by_the_next_call(fake_tune):
    from worker.tune_sink import BackgroundTuneSink

    fake_tune.answers[:] = [answer(error=OSError("bucket refused the upload"))]
    reporter = BackgroundTuneSink()
    reporter.send({"epoch": 1}, None)
    with pytest.raises(OSError, match="bucket refused"):
        reporter.flush()
    reporter.close()


def wait_until(condition, timeout=60.0):  # a bound only: the condition is an event the test waits for
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run_asha(toy_data, tmp_path, name, background: bool, lrs=(0.05, 1e-5, 0.02, 1e-6), **keys):
    """Trials one at a time under ASHA (rung at epoch 2, rf 2), actors reused as spaces/full.py does."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from worker.tune_trial import tune_trial

    config = {**TINY, "epochs": 4, "resume_state_every": 2, "checkpoint_new_bests": False, "keep_checkpoints": 2,
              "data": str(toy_data), "report_in_background": background,
              "lr": tune.grid_search(list(lrs)), **keys}
    tuner = tune.Tuner(
        tune.with_resources(tune_trial, {"cpu": 1}), param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=1, reuse_actors=True,
                                    scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=2,
                                                            reduction_factor=2)),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "runs"), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2,
                                                                          checkpoint_score_attribute="val_acc",
                                                                          checkpoint_score_order="max")))
    results = list(tuner.fit())
    assert all(r.error is None for r in results) and len(results) == len(lrs), [r.error for r in results]
    return {r.config["lr"]: r for r in results}


def outcome(result):
    """What Tune holds of a trial: each report's epoch, values and whether it carried a checkpoint; the kept
    checkpoints' epochs."""
    rows = [(r["epoch"], r["val_loss"], r["val_acc"], bool(r.get("checkpoint_dir_name"))) for r in reported_rows(result)]
    kept = sorted(metrics["epoch"] for _, metrics in result.best_checkpoints)
    return rows, kept


def test_under_tune_and_asha_background_reports_give_what_synchronous_ones_give(toy_data, tmp_path, ray_session):
    """Same trials, one at a time, reused actors: each trial's reports (epochs, values, checkpoints), ASHA's
    stops and the kept checkpoints are identical; no reused actor failed to reset (a stopped trial ended in
    time) and a stopped trial reported nothing after its stop."""
    sync = run_asha(toy_data, tmp_path, "sync", background=False)
    background = run_asha(toy_data, tmp_path, "background", background=True)
    assert {lr: outcome(r) for lr, r in background.items()} == {lr: outcome(r) for lr, r in sync.items()}
    last_epochs = sorted(reported_rows(r)[-1]["epoch"] for r in background.values())
    assert last_epochs[0] == 2 and last_epochs[-1] == 4  # ASHA stopped some at the rung and let some finish


def test_with_checkpoint_after_decision_a_stopped_trial_writes_no_checkpoint(toy_data, tmp_path, ray_session):
    """Both keys: on the rung the trial waits for ASHA's answer (flush) before it writes the checkpoint, which
    then persists in the background. The trial that went on reported epoch 2 twice (metrics, then the marked
    checkpoint) and kept epochs 2 and 4; the one stopped at the rung reported once and wrote no checkpoint."""
    from core.report_policy import CHECKPOINT_OF_REPORTED_EPOCH

    results = run_asha(toy_data, tmp_path, "background-decide", background=True, lrs=(0.05, 1e-5),
                       report_epochs="2", checkpoint_after_decision=True)
    went_on, stopped = results[0.05], results[1e-5]  # the first sets the rung's cutoff, the second falls below
    rows = reported_rows(went_on)
    assert [(r["epoch"], bool(r.get(CHECKPOINT_OF_REPORTED_EPOCH)), bool(r.get("checkpoint_dir_name")))
            for r in rows] == [(2, False, False), (2, True, True), (4, False, True)]
    assert sorted(m["epoch"] for _, m in went_on.best_checkpoints) == [2, 4]
    assert [r["epoch"] for r in reported_rows(stopped)] == [2]
    assert stopped.checkpoint is None and stopped.best_checkpoints == []


def test_a_trial_failing_while_its_checkpoint_is_in_flight_resumes_from_it_exactly(toy_data, tmp_path, ray_session):
    """The trial raises right after handing over epoch 2's report (with its checkpoint): the report in flight
    still reaches Tune, so the retry resumes from epoch 2 and its epochs 3 and 4 equal a run that never failed."""
    from worker.tune_sink import BackgroundTuneSink
    from worker.tune_trial import run_reporting_to_tune
    from trainable.trial import train_trial

    marker, trained = tmp_path / "failed-once", tmp_path / "trained"
    trained.mkdir()

    def flaky_trial(config):
        fail_at = config["fail_at"]
        config = {k: v for k, v in config.items() if k != "fail_at"}

        class FailingOnce(BackgroundTuneSink):
            def send(self, metrics, checkpoint_dir):
                super().send(metrics, checkpoint_dir)  # handed over; Tune has not answered yet
                with open(trained / f"{fail_at}.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if metrics["epoch"] == fail_at and not marker.exists():
                    marker.touch()
                    raise RuntimeError("node lost")

        run_reporting_to_tune(train_trial, config, FailingOnce())

    from ray import tune

    config = {**TINY, "epochs": 4, "resume_state_every": 2, "checkpoint_new_bests": False, "keep_checkpoints": 1,
              "report_in_background": True, "data": str(toy_data), "fail_at": tune.grid_search([0, 2])}
    results = {r.config["fail_at"]: r for r in fit_with_one_retry(flaky_trial, config, tmp_path / "runs", "bg")}
    assert marker.exists()
    rows = lambda name: [json.loads(line) for line in (trained / name).read_text().splitlines()]
    clean, retried = rows("0.jsonl"), rows("2.jsonl")
    assert [r["epoch"] for r in clean] == [1, 2, 3, 4]
    assert [r["epoch"] for r in retried] == [1, 2, 3, 4]   # resumed from epoch 2's checkpoint, nothing retrained
    for got, want in zip(retried[2:], clean[2:]):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert got[key] == want[key], (got["epoch"], key)
    assert [r["epoch"] for r in reported_rows(results[2])] == [1, 2, 3, 4]


def test_a_stop_between_reports_is_seen_without_a_report(fake_tune, monkeypatch):
    """Tune stops a trial that has no report in flight (the experiment's end, Ctrl-C) by setting its session's
    stop event: the trial sees it at its next batch, not at its next report."""
    from ray.train._internal import session

    from worker.tune_sink import BackgroundTuneSink

    stop = threading.Event()
    monkeypatch.setattr(session, "get_session", lambda: SimpleNamespace(stop_event=stop))
    reporter = BackgroundTuneSink()
    assert not reporter.stopped()
    stop.set()
    assert reporter.stopped()
    with pytest.raises(TrialStopped):
        reporter.send({"epoch": 1}, None)
    assert fake_tune.calls == []
    reporter.close()
