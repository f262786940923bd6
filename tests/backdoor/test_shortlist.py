"""The shortlist's pieces: its size, the cheap anomaly that ranks the classes, the pick, and the
calibration that puts the cheap figures on the full fit's scale."""

import math

import pytest

from agnostic_saliency.backdoor.shortlist import (
    cheap_anomaly,
    log_gap,
    on_full_scale,
    pick_classes,
    shortlist_size,
)
from agnostic_saliency.errors import InputError
from agnostic_saliency.metrics.anomaly import flag_anomalies


def test_the_default_shortlist_keeps_every_class_up_to_ten_and_grows_as_the_square_root():
    assert [shortlist_size(None, k) for k in (2, 10)] == [2, 10]
    assert [shortlist_size(None, k) for k in (11, 100, 101, 1000)] == [10, 10, 11, 32]
    assert shortlist_size(0, 100) == 100  # off: every class gets the full fit
    assert shortlist_size(3, 10) == 3 and shortlist_size(50, 10) == 10


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_a_bad_shortlist_is_refused_in_one_line(bad):
    with pytest.raises(InputError, match="shortlist") as caught:
        shortlist_size(bad, 10)
    assert "\n" not in str(caught.value)


def test_the_cheap_anomaly_sees_a_small_region_a_small_box_or_a_faint_blend():
    sizes = [100.0, 110.0, 90.0, 105.0, 95.0, 100.0, 20.0]
    boxes = [200.0, 210.0, 190.0, 205.0, 30.0, 200.0, 195.0]
    blends = [0.30, 0.28, 0.32, 0.05, 0.30, None, 0.31]
    anomaly = cheap_anomaly(sizes, boxes, blends)
    # class 6 by its region, 4 by its box, 3 by its blend; the others by none
    assert min(anomaly[k] for k in (3, 4, 6)) > 2 > max(anomaly[k] for k in (0, 1, 2, 5))
    # each is the largest of the three signed indices, here the box's for class 4
    expected_box, _ = flag_anomalies([math.log(v) for v in boxes])
    assert anomaly[4] == pytest.approx(expected_box[4])


def test_the_pick_takes_the_most_anomalous_and_spreads_the_references_over_the_rest():
    anomaly = [0.0, 5.0, -1.0, 3.0, 0.5, -2.0, 1.0, 4.0, -0.5, 2.0]
    shortlisted, reference = pick_classes(anomaly, 3, references=3)
    assert shortlisted == [1, 3, 7]
    # the rest, most anomalous first: 9, 6, 4, 0, 8, 2, 5; the middle of three equal stretches
    assert reference == [0, 2, 6]
    assert pick_classes(anomaly, 8, references=5)[1] == [2, 5]  # no more references than classes left
    assert pick_classes([1.0, 1.0, 1.0], 2, references=0) == ([0, 1], [])  # ties go to the lower index


def test_the_calibration_moves_only_the_classes_without_the_full_fit():
    full = [10.0, 20.0, 40.0, 8.0]
    cheap = [20.0, 40.0, 80.0, 30.0]
    assert log_gap(full, cheap, [0, 1]) == pytest.approx(math.log(0.5))
    assert log_gap(full, [20.0, None, 80.0, 30.0], [0, 1, 2]) == pytest.approx(math.log(0.5))
    assert log_gap(full, cheap, []) == 0.0
    moved = on_full_scale([10.0, 40.0, None, 8.0], fitted={0, 3}, gap=math.log(0.5))
    assert moved == [10.0, pytest.approx(20.0), None, 8.0]
