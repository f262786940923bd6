"""The verdict: a pure function of the evidence table, checked on hand-made tables."""

import copy
import dataclasses
import math

import numpy as np
import pytest

from agnostic_saliency.backdoor.config import ScanConfig
from agnostic_saliency.backdoor.verdict import EvidenceTable, blend_anomaly_index, faint_blends, largest_box, verdict
from agnostic_saliency.metrics.anomaly import flag_anomalies

WIDE = [400 + 7 * k for k in range(10)]  # boxes no trigger needs on 28x28 (the default bound is 65 px)


def table(sizes=None, l1=None, boxes=None, blends=None, full=None, shift=None) -> EvidenceTable:
    """Ten ordinary classes: similar signatures, wide boxes, blends near 0.3; overrides by keyword."""
    sizes = sizes or [100.0, 110.0, 90.0, 105.0, 95.0, 100.0, 108.0, 92.0, 102.0, 98.0]
    return EvidenceTable(
        signature_size=sizes,
        mask_l1=l1 or [50.0 + k for k in range(10)],
        box_pixels=boxes or WIDE,
        blend_strength=blends or [0.30, 0.28, 0.32, 0.31, 0.30, 0.29, 0.33, 0.30, 0.27, 0.31],
        full_fit=full or [True] * 10,
        image_shape=(28, 28),
        **({} if shift is None else {"shift": shift}),
    )


def test_the_default_bound_is_65_pixels_on_28x28():
    assert largest_box(ScanConfig().box.max_trigger_area, (28, 28)) == 65


def test_a_compact_anomalous_class_is_flagged_and_judged_by_its_box():
    evidence = table(sizes=[5.0] + [100.0 + k for k in range(9)], l1=[2.0] + [50.0] * 9, boxes=[16] + WIDE[1:])
    judged = verdict(evidence, ScanConfig())
    assert judged.compact == (True,) + (False,) * 9
    assert judged.flagged == (0,) and judged.score == judged.anomaly_index[0] == judged.box_index[0] > 2
    assert judged.box_size[0] == pytest.approx(math.sqrt(2.0 * 16))
    # every other class is judged by its hard region
    assert judged.anomaly_index[1:] == judged.size_index[1:]
    # the box index is the MAD index (low side) of the log box sizes
    logs = [math.log(math.sqrt(a * b)) for a, b in zip(evidence.mask_l1, evidence.box_pixels)]
    assert list(judged.box_index) == pytest.approx(list(flag_anomalies(logs)[0]))


def test_a_small_but_scattered_signature_is_not_flagged():
    # merely easy to reach: a small region, but no small box works
    judged = verdict(table(sizes=[5.0] + [100.0 + k for k in range(9)]), ScanConfig())
    assert judged.size_index[0] > 2 and judged.anomaly_index[0] == judged.size_index[0]
    assert not any(judged.compact) and not any(judged.faint)
    assert judged.flagged == () and judged.score == 0.0


def test_a_faint_blend_is_flagged_by_its_blend_or_its_signature():
    blends = [0.30, 0.28, 0.32, 0.05, 0.30, 0.29, 0.33, 0.30, 0.27, 0.31]
    judged = verdict(table(blends=blends), ScanConfig())
    assert judged.faint == tuple(k == 3 for k in range(10))
    assert judged.blend_index[3] > 2 and judged.flagged == (3,)
    assert judged.anomaly_index[3] == max(judged.size_index[3], judged.blend_index[3]) == judged.score
    # not apart enough from the next class (0.05 > 0.5 x 0.08): not a faint blend
    close = verdict(table(blends=blends[:4] + [0.08] + blends[5:]), ScanConfig())
    assert not close.faint[3] and 3 not in close.flagged
    # above the largest blend strength, or with blend flagging off: not faint either
    assert not any(verdict(table(blends=blends), ScanConfig.from_settings(max_blend_strength=0.0)).faint)


def test_the_threshold_moves_the_flags_never_the_indices():
    evidence = table(sizes=[5.0] + [100.0 + k for k in range(9)], l1=[2.0] + [50.0] * 9, boxes=[16] + WIDE[1:])
    strict = verdict(evidence, ScanConfig.from_settings(threshold=1000.0))
    default = verdict(evidence, ScanConfig())
    assert strict.flagged == () and default.flagged == (0,)
    assert strict.anomaly_index == default.anomaly_index and strict.score == default.score


def test_the_box_bound_decides_which_classes_are_compact():
    evidence = table(boxes=[16, 64, 66, 100] + WIDE[4:])
    assert verdict(evidence, ScanConfig()).compact[:4] == (True, True, False, False)
    assert all(verdict(evidence, ScanConfig.from_settings(max_trigger_area=1.0)).compact)


def test_a_class_without_the_full_fit_is_never_judged_and_counts_on_the_full_scale():
    full = [k != 0 for k in range(10)]
    evidence = table(sizes=[5.0] + [100.0 + k for k in range(9)], boxes=[9] + WIDE[1:], full=full)
    judged = verdict(evidence, ScanConfig())
    assert not judged.compact[0] and not judged.faint[0] and judged.flagged == ()
    # its size is moved by the shortlist's log gap before the index is taken
    moved = dataclasses.replace(evidence, shift={"size": math.log(20), "box": 0.0, "blend": 0.0})
    shifted = verdict(moved, ScanConfig())
    assert shifted.size_index[0] < judged.size_index[0]
    logs = [math.log(v) + (math.log(20) if k == 0 else 0.0) for k, v in enumerate(evidence.signature_size)]
    assert list(shifted.size_index) == pytest.approx(list(flag_anomalies(logs)[0]))


def test_the_verdict_is_pure():
    evidence = table(sizes=[5.0] + [100.0 + k for k in range(9)], l1=[2.0] + [50.0] * 9, boxes=[16] + WIDE[1:])
    before = copy.deepcopy(evidence)
    first, second = verdict(evidence, ScanConfig()), verdict(evidence, ScanConfig())
    assert first == second and evidence == before


def test_blend_anomaly_index_is_the_mad_index_of_log_strengths_ignoring_classes_without_one():
    strengths = [0.3, 0.32, 0.28, 0.3, 0.06, None, 0.35, 0.29]
    index = blend_anomaly_index(strengths)
    logs = np.log([s for s in strengths if s is not None])
    mad = 1.4826 * np.median(np.abs(logs - np.median(logs)))
    assert index[4] == pytest.approx((np.median(logs) - np.log(0.06)) / mad) and index[4] > 10
    assert index[5] == 0.0  # no working blend: not a faint one
    assert index[6] == 0.0  # a stronger blend than the median is on the harmless side
    # the same faint strength among widely spread blends stands out far less
    spread = blend_anomaly_index([0.06, 0.1, 0.2, 0.4, 0.8])
    assert 0 < spread[0] < 2
    assert blend_anomaly_index([0.1, None]) == [0.0, 0.0]  # one strength: nothing to compare


def test_a_faint_blend_is_faint_and_far_apart_from_every_other_class():
    compact = [False, False, False, True]
    # class 0 is faint and a third of the next class's strength: a blend
    assert faint_blends([0.06, 0.19, 0.3, None], compact, 0.14, 0.5) == [True, False, False, False]
    # an easy clean class, fainter than the rest but not far apart (0.12 against 0.19)
    assert faint_blends([0.12, 0.19, 0.3, None], compact, 0.14, 0.5) == [False, False, False, False]
    # a compact class is the box test's business, however faint its blend
    assert faint_blends([0.3, 0.19, 0.3, 0.05], compact, 0.14, 0.5) == [False, False, False, False]
    # too strong to be faint, however far apart
    assert faint_blends([0.2, 0.9, None, None], compact, 0.14, 0.5) == [False, False, False, False]
