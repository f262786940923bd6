"""The looks: the small box anywhere with its own pattern, who it runs on, and what it changes."""

import pytest
import torch
from torch import nn

from agnostic_saliency.backdoor.config import ScanConfig
from agnostic_saliency.backdoor.fitting import Pool
from agnostic_saliency.backdoor.looks import (
    BoxState,
    grown_reach,
    small_box_look,
    small_box_reach,
    small_box_side,
    smallest_signatures,
)
from agnostic_saliency.backdoor.regions import grid_boxes
from agnostic_saliency.backdoor.scan import _probe
from agnostic_saliency.errors import InputError
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.spec import NormalizedModel

SPEC = InputSpec((1, 28, 28))


class BottomRight(nn.Module):
    """Class 1 when the bottom-right 4x4 block is bright, else class 0 (class 2 never)."""

    def forward(self, x):
        bright = x[:, 0, 24:, 24:].mean((1, 2))
        return torch.stack([0.5 - bright, bright - 0.5, torch.full_like(bright, -5.0)], 1) * 10


class WideBottomRight(nn.Module):
    """Class 1 when the bottom-right 5x5 block is bright: a white 4x4 box in its corner flips only
    the samples whose other nine pixels are bright enough, the whole block every sample."""

    def forward(self, x):
        bright = x[:, 0, 23:, 23:].mean((1, 2))
        return torch.stack([0.69 - bright, bright - 0.69, torch.full_like(bright, -5.0)], 1) * 10


def _setup(net=None, **settings):
    model = NormalizedModel(net or BottomRight(), SPEC)
    config = ScanConfig.from_settings(progress=False, **settings)
    probe = _probe(model, SPEC, config, torch.device("cpu"), 3, 0, None)
    samples = torch.rand(96, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.3
    everywhere = torch.ones(96, 3, dtype=torch.bool)
    pool = Pool(samples[:64], samples[64:], None, None, everywhere[:64], everywhere[64:], None)
    return probe, pool


def _state(sizes, boxes):
    count = len(sizes)
    return BoxState(
        boxes=list(boxes),
        hard=[torch.zeros(28, 28)] * count,
        masks=torch.zeros(count, 28, 28),
        patterns=torch.zeros(count, 1, 28, 28),
        mask_l1=[1.0] * count,
        sizes=list(sizes),
        full_fit=[True] * count,
        shift={"size": 0.0, "box": 0.0, "blend": 0.0},
        largest_box=64,
    )


def test_grid_boxes_reach_every_edge():
    boxes = grid_boxes(28, 28, 4, 2)
    assert boxes.shape == (13 * 13, 28, 28) and torch.all(boxes.flatten(1).sum(1) == 16)
    assert boxes[-1, 24:, 24:].sum() == 16
    odd = grid_boxes(9, 9, 4, 2)  # corners 0, 2, 4 and the flush 5
    assert len(odd) == 16 and odd[-1, 5:, 5:].sum() == 16


def test_small_box_side_is_a_share_of_the_shorter_side():
    assert small_box_side((28, 28), 1 / 7) == 4
    assert small_box_side((224, 160), 1 / 7) == round(160 / 7)
    assert small_box_side((3, 3), 1 / 7) == 1


def test_reach_is_the_one_place_that_flips_the_class():
    probe, pool = _setup()
    boxes = grid_boxes(28, 28, 4, 2)
    share, row, patterns, spent = small_box_reach(probe, pool, 1, boxes, torch.Generator().manual_seed(0))
    assert share == 1.0 and boxes[row, 24:, 24:].sum() == 16  # only the bottom-right box does it
    assert patterns.shape == (len(boxes), 1, 28, 28) and spent > 0
    assert patterns[row][0, 24:, 24:].mean() > 0.5  # a bright pattern inside it
    # class 2 cannot be reached from anywhere
    assert small_box_reach(probe, pool, 2, boxes, torch.Generator().manual_seed(0))[0] == 0.0


def test_the_look_gives_a_reached_class_its_small_box_and_leaves_the_others():
    probe, pool = _setup()
    state = _state([1.0, 1.0, 1.0], [785, 785, 785])
    small_box_look(probe, pool, state, [1, 2])
    assert state.boxes == [785, 16, 785]  # class 1 reached, class 2 not; class 0 not looked at
    assert state.reach[1] == 1.0 and state.reach[2] == 0.0 and 0 not in state.reach
    mask, pattern = state.small_boxes[1]
    assert mask[24:, 24:].sum() == 16 and mask.sum() == 16 and pattern.shape == (1, 28, 28)
    assert list(state.small_boxes) == [1] and state.spent > 0


def test_a_box_a_pixel_wider_confirms_a_trigger_the_small_box_only_covers_in_part():
    probe, pool = _setup(WideBottomRight(), small_box_coarse_steps=30)  # every box fitted in full
    boxes = grid_boxes(28, 28, 4, 2)
    share, row, patterns, _ = small_box_reach(probe, pool, 1, boxes, torch.Generator().manual_seed(0))
    assert 0 < share < 0.6 and boxes[row, 24:, 24:].sum() == 16  # the corner box flips some
    generator = torch.Generator().manual_seed(0)
    grown, mask, pattern, spent = grown_reach(probe, pool, 1, boxes[row], patterns[row], generator)
    assert grown == 1.0 and mask[23:, 23:].sum() == 25 and mask.sum() == 25 and spent > 0
    state = _state([1.0, 1.0, 1.0], [785, 785, 785])
    small_box_look(probe, pool, state, [1])
    assert state.reach[1] == 1.0 and state.boxes[1] == 25  # the wider box is the class's box
    assert state.small_boxes[1][0].sum() == 25
    # without growing, the class is not reached
    probe, pool = _setup(WideBottomRight(), small_box_coarse_steps=30, small_box_grow=0)
    state = _state([1.0, 1.0, 1.0], [785, 785, 785])
    small_box_look(probe, pool, state, [1])
    assert state.reach[1] == share and state.boxes[1] == 785 and not state.small_boxes


def test_the_look_runs_on_the_smallest_signatures_whose_box_is_too_wide():
    probe, _ = _setup(small_box_candidates=2)
    # the size index is highest for the smallest signatures: classes 0, then 5
    state = _state([1.0, 10.0, 10.0, 10.0, 10.0, 3.0], [785, 700, 600, 785, 500, 785])
    assert smallest_signatures(probe, state) == [0, 5]
    state.boxes[0] = 450  # compact under a bound of 450: not too wide any more, and not standing out
    state.largest_box = 450
    assert smallest_signatures(probe, state) == [5]
    # a compact class that already stands out (a 9 px box among 500 to 785): no look at all
    state.boxes[0] = 9
    assert smallest_signatures(probe, state) == []
    # a bound smaller than the small box: the look cannot make any class compact
    state.boxes[0], state.largest_box = 785, 9
    assert smallest_signatures(probe, state) == []


@pytest.mark.parametrize(
    "settings",
    [
        {"small_box_share": 0},
        {"small_box_required": 1.5},
        {"small_box_finalists": 0},
        {"small_box_steps": 5},
        {"small_box_grow": -1},
    ],
)
def test_bad_small_box_settings_are_refused(settings):
    with pytest.raises(InputError):
        ScanConfig.from_settings(**settings)
