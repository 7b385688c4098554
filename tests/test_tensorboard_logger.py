"""The driver's TensorBoard logger does not flush (fsync) after every result, closes files off the driver's loop,
loses nothing at close, and steps every epoch by its own number."""
from search.tensorboard_hparams import FLUSH_S, HParamsLoggerCallback
from trainable.report_policy import EPOCHS_BETWEEN


def fake_tune_trial(tmp_path):
    class Trial:  # what the logger reads of Tune's Trial
        local_path, evaluated_params, last_result = str(tmp_path), {"lr": 0.1}, {}

        def init_local_path(self):
            pass

    return Trial()


def test_results_are_flushed_in_the_background_and_at_close(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = HParamsLoggerCallback()._summary_writer_cls(str(tmp_path))
    assert writer.file_writer.event_writer._flush_secs == FLUSH_S  # the writer's own thread still flushes
    for step in range(1, 4):
        writer.add_scalar("ray/tune/val_acc", step / 10, global_step=step)
        writer.flush()  # what Tune calls after every result: no longer a synchronous write
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    assert "ray/tune/val_acc" not in acc.Tags()["scalars"]
    writer.close()
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    assert [round(e.value, 6) for e in acc.Scalars("ray/tune/val_acc")] == [0.1, 0.2, 0.3]


def test_a_trials_file_closes_off_the_drivers_loop_and_the_end_waits_for_it(tmp_path):
    import threading

    from ray import cloudpickle

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger, trial = HParamsLoggerCallback(), fake_tune_trial(tmp_path)
    logger.log_trial_result(1, trial, {"epoch": 1, "val_acc": 0.5, "training_iteration": 1})
    writer = logger._trial_writer[trial]
    closed_on, close = [], writer.close
    writer.close = lambda: (closed_on.append(threading.current_thread().name), close())
    logger.log_trial_end(trial)
    assert cloudpickle.loads(cloudpickle.dumps(logger))._closer is None  # Tune pickles its callbacks: no thread
    logger.on_experiment_end(trials=[trial])
    assert closed_on and closed_on[0].startswith("tensorboard-close")
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    assert [round(e.value, 6) for e in acc.Scalars("ray/tune/val_acc")] == [0.5]
    assert "_hparams_/session_end_info" in acc.summary_metadata  # the trial's end is in its file


def test_every_epoch_is_stepped_by_its_own_number(tmp_path):
    """report_epochs: the epochs a trial reported in one go each land at their own step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger, trial = HParamsLoggerCallback(), fake_tune_trial(tmp_path)
    logger.log_trial_result(1, trial, {"epoch": 3, "val_acc": 0.3, "training_iteration": 1,
                                       EPOCHS_BETWEEN: [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2}]})
    logger.log_trial_result(2, trial, {"epoch": 4, "val_acc": 0.4, "training_iteration": 2})
    logger.log_trial_end(trial)
    logger.on_experiment_end(trials=[trial])  # the files close off the driver's loop; the end waits for them
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("ray/tune/val_acc")] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]


def event_files(path):
    return sorted(p.name for p in path.glob("events.out.tfevents*"))


def test_a_trials_event_file_opens_at_its_first_result_not_its_start(tmp_path):
    """Opening it at the start would cost every trial start in the first wave; nothing is lost by waiting."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger, trial = HParamsLoggerCallback(), fake_tune_trial(tmp_path)
    logger.on_trial_start(0, [trial], trial)
    assert trial not in logger._trial_writer and event_files(tmp_path) == []
    logger.log_trial_result(1, trial, {"epoch": 1, "val_acc": 0.5, "training_iteration": 1})
    assert len(event_files(tmp_path)) == 1
    logger.log_trial_end(trial)
    logger.on_experiment_end(trials=[trial])
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    assert [round(e.value, 6) for e in acc.Scalars("ray/tune/val_acc")] == [0.5]


def test_a_trial_that_fails_before_its_first_result_still_writes_its_failed_session(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    logger, trial = HParamsLoggerCallback(), fake_tune_trial(tmp_path)
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_error(0, [trial], trial)
    logger.on_experiment_end(trials=[trial])
    acc = EventAccumulator(str(tmp_path)); acc.Reload()
    end = HParamsPluginData.FromString(acc.summary_metadata["_hparams_/session_end_info"].plugin_data.content)
    assert end.session_end_info.status == Status.Value("STATUS_FAILURE")
    start = HParamsPluginData.FromString(acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content)
    assert start.session_start_info.hparams["lr"].number_value == 0.1


def test_a_trial_started_again_after_a_failure_writes_a_new_file_from_its_next_result(tmp_path):
    import time

    logger, trial = HParamsLoggerCallback(), fake_tune_trial(tmp_path)
    logger.on_trial_start(0, [trial], trial)
    logger.log_trial_result(1, trial, {"epoch": 1, "val_acc": 0.5, "training_iteration": 1})
    first = logger._trial_writer[trial]
    time.sleep(1.1)  # event file names carry the second they were opened in
    logger.on_trial_start(0, [trial], trial)  # Tune restarts the failed trial
    assert trial not in logger._trial_writer and first.file_writer is None  # closed
    logger.log_trial_result(2, trial, {"epoch": 2, "val_acc": 0.6, "training_iteration": 2})
    logger.log_trial_end(trial)
    logger.on_experiment_end(trials=[trial])
    assert len(event_files(tmp_path)) == 2
