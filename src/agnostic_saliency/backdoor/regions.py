"""Where a class's stamp works: the smallest hard region, square box or whole-image blend of its
fitted pattern that still sends the class's far samples to it, and the compaction of a recovered
region into the box a person reads as a trigger.

Every search here is one test, :func:`.stamps.stamp_flips` (at least ``required`` of the far
samples flipped), over increasing candidates: region sizes, box sides, blend strengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from .pool import far_samples
from .stamps import stamp_flips

REGION_SIZES = (1, 2, 4, 6, 9, 12, 16, 20, 25, 30, 36, 49, 64, 81, 100, 144, 196, 256, 400, 576, 784)


@torch.no_grad()
def smallest_region(
    model: nn.Module,
    masks: torch.Tensor,
    patterns: torch.Tensor,
    classes: list[int],
    samples: torch.Tensor,
    base: torch.Tensor,
    required: float = 0.8,
    sizes: Sequence[int] = REGION_SIZES,
    quantile: float = 0.5,
    chunk: int = 1024,
) -> tuple[list[int], list[torch.Tensor]]:
    """Per class, the fewest pixels (taken in order of mask value) that, stamped hard with the
    class's pattern, send at least ``required`` of the other-class ``samples`` to the class.

    A backdoor target needs about the trigger's area; a class that is merely easy to reach
    needs a diffuse, image-wide change and so a large hard region. Binary search over
    ``sizes`` (flipping grows with the region); ``base`` holds the samples' class
    probabilities, and only the far ``quantile`` of samples count for each class. Returns the
    sizes (H*W + 1 when even the whole image fails) and the hard masks (H, W) found. Forward
    passes take ``chunk`` samples at a time.
    """
    height, width = masks.shape[-2:]
    sizes = sorted({s for s in sizes if s <= height * width} | {height * width})
    hard = _TopPixels(masks)
    smallest = _smallest_stamps(model, hard, patterns, classes, samples, base, sizes, required, quantile, chunk)
    found = [height * width + 1 if size is None else size for size in smallest]
    hard_masks = [
        torch.ones(height, width) if size is None else hard(row, size).cpu() for row, size in enumerate(smallest)
    ]
    return found, hard_masks


class _TopPixels:
    """Each row's hard mask of its ``size`` highest mask values: ``_TopPixels(masks)(row, size)``."""

    def __init__(self, masks: torch.Tensor):
        self.shape, self.device = masks.shape[-2:], masks.device
        self.orders = [masks[row].flatten().argsort(descending=True) for row in range(len(masks))]

    def __call__(self, row: int, size: int) -> torch.Tensor:
        height, width = self.shape
        mask = torch.zeros(height * width, device=self.device)
        mask[self.orders[row][:size]] = 1
        return mask.view(height, width)


def _stamp_passes(model, mask_for, pattern, pool, target: int, required: float, chunk: int, row: int, candidate):
    """Whether the candidate's mask ``mask_for(row, candidate)``, stamped with ``pattern``,
    flips ``required`` of ``pool`` to ``target``."""
    return stamp_flips(model, mask_for(row, candidate), pattern, pool, target, required, chunk)


def _smallest_stamps(
    model, mask_for, patterns, classes, samples, base, candidates, required: float, quantile: float, chunk: int
) -> list:
    """Per class (row), the first of the increasing ``candidates`` whose mask ``mask_for(row,
    candidate)``, stamped with the class's pattern, sends at least ``required`` of the class's far
    ``samples`` to it; None where even the last fails. The search behind :func:`smallest_region`,
    :func:`smallest_box` and :func:`weakest_blend`."""
    far_all = far_samples(base, quantile)
    return [
        _smallest_passing(
            candidates,
            partial(_stamp_passes, model, mask_for, patterns[row], samples[far_all[:, c]], c, required, chunk, row),
        )
        for row, c in enumerate(classes)
    ]


def _smallest_passing(candidates, passes):
    """The first of the increasing ``candidates`` that ``passes`` (which must keep passing once
    it does), by binary search; None when even the last one fails."""
    if not passes(candidates[-1]):
        return None
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


@torch.no_grad()
def smallest_box(
    model: nn.Module,
    regions: torch.Tensor,
    patterns: torch.Tensor,
    classes: list[int],
    samples: torch.Tensor,
    base: torch.Tensor,
    required: float = 0.8,
    quantile: float = 0.5,
    chunk: int = 1024,
    placements: int = 3,
    every_side_up_to: int = 0,
) -> list[int]:
    """Per class, the pixels of the smallest square box that, placed on its hard region and
    stamped with the class's pattern, sends at least ``required`` of the far ``samples`` to the
    class (the same test as :func:`smallest_region`). ``H*W + 1`` when even the largest square
    fails. Each size is tried at the ``placements`` densest spots of the region that do not
    overlap (:func:`box_spots`).

    A patch trigger's region is compact, so its box is about the trigger's size. The hard region
    of a class that is merely easy to reach can be as small, but it is a scatter of pixels over
    the whole image (on the 28x28 population, every class of the clean models needed a box of
    121 pixels or more, the patch targets 9 to 64), and no small box does the job.

    Why more than one spot: the fit can leave scattered helper pixels that cluster more densely
    than the trigger's own share of the region. On the population's CNN with a 6 px checkerboard
    (seed 0) the densest spot needed a 324-pixel box, while a 36-pixel box at the third one, over
    part of the trigger, worked; the clean models' smallest boxes did not move below 121.

    Where the spots move with the size, a larger box need not work just because a smaller one
    does, so a binary search can step over the trigger's size. Every size of at most
    ``every_side_up_to`` pixels (the scan passes its largest trigger area) is therefore tried in
    turn, smallest first; only the larger sizes are searched by halves.
    """
    height, width = regions[0].shape
    far_all = far_samples(base, quantile)
    sides = range(1, min(height, width) + 1)
    small = [side for side in sides if side * side <= every_side_up_to]
    large = [side for side in sides if side * side > every_side_up_to]
    found = []
    for row, c in enumerate(classes):
        region, pool = regions[row].to(samples.device), samples[far_all[:, c]]
        passes = partial(_box_passes, model, region, patterns[row], pool, c, placements, required, chunk)

        side = next((side for side in small if passes(side)), None)
        if side is None and large:
            side = _smallest_passing(large, passes)
        found.append(height * width + 1 if side is None else side * side)
    return found


def _box_passes(model, region, pattern, pool, target: int, placements: int, required: float, chunk: int, side: int):
    """Whether a side x side box at one of the region's spots works (:func:`working_box`)."""
    return working_box(model, region, pattern, pool, target, side, placements, required, chunk) is not None


def box_spots(region: torch.Tensor, side: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``count`` side x side squares on ``region`` (H, W), densest
    first, none overlapping an earlier one; after the first, only squares holding some of it."""
    density = torch.nn.functional.avg_pool2d(region.float()[None, None], side, stride=1)[0, 0].clone()
    spots = []
    for _ in range(count):
        flat = int(density.flatten().argmax())
        if spots and density.flatten()[flat] <= 0:
            break
        top, left = divmod(flat, density.shape[1])
        spots.append((top, left))
        density[max(0, top - side + 1) : top + side, max(0, left - side + 1) : left + side] = -1
    return spots


def spot_squares(region: torch.Tensor, side: int, count: int) -> list[torch.Tensor]:
    """The side x side squares (H, W masks) at the region's ``count`` densest spots (:func:`box_spots`)."""
    squares = []
    for top, left in box_spots(region, side, count):
        square = torch.zeros(region.shape, device=region.device)
        square[top : top + side, left : left + side] = 1
        squares.append(square)
    return squares


@torch.no_grad()
def working_box(
    model: nn.Module,
    region: torch.Tensor,
    pattern: torch.Tensor,
    samples: torch.Tensor,
    target: int,
    side: int,
    placements: int = 3,
    required: float = 0.8,
    chunk: int = 1024,
) -> torch.Tensor | None:
    """The side x side square found by :func:`smallest_box` for this region: the first of its
    spots whose stamp sends at least ``required`` of ``samples`` to ``target`` (None if none)."""
    for mask in spot_squares(region.to(samples.device), side, placements):
        if stamp_flips(model, mask, pattern, samples, target, required, chunk):
            return mask
    return None


def fills_its_box(mask: torch.Tensor) -> bool:
    """Whether the mask's pixels (above 0.5) are exactly a filled rectangle."""
    hard = mask > 0.5
    rows, cols = hard.any(1).nonzero()[:, 0], hard.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        return False
    return int(hard.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)


def connected_parts(region: torch.Tensor) -> torch.Tensor:
    """Labels (H, W) of the 8-connected parts of a boolean ``region`` (0 outside it)."""
    height, width = region.shape
    labels = torch.arange(1, height * width + 1, dtype=torch.float32, device=region.device).view(height, width)
    labels = labels * region
    while True:  # spread the largest label through each part
        spread = torch.nn.functional.max_pool2d(labels[None, None], 3, 1, 1)[0, 0] * region
        if torch.equal(spread, labels):
            return labels.long()
        labels = spread


@torch.no_grad()
def compact_region(
    model: nn.Module,
    region: torch.Tensor,
    pattern: torch.Tensor,
    samples: torch.Tensor,
    target: int,
    required: float = 0.8,
    growth: float = 4.0,
    chunk: int = 1024,
) -> torch.Tensor:
    """The recovered trigger's region made readable: the connected part holding most of the hard
    ``region`` (pixels one apart count as connected, so a checkerboard's cells join), filled to
    its bounding box. It replaces the region only when the box is at most ``growth`` times the
    region's size and still sends at least ``required`` of ``samples`` (other-class samples) to
    ``target``: the picture gets clearer, never less faithful.

    Why: the smallest sufficient region keeps only the pixels that matter on these samples (a
    checkerboard's bright cells, say) plus a few scattered helpers; a trigger is a contiguous stamp.
    """
    hard = region > 0.5
    if hard.sum() == 0:
        return region
    joined = torch.nn.functional.max_pool2d(hard[None, None].float(), 3, 1, 1)[0, 0]
    labels = connected_parts(joined)
    main = torch.bincount(labels[hard]).argmax()
    part = (labels == main) & hard
    # Two candidate boxes, tightest first: the rows and columns holding at least two of the part's
    # pixels (a stray pixel on the edge does not stretch the box), then the part's whole extent.
    for least in (2, 1):
        rows = (part.sum(1) >= least).nonzero()[:, 0]
        cols = (part.sum(0) >= least).nonzero()[:, 0]
        if len(rows) == 0 or len(cols) == 0:
            continue
        box = torch.zeros_like(region)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = 1
        if box.sum() > growth * hard.sum():
            continue
        # No samples: no evidence that the box works, so the region stays.
        if len(samples) and stamp_flips(model, box, pattern, samples, target, required, chunk):
            return box
    return region


BLEND_STRENGTHS = tuple(round(0.01 * i, 2) for i in range(1, 101))


@torch.no_grad()
def weakest_blend(
    model: nn.Module,
    patterns: torch.Tensor,
    classes: list[int],
    samples: torch.Tensor,
    base: torch.Tensor,
    required: float = 0.8,
    quantile: float = 0.5,
    strengths: Sequence[float] = BLEND_STRENGTHS,
    chunk: int = 1024,
) -> list[float | None]:
    """Per class, the weakest strength ``a`` at which blending the class's pattern over the whole
    image, ``(1 - a) * x + a * p``, sends at least ``required`` of the far ``samples`` to the class
    (the same test as :func:`smallest_region`); ``None`` when even the pattern alone fails.

    A blended backdoor is a faint whole-image trigger: its pattern works at a strength far below
    what any clean class's pattern needs (on the 28x28 population, the random blends' targets at
    0.09 and 0.10, every class of the clean models at 0.18 or more). A patch trigger is found by
    :func:`smallest_box` instead.
    """
    height, width = patterns.shape[-2:]
    return _smallest_stamps(
        model,
        partial(_uniform_mask, (height, width), samples.device),
        patterns,
        classes,
        samples,
        base,
        list(strengths),
        required,
        quantile,
        chunk,
    )


def _uniform_mask(shape, device, _row: int, strength: float) -> torch.Tensor:
    """A whole-image mask of one ``strength`` (the blend test's mask, whatever the row)."""
    return torch.full(shape, strength, device=device)


def grid_boxes(height: int, width: int, side: int, stride: int) -> torch.Tensor:
    """(R, H, W) masks of every side x side square whose top-left corner is on the stride grid
    (the last row and column of places flush with the bottom and right edges, so that no border
    is out of reach)."""
    tops = sorted(set(range(0, height - side + 1, stride)) | {height - side})
    lefts = sorted(set(range(0, width - side + 1, stride)) | {width - side})
    masks = torch.zeros(len(tops) * len(lefts), height, width)
    for row, (top, left) in enumerate((top, left) for top in tops for left in lefts):
        masks[row, top : top + side, left : left + side] = 1
    return masks
