"""The driver's TensorBoard logger does not flush (fsync) after every result, and loses nothing at close."""
from search.tensorboard_hparams import FLUSH_S, HParamsLoggerCallback


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

