"""The box searches ("looks"): one ordered list of strategies, each tried on the anomalous classes
whose box is still too wide for the compact-box test after the ones before it.

The first look, every class's, is the smallest box at its hard region's densest spot
(:mod:`.evidence`). Then, in this order:

2. every size: every box size up to the bound, each at the region's few densest spots; the
   region can be the trigger plus a denser cluster of scattered helper pixels (see
   :func:`.regions.smallest_box`).
3. small box: away from the hard region altogether, one small box (a seventh of the image's side)
   at every place of a grid, each with its own pattern fitted inside it; the class's reach is the
   largest share of its far exemplars one of them sends to it. On a batch-norm, global-pooling
   net the hard region can be a lattice of single pixels away from the trigger, and the true
   trigger itself flips only half of the far exemplars, so no box on the region passes the 0.8
   test; but a small box over the trigger reaches a quarter to nine tenths of them. A class
   whose reach is at least ``small_box_required`` takes that box as its box. Off by default
   (``small_box_look``): the easy class ("bag") of some clean MLPs and CNNs reaches as far
   (docs/results.md, "The small-box look, and a sixth fresh split").

A look has its own switch in :class:`.config.BoxConfig`; one that draws at random takes its own
stream, so that turning it off leaves the others' draws as they were. Two looks were deleted
after switching each off changed no detection figure on the population and both test splits at
three seeds (docs/results.md, "Each part switched off"): a refit of the pattern on raw samples,
and a pattern fitted inside each box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import ScanConfig
from .fitting import Pool, Probe, smallest_boxes
from .patterns import fit_patterns
from .regions import grid_boxes
from .stamps import stamped_share
from .verdict import box_sizes, size_index


@dataclass
class BoxState:
    """Every class's box as the looks leave it, and the stamps behind it (class order)."""

    boxes: list[int]
    hard: list[torch.Tensor]
    masks: torch.Tensor
    patterns: torch.Tensor
    mask_l1: list[float]
    sizes: list[float]
    full_fit: list[bool]
    shift: dict
    largest_box: int
    spotted: set = field(default_factory=set)
    reach: dict = field(default_factory=dict)  # class -> the small-box look's reach, where it ran
    small_boxes: dict = field(default_factory=dict)  # class -> (mask, pattern) of a small box that reached
    spent: int = 0

    def too_wide(self, anomalous: list[bool]) -> list[int]:
        """The fully fitted classes whose box is too wide and which ``anomalous`` marks."""
        return [
            k for k, fitted in enumerate(self.full_fit) if fitted and self.boxes[k] > self.largest_box and anomalous[k]
        ]


def size_anomalous(probe: Probe, state: BoxState) -> list[int]:
    """Too wide, with an anomalous signature."""
    threshold = probe.config.threshold
    index = size_index(state.sizes, state.full_fit, state.shift["size"], threshold)
    return state.too_wide([value > threshold for value in index])


def every_size_look(probe: Probe, pool: Pool, state: BoxState, classes: list[int]) -> None:
    """The second look: a smaller box at another spot or size replaces the first."""
    state.spotted.update(classes)
    looked = smallest_boxes(
        probe, pool.tests, [state.hard[k] for k in classes], state.patterns[classes], classes, state.largest_box
    )
    for k, box in zip(classes, looked):
        state.boxes[k] = min(state.boxes[k], box)


def smallest_signatures(probe: Probe, state: BoxState) -> list[int]:
    """Too wide, and among the ``small_box_candidates`` classes with the smallest signatures (the
    largest size index, anomalous or not: a pooling net's missed targets had an index of only 1.1
    to 1.9, but the first or second of their model's classes); none while a compact class already
    stands out (its box index above the threshold), as a backdoor's target does: the look is for
    targets the box test missed, and most of its cost would go on the other classes."""
    side = small_box_side(probe.image_shape, probe.config.box.small_box_share)
    if side * side > state.largest_box:  # the small box could not make any class compact
        return []
    threshold = probe.config.threshold
    box = size_index(box_sizes(state.mask_l1, state.boxes), state.full_fit, state.shift["box"], threshold)
    compact = [fitted and pixels <= state.largest_box for fitted, pixels in zip(state.full_fit, state.boxes)]
    if any(fits and value > threshold for fits, value in zip(compact, box)):
        return []
    index = size_index(state.sizes, state.full_fit, state.shift["size"], threshold)
    ranked = sorted(range(len(index)), key=lambda k: -index[k])[: probe.config.box.small_box_candidates]
    return [k for k in state.too_wide([True] * len(index)) if k in ranked]


def small_box_side(image_shape: tuple[int, int], share: float) -> int:
    """The small box's side: ``share`` of the image's shorter side (4 px on 28x28), at least 1."""
    return max(1, round(share * min(image_shape)))


def small_box_look(probe: Probe, pool: Pool, state: BoxState, classes: list[int]) -> None:
    """The third look: each class's reach (:func:`small_box_reach`, confirmed by
    :func:`grown_reach`); where it is at least ``small_box_required``, the box that reached the
    class becomes its box, and its mask and pattern are kept for the recovery."""
    settings = probe.config.box
    side = small_box_side(probe.image_shape, settings.small_box_share)
    boxes = grid_boxes(*probe.image_shape, side, max(1, side // 2)).to(probe.device)
    for k in classes:
        generator = torch.Generator().manual_seed(1009 * probe.seed + 31 + k)  # its own stream
        share, row, patterns, spent = small_box_reach(probe, pool, k, boxes, generator)
        grown, grown_mask, grown_pattern, more = grown_reach(probe, pool, k, boxes[row], patterns[row], generator)
        # The smallest box that reaches: the small one where it does, else the wider one.
        small = share >= settings.small_box_required
        mask, pattern = (boxes[row], patterns[row]) if small else (grown_mask, grown_pattern)
        state.reach[k], state.spent = max(share, grown), state.spent + spent + more
        if state.reach[k] >= settings.small_box_required:
            state.boxes[k] = min(state.boxes[k], int(mask.sum()))
            state.small_boxes[k] = (mask.cpu(), pattern.cpu())


def _reach_samples(probe: Probe, pool: Pool, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ``k``'s far fit exemplars, and its far held-out exemplars not already on ``k``."""
    spp = probe.samples_per_pass
    tests = pool.held_out[pool.held_far[:, k]]
    with torch.no_grad():
        tests = tests[torch.cat([probe.model(tests[i : i + spp]).argmax(1) != k for i in range(0, len(tests), spp)])]
    return pool.fit[pool.fit_far[:, k]], tests


def small_box_reach(probe: Probe, pool: Pool, k: int, boxes: torch.Tensor, generator: torch.Generator):
    """The largest share of class ``k``'s far held-out exemplars (those not already on ``k``) that
    one of ``boxes`` sends to ``k`` with a pattern fitted inside it, from mid grey on the far fit
    exemplars; its row, every box's pattern, and the per-sample gradients spent.

    Coarse to fine: every box gets ``small_box_coarse_steps``, and the ``small_box_finalists``
    that flip the most of ``small_box_rank_tests`` held-out exemplars go on to ``small_box_steps``
    in all, measured on every held-out exemplar (about a quarter of the cost of fitting and
    testing every box in full)."""
    settings = probe.config.box
    fit, tests = _reach_samples(probe, pool, k)
    start = torch.full(pool.fit.shape[1:], (probe.low + probe.high) / 2, device=probe.device)
    patterns, spent = _fit_boxes(probe, boxes, start, fit, k, settings.small_box_coarse_steps, generator)
    ranking = _shares(probe, boxes, patterns, tests[: settings.small_box_rank_tests], k)
    finalists = sorted(range(len(boxes)), key=lambda row: -ranking[row])[: settings.small_box_finalists]
    more = settings.small_box_steps - settings.small_box_coarse_steps
    if more > 0:
        patterns[finalists], extra = _fit_boxes(probe, boxes[finalists], patterns[finalists], fit, k, more, generator)
        spent += extra
    shares = dict(zip(finalists, _shares(probe, boxes[finalists], patterns[finalists], tests, k)))
    row = max(finalists, key=shares.__getitem__)
    return shares[row], row, patterns, spent


def grown_reach(probe: Probe, pool: Pool, k: int, box: torch.Tensor, pattern: torch.Tensor, generator):
    """The reach of the boxes ``small_box_grow`` pixels wider than ``box`` that hold it, at every
    such place, each pattern fitted for ``small_box_steps`` from ``pattern``: (the largest share,
    that box, its pattern, the per-sample gradients spent).

    Why: a backdoor's trigger, once a box covers it, flips nearly every far exemplar, so a small
    box over part of it reaches far more a pixel wider (fresh6's allconv plus sign: 0.49 at 4 px,
    0.98 at 5), while a class that is merely easy to reach gains only with the area (the "bag"
    class of a clean CNN and MLP: 0.18 and 0.15 at 4 px, 0.26 and 0.32 at 5;
    ``benchmarks/small_box_reach.py --grow``)."""
    settings = probe.config.box
    grow = settings.small_box_grow
    rows, cols = box.nonzero()[:, 0], box.nonzero()[:, 1]
    top, left, side = int(rows.min()), int(cols.min()), int(rows.max() - rows.min()) + 1
    height, width = box.shape
    size = min(side + grow, height, width)
    places = [
        (r, c)
        for r in range(max(0, top + side - size), min(top, height - size) + 1)
        for c in range(max(0, left + side - size), min(left, width - size) + 1)
    ]
    if grow < 1 or not places:
        return 0.0, box, pattern, 0
    masks = torch.zeros(len(places), height, width, device=box.device)
    for row, (r, c) in enumerate(places):
        masks[row, r : r + size, c : c + size] = 1
    fit, tests = _reach_samples(probe, pool, k)
    patterns, spent = _fit_boxes(probe, masks, pattern.expand(len(masks), *pattern.shape), fit, k,
                                 settings.small_box_steps, generator)  # fmt: skip
    shares = _shares(probe, masks, patterns, tests, k)
    best = max(range(len(masks)), key=shares.__getitem__)
    return shares[best], masks[best], patterns[best], spent


def _fit_boxes(probe: Probe, boxes, start, fit, k: int, steps: int, generator):
    """:func:`.patterns.fit_patterns` for every box, in groups that fit the memory cap."""
    batch = max(1, probe.config.fit.batch_size // 2)
    per_pass = max(1, probe.classes_per_pass * probe.config.fit.batch_size // batch)
    patterns, spent = [], 0
    for first in range(0, len(boxes), per_pass):
        group = start if start.dim() == 3 else start[first : first + per_pass]
        fitted, used = fit_patterns(
            probe.model, boxes[first : first + per_pass], group, fit, k, probe.low, probe.high,
            steps=steps, batch_size=batch, step_size=probe.config.fit.step_size, generator=generator,
        )  # fmt: skip
        patterns.append(fitted)
        spent += used
    return torch.cat(patterns), spent


def _shares(probe: Probe, boxes, patterns, tests, k: int) -> list[float]:
    """Each box's share of ``tests`` sent to ``k`` under its pattern."""
    spp = probe.samples_per_pass
    return [stamped_share(probe.model, box, pattern, tests, k, spp) for box, pattern in zip(boxes, patterns)]


@dataclass(frozen=True)
class Look:
    """One box search: whether a config runs it, who it is for, and the search itself."""

    name: str
    runs: Callable[[ScanConfig], bool]
    candidates: Callable[[Probe, BoxState], list[int]]
    search: Callable[[Probe, Pool, BoxState, list[int]], None]


LOOKS = (
    Look("every size", lambda c: c.box.every_size_look and c.box.box_placements > 1, size_anomalous, every_size_look),
    Look("small box", lambda c: c.box.small_box_look, smallest_signatures, small_box_look),
)


def measure_boxes(probe: Probe, pool: Pool, state: BoxState) -> int:
    """Each look of :data:`LOOKS` in turn, on the classes it is for; returns the per-sample
    gradients spent."""
    for look in LOOKS:
        if look.runs(probe.config):
            classes = look.candidates(probe, state)
            if classes:
                look.search(probe, pool, state, classes)
    return state.spent
