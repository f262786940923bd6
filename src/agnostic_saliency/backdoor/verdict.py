"""The scan's second stage: the verdict, a pure function of the evidence table.

Every class gets one size that fits its trigger's shape, the MAD anomaly index of its log over
the classes (low side, as Neural Cleanse), and the flag rule: a class is flagged when its index
is above the threshold and its trigger has one of the two shapes a backdoor takes, a compact
patch (its box fits ``max_trigger_area`` of the image) or a faint blend. No model, no samples,
no randomness: the same table always gives the same verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..metrics.anomaly import flag_anomalies
from .config import ScanConfig
from .shortlist import on_full_scale

# What a scan's anomaly index is computed from, recorded in every result.
STATISTIC = (
    "signature_size = sqrt(mask_l1 * region_pixels) and box_size = sqrt(mask_l1 * box_pixels), "
    "each with the MAD anomaly index of its log over the classes, low side (size_index, "
    "box_index); anomaly_index is box_index for a compact class (box_pixels at most "
    "max_trigger_area of the image), the larger of size_index and blend_index (the same index "
    "of the log blend_strength) for a faint blend, and size_index otherwise; flagged when "
    "anomaly_index is above the threshold and the class is compact or a faint blend "
    "(blend_strength, flipping blend_required of the exemplars, at most max_blend_strength, "
    "and at most blend_gap times every other class's); with a shortlist, a class without the full "
    "fit counts with its cheap pass's sizes and blend strength, each times exp(shortlist_shift), the "
    "median log ratio of full to cheap on the reference classes, and is never flagged"
)


def stamp_size(mask_l1: float, pixels: int) -> float:
    """A class's size as the scan scores it: sqrt(mask L1 x the pixels its hard stamp needs), the
    region's (``signature_size``) or the box's (``box_size``). The L1 is floored so a log exists."""
    return math.sqrt(max(mask_l1, 1e-6) * pixels)


def faint_blends(strengths: list[float | None], compact: list[bool], max_strength: float, gap: float) -> list[bool]:
    """Per class, whether its trigger is a faint blend: not compact, its weakest working blend
    (:func:`weakest_blend`) at most ``max_strength``, and at most ``gap`` times every other
    class's (classes where no strength works do not count). An easy clean class can be
    somewhat fainter than the rest; a blended backdoor stands far apart."""

    return [
        not compact[k] and strengths[k] is not None and strengths[k] <= max_strength and _apart(strengths, k, gap)
        for k in range(len(strengths))
    ]


def _apart(strengths: list[float | None], k: int, gap: float) -> bool:
    """Whether class ``k``'s blend strength is at most ``gap`` times every other class's."""
    return all(other is None or strengths[k] <= gap * other for j, other in enumerate(strengths) if j != k)


def blend_anomaly_index(strengths: list[float | None]) -> list[float]:
    """Per class, the MAD anomaly index of its weakest working blend's log strength over the
    classes (low side; 0 for classes where no strength works, which do not count): how far a
    faint blend stands below the other classes' blends, as the box index does for patches."""
    have = [k for k, strength in enumerate(strengths) if strength is not None]
    index = [0.0] * len(strengths)
    if len(have) < 2:
        return index
    values, _ = flag_anomalies([math.log(strengths[k]) for k in have], side="low")
    for k, value in zip(have, values):
        index[k] = float(value)
    return index


@dataclass
class EvidenceTable:
    """What the first stage measured, one entry per class in every column (class order).

    The verdict reads the first six fields; the rest are reported beside it. ``shift`` holds the
    shortlist's log gaps (``size``, ``box``, ``blend``) that move a class without the full fit
    onto the full fit's scale (all 0 without a shortlist)."""

    signature_size: list[float]  # sqrt(mask L1 x hard region pixels)
    mask_l1: list[float]
    box_pixels: list[int]  # the smallest working square box (H*W + 1 when none works; the small box's when it reached)
    blend_strength: list[float | None]  # the weakest working whole-image blend (None: none works)
    full_fit: list[bool]  # only a class with the full fit is judged
    image_shape: tuple[int, int]  # (H, W)
    shift: dict = field(default_factory=lambda: {"size": 0.0, "box": 0.0, "blend": 0.0})
    region_pixels: list[int] | None = None
    flip_rate: list[float | None] | None = None
    baseline_share: list[float] | None = None
    reached: list[bool] | None = None
    start: list[str] | None = None
    shortlisted: list[bool] | None = None
    cheap_anomaly: list[float] | None = None
    small_box_reach: list[float | None] | None = None  # the small-box look's reach (None where it did not run)


@dataclass(frozen=True)
class Verdict:
    """Per class (tuples in class order) the indices and shapes, then the flagged classes and the
    model's score: the largest index among the classes whose trigger has a backdoor's shape."""

    size_index: tuple[float, ...]
    box_size: tuple[float, ...]
    box_index: tuple[float, ...]
    compact: tuple[bool, ...]
    blend_index: tuple[float, ...]
    faint: tuple[bool, ...]
    anomaly_index: tuple[float, ...]
    flagged: tuple[int, ...]
    score: float


def largest_box(max_trigger_area: float, image_shape: tuple[int, int]) -> int:
    """The most pixels a compact trigger's box may cover."""
    height, width = image_shape
    return int(max_trigger_area * height * width)


def size_index(sizes: list[float], full_fit: list[bool], shift: float, threshold: float) -> list[float]:
    """The MAD anomaly index (low side) of every class's log size, the classes without the full
    fit moved by the shortlist's log ``shift``."""
    full = {k for k, fitted in enumerate(full_fit) if fitted}
    judged = on_full_scale(sizes, full, shift)
    return list(flag_anomalies([math.log(v) for v in judged], threshold, side="low")[0])


def box_sizes(mask_l1: list[float], boxes: list[int]) -> list[float]:
    """Every class's box signature, sqrt(mask L1 x box pixels)."""
    return [stamp_size(a, b) for a, b in zip(mask_l1, boxes)]


def verdict(table: EvidenceTable, config: ScanConfig) -> Verdict:
    """Judge every class of ``table`` under ``config`` (``threshold``, the box bound and the
    blend bounds). A patch trigger is measured by the box it needs (its hard region alone can
    undercount a stamp whose pixels the fit spread around it), a faint blend by how far its blend
    stands below the others' or by its signature, whichever is more anomalous, any other class by
    its hard region; only a compact class or a faint blend can be flagged."""
    threshold, classes, full = config.threshold, range(len(table.full_fit)), table.full_fit
    signature = size_index(table.signature_size, full, table.shift["size"], threshold)
    boxes = box_sizes(table.mask_l1, table.box_pixels)
    box = size_index(boxes, full, table.shift["box"], threshold)
    bound = largest_box(config.box.max_trigger_area, table.image_shape)
    compact = [full[k] and pixels <= bound for k, pixels in enumerate(table.box_pixels)]
    # A blended backdoor's trigger spans the image, so the box test cannot see it; it is faint
    # instead: far fainter than the blend of any other class's pattern that works.
    judged = on_full_scale(table.blend_strength, {k for k in classes if full[k]}, table.shift["blend"])
    blend = config.blend
    faint = [
        full[k] and f for k, f in enumerate(faint_blends(judged, compact, blend.max_blend_strength, blend.blend_gap))
    ]
    blend_index = blend_anomaly_index(judged)
    index = [
        float(box[k] if compact[k] else max(signature[k], blend_index[k]) if faint[k] else signature[k])
        for k in classes
    ]
    shaped = [k for k in classes if compact[k] or faint[k]]
    return Verdict(
        size_index=tuple(float(v) for v in signature),
        box_size=tuple(boxes),
        box_index=tuple(float(v) for v in box),
        compact=tuple(bool(v) for v in compact),
        blend_index=tuple(blend_index),
        faint=tuple(bool(v) for v in faint),
        anomaly_index=tuple(index),
        flagged=tuple(k for k in shaped if index[k] > threshold),
        score=max([0.0] + [index[k] for k in shaped]),
    )
