"""The scan's shortlist: a cheap pass over every class, then the full fit for the few it ranks
most anomalous (as K-Arm does for Neural Cleanse), so that a scan of hundreds of classes costs
far less than a full fit of each.

The cheap pass is the scan's own signature fit at a few steps (both starts), with the same
statistics: the hard region, the box at one placement and the weakest working blend. A class's
cheap anomaly is the largest of their MAD indices over every class (low side, signed), and the
classes are ranked by it. The full fit and everything after it (the looks, the verdict, the
trigger) run for the shortlist and a few reference classes spread over the rest of the ranking.

The verdict's MAD index describes a class against the bulk of the classes, which the full fit
no longer covers. The shortlist alone is the low tail: its median and MAD would be a tail's.
Every class therefore keeps a value: the full fit's where it ran, and elsewhere the cheap value
moved onto the full fit's scale by the median gap (in log) between the two passes on the
reference classes. The reference classes are drawn from the bulk, not the tail, because the gap
is what the bulk's values need: more steps shrink a tail class's (and a target's) mask more.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from ..errors import InputError
from ..metrics.anomaly import mad_anomaly_index

FEWEST = 10  # the smallest default shortlist: with 10 or fewer classes every class gets the full fit


def shortlist_size(requested: int | None, num_classes: int) -> int:
    """How many classes the cheap pass hands to the full fit: ``requested`` (0: every class, no
    cheap pass), by default max(10, ceil(sqrt(classes))), so that the shortlist grows with the
    classes competing for it while its cost stays far below linear. Never more than the classes."""
    if requested is None:
        requested = max(FEWEST, math.isqrt(max(num_classes - 1, 0)) + 1)
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise InputError(f"the shortlist is a number of classes, got {requested!r}")
    if requested < 0:
        raise InputError(f"the shortlist cannot be negative, got {requested} (0 turns it off)")
    return num_classes if requested == 0 else min(requested, num_classes)


def cheap_anomaly(sizes: list[float], box_sizes: list[float], strengths: list[float | None]) -> list[float]:
    """Per class, how anomalous its cheap-pass signature is: the largest signed MAD index (low
    side: positive below the median) of its log region size, log box size and, among the classes
    where a blend works, log blend strength. Signed, so that classes above every median are still
    ordered; a patch target stands out by its region or box, a blend target by its blend."""
    size = -mad_anomaly_index([math.log(v) for v in sizes])
    box = -mad_anomaly_index([math.log(v) for v in box_sizes])
    blend = np.full(len(sizes), -np.inf)
    have = [k for k, strength in enumerate(strengths) if strength is not None]
    if len(have) >= 2:
        blend[have] = -mad_anomaly_index([math.log(strengths[k]) for k in have])
    return [float(v) for v in np.maximum(np.maximum(size, box), blend)]


def pick_classes(anomaly: list[float], size: int, references: int) -> tuple[list[int], list[int]]:
    """The ``size`` most anomalous classes (ties to the lower index), and up to ``references``
    others evenly spread over the rest of the ranking (the middle of each of as many equal
    stretches), both sorted."""
    order = sorted(range(len(anomaly)), key=lambda k: (-anomaly[k], k))
    chosen, rest = order[:size], order[size:]
    count = min(references, len(rest))
    spread = [rest[int((i + 0.5) * len(rest) / count)] for i in range(count)]
    return sorted(chosen), sorted(spread)


def log_gap(full: list[float | None], cheap: list[float | None], reference: list[int]) -> float:
    """The median over the reference classes of log(full value) - log(cheap value), where both
    exist (0 where none does)."""
    gaps = [math.log(full[k]) - math.log(cheap[k]) for k in reference if full[k] is not None and cheap[k] is not None]
    return statistics.median(gaps) if gaps else 0.0


def on_full_scale(values: list[float | None], fitted: set[int], gap: float) -> list[float | None]:
    """``values`` with every class outside ``fitted`` moved by the log ``gap`` (None stays None)."""
    return [v if k in fitted or v is None else v * math.exp(gap) for k, v in enumerate(values)]
