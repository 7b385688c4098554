"""A scheduler's whole state survives a checkpoint: timm's plateau scheduler loses its bad-epoch count otherwise."""
import timm.scheduler
import torch

from trainable.scheduler_state import load_scheduler_state, scheduler_state


def plateau(patience=2):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched="plateau", num_epochs=10, patience_epochs=patience, decay_rate=0.5, plateau_mode="max",
        step_on_epochs=True)
    return optimizer, scheduler


def test_a_restored_plateau_scheduler_decays_when_the_uninterrupted_one_does():
    optimizer, straight = plateau()
    for epoch, metric in enumerate([0.5, 0.4, 0.4], start=1):  # two bad epochs after the best
        straight.step(epoch, metric)
    saved = scheduler_state(straight)
    assert saved["plateau"]["num_bad_epochs"] == 2 and saved["best"] == 0.5

    resumed_optimizer, resumed = plateau()
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    load_scheduler_state(resumed, saved)
    straight.step(4, 0.4)  # the third bad epoch: patience 2 is exceeded, lr halves
    resumed.step(4, 0.4)
    assert optimizer.param_groups[0]["lr"] == resumed_optimizer.param_groups[0]["lr"] == 0.05

    # timm's own state_dict alone restarts the count: the resumed run would not have decayed yet.
    forgetful_optimizer, forgetful = plateau()
    forgetful.load_state_dict(timm.scheduler.PlateauLRScheduler.state_dict(straight))
    forgetful.step(4, 0.4)
    assert forgetful_optimizer.param_groups[0]["lr"] == 0.1


def test_other_schedulers_round_trip_unchanged():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cosine, _ = timm.scheduler.create_scheduler_v2(optimizer, sched="cosine", num_epochs=10, warmup_epochs=2)
    cosine.step(3)
    state = scheduler_state(cosine)
    assert state == cosine.state_dict()
    load_scheduler_state(cosine, state)
