"""Where a stamp works: the smallest region, box and blend, and the compacted trigger box."""

import torch

from agnostic_saliency.backdoor.regions import (
    box_spots,
    compact_region,
    connected_parts,
    fills_its_box,
    smallest_box,
    weakest_blend,
    working_box,
)
from tests.backdoor.readers import BrightnessReader, CornerReader


def test_connected_parts_labels_each_8_connected_part_once():
    region = torch.zeros(6, 6)
    region[0, 0] = region[1, 1] = 1  # diagonal neighbours: one part
    region[4:, 4:] = 1
    labels = connected_parts(region)
    assert labels[0, 0] == labels[1, 1] != labels[4, 4]
    assert len(labels.unique()) == 3 and (labels[region == 0] == 0).all()


def test_compact_region_fills_a_checkerboard_and_ignores_a_stray_pixel():
    samples = torch.zeros(32, 1, 12, 12)
    pattern = torch.ones(1, 12, 12)
    region = torch.zeros(12, 12)
    region[:4, :4] = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0  # the bright cells of a 4x4 checker
    region[10, 10] = 1  # a stray helper pixel
    box = compact_region(CornerReader(), region, pattern, samples, target=1)
    assert box[:4, :4].sum() == 16 and box.sum() == 16


def test_compact_region_keeps_the_region_when_the_box_would_not_flip_the_samples():
    samples = torch.zeros(32, 1, 12, 12)
    pattern = torch.zeros(1, 12, 12)  # a dark stamp never makes the corner bright
    region = torch.zeros(12, 12)
    region[:2, :2] = 1
    assert torch.equal(compact_region(CornerReader(), region, pattern, samples, target=1), region)


class ScatterReader(torch.nn.Module):
    """Class 1 only when four pixels nine apart, (1, 1), (1, 10), (10, 1) and (10, 10), are all
    bright: a class reached from a scatter of pixels, as an easy clean class is."""

    def forward(self, x):
        spots = x[:, 0, [1, 1, 10, 10], [1, 10, 1, 10]].min(1).values
        return torch.stack([0.5 - spots, spots - 0.5], 1) * 50


def test_smallest_box_is_the_trigger_for_a_compact_region_and_wide_for_a_scattered_one():
    samples = torch.zeros(16, 1, 12, 12)
    base = torch.full((16, 2), 0.5)
    pattern = torch.ones(1, 1, 12, 12)
    corner = torch.zeros(1, 12, 12)
    corner[0, :4, :4] = 1
    # the corner's mean passes 0.5 once a 3x3 box of it is bright
    assert smallest_box(CornerReader(), corner, pattern, [1], samples, base) == [9]
    scatter = torch.zeros(1, 12, 12)
    scatter[0, [1, 1, 10, 10], [1, 10, 1, 10]] = 1
    # the four spots fit only in a 10x10 box, however few pixels the region has
    assert smallest_box(ScatterReader(), scatter, pattern, [1], samples, base) == [100]
    dark = torch.zeros(1, 1, 12, 12)  # a stamp that never flips: wider than the image
    assert smallest_box(CornerReader(), corner, dark, [1], samples, base) == [12 * 12 + 1]


def test_smallest_box_finds_a_trigger_beside_a_denser_cluster_of_the_region():
    samples = torch.zeros(16, 1, 12, 12)
    base = torch.full((16, 2), 0.5)
    pattern = torch.ones(1, 1, 12, 12)
    region = torch.zeros(1, 12, 12)
    region[0, 6:10, 6:10] = 1  # a dense cluster of helper pixels the model does not look at
    region[0, 0, :3] = region[0, 1, 0] = region[0, 2, 0] = 1  # 5 of the trigger's 9 pixels (CornerReader)
    # the densest 3x3 spot is in the cluster and no box there flips anything; the next one is the trigger
    found = smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=3, every_side_up_to=16)
    assert found == [9]
    assert smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=1, every_side_up_to=16)[0] > 9
    # by halves alone, the search first tries a 6x6 box, whose spots all miss the corner, and steps over 3x3
    assert smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=3)[0] > 9


def test_working_box_is_the_square_the_box_test_found_and_fills_its_box():
    samples = torch.zeros(16, 1, 12, 12)
    region = torch.zeros(12, 12)
    region[6:10, 6:10] = 1
    region[0, :3] = region[1, 0] = region[2, 0] = 1
    square = working_box(CornerReader(), region, torch.ones(1, 12, 12), samples, 1, side=3)
    assert square is not None and square[:3, :3].sum() == 9 and square.sum() == 9 and fills_its_box(square)
    assert not fills_its_box(region) and not fills_its_box(torch.zeros(4, 4))
    assert working_box(CornerReader(), region, torch.zeros(1, 12, 12), samples, 1, side=3) is None


def test_box_spots_are_the_densest_squares_that_do_not_overlap():
    region = torch.zeros(8, 8)
    region[:2, :2] = 1
    region[5, 5] = 1
    assert box_spots(region, 2, 3) == [(0, 0), (4, 4)]  # then nothing left with any of the region
    spots = box_spots(torch.ones(8, 8), 3, 4)
    squares = [{(top + i, left + j) for i in range(3) for j in range(3)} for top, left in spots]
    assert len(spots) == 4 and all(not a & b for n, a in enumerate(squares) for b in squares[n + 1 :])
    assert box_spots(torch.zeros(4, 4), 2, 3) == [(0, 0)]  # an empty region still gets one square


def test_weakest_blend_is_the_faintest_whole_image_blend_that_flips():
    samples = torch.full((16, 1, 6, 6), 0.1)
    base = torch.full((16, 2), 0.5)
    bright, dark = torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6)
    # (1 - a) * 0.1 + a = 0.1 + 0.9 a passes 0.5 once a > 0.444: the grid's 0.45
    assert weakest_blend(BrightnessReader(), bright, [1, 1], samples, base) == [0.45, 0.45]
    # a dark pattern never brightens the image: no strength works
    assert weakest_blend(BrightnessReader(), dark, [1, 1], samples, base) == [None, None]
    # the share that must flip counts: half the samples already bright need no blend at all
    mixed = torch.cat([samples[:8], torch.full((8, 1, 6, 6), 0.9)])
    assert weakest_blend(BrightnessReader(), bright, [1], mixed, base, required=0.5) == [0.01]
