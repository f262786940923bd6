import torch

from agnostic_saliency.method.stopping import CHECK_EVERY, EarlyStop


def hits_at(rates: list[float], batch: int = 20) -> torch.Tensor:
    """(maps, batch) hits whose per-map rates are ``rates``."""
    return torch.stack([torch.arange(batch) < round(rate * batch) for rate in rates])


def test_a_map_stops_once_its_mean_rate_over_the_window_reaches_the_target():
    stopper = EarlyStop(3, target=0.89, window=20, device="cpu")
    # map 0 always at 1.0; map 1 alternates 0.85 and 0.95 (mean 0.9); map 2 stays at 0.5
    for step in range(1, 20):
        stopper.update(step, hits_at([1.0, 0.85 if step % 2 else 0.95, 0.5]))
        assert stopper.active is None  # no decision before a full window
    stopper.update(20, hits_at([1.0, 0.95, 0.5]))
    assert stopper.stopped_at == [20, 20, None]
    assert stopper.active.tolist() == [2]
    # afterwards the hits hold the moving maps only
    for step in range(21, 61):
        stopper.update(step, hits_at([0.5 if step < 40 else 1.0]))
    # map 2 is at 0.5 until step 39: its mean over the window reaches 0.9 at step 55, checked at 60
    assert stopper.stopped_at == [20, 20, 60] and stopper.finished
    assert stopper.steps_taken(100) == [20, 20, 60]


def test_decisions_are_taken_every_check_interval_only():
    stopper = EarlyStop(1, target=0.5, window=1, device="cpu")
    for step in range(1, CHECK_EVERY):
        stopper.update(step, hits_at([1.0]))
    assert stopper.stopped_at == [None]
    stopper.update(CHECK_EVERY, hits_at([1.0]))
    assert stopper.stopped_at == [CHECK_EVERY]


def test_a_disabled_stopper_never_stops_and_the_state_round_trips():
    off = EarlyStop(2, target=0.1, window=1, device="cpu", enabled=False)
    for step in range(1, 31):
        off.update(step, hits_at([1.0, 1.0]))
    assert off.stopped_at == [None, None] and off.steps_taken(30) == [30, 30]
    on = EarlyStop(2, target=0.9, window=10, device="cpu")
    for step in range(1, 11):
        on.update(step, hits_at([1.0, 0.5]))
    again = EarlyStop(2, target=0.9, window=10, device="cpu")
    again.load_state_dict(on.state_dict())
    assert again.stopped_at == [10, None] and again.active.tolist() == [1]
    assert torch.equal(again.rates, on.rates)
