"""Per-class trigger signatures: the input-agnostic map of every class in mask-and-pattern form,
fitted for all classes at once on samples from an unrestricted distribution (no clean data).

For class k the map is a mask ``m_k`` (H, W) in [0, 1] and a pattern ``p_k`` (C, H, W) in the
pixel range; the nudged sample is ``(1 - m_k) * x + m_k * p_k``. The objective is the method's
(nudge every sample toward the concept) plus an L1 price on the mask, whose weight adapts per
class so that the mask shrinks while the samples still flip. A backdoor target is reached by a
far smaller mask than any clean class: that is its signature.

Each class is fitted from the starts the caller gives: a faint uniform mask, or the class's
gradient start (:func:`gradient_start`), which begins where the model is most sensitive and is
what finds compact patch triggers; the scan fits both and keeps the smaller signature.

Only the half of the samples that the model finds least like class k count for class k: samples
near k's boundary carry no information about how hard k is to reach, and on noise most models sit
near one "easy" class (for Fashion-MNIST, "bag") for nearly every sample, which otherwise looks
like a backdoor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from ..method.integrate import MomentIntegrator
from ..metrics.anomaly import flag_anomalies
from .stamps import from_tanh, stamp, stamp_flips, stamped_share, to_tanh

UNIFORM_START = -2.0  # tanh-space mask logit of the default start: a faint 0.02 everywhere


@dataclass
class Signatures:
    """Per-class fitted masks and patterns with their statistics (all in class order)."""

    masks: torch.Tensor  # (K, H, W)
    patterns: torch.Tensor  # (K, C, H, W)
    mask_l1: list[float]  # pixels covered by the best mask (sum of mask values)
    flip_rate: list[float | None]  # share of other-class samples the best mask sends to the class
    baseline_share: list[float]  # share of unperturbed samples the model already assigns to it
    reached: list[bool]  # whether the flip-rate target was reached
    sample_gradients: int


def fit_signatures(
    model: nn.Module,
    samples: torch.Tensor,
    num_classes: int,
    low: float,
    high: float,
    steps: int = 150,
    batch_size: int = 32,
    step_size: float = 0.1,
    init_cost: float = 1e-3,
    cost_up: float = 1.5,
    target_rate: float = 0.95,
    generator: torch.Generator | None = None,
    progress: bool = False,
    classes: list[int] | None = None,
    quantile: float = 0.5,
    probabilities: torch.Tensor | None = None,
    mask_init: float | torch.Tensor = UNIFORM_START,
    pattern_init: torch.Tensor | None = None,
    far_batches: bool = False,
    description: str = "signatures",
    chunk: int = 1024,
    measure_flips: bool = True,
) -> Signatures:
    """Fit a mask and pattern per class, all classes in one batched loop.

    Parameters
    ----------
    model : pixel-space model (normalisation inside), in eval mode with frozen parameters.
    samples : a pool of unperturbed samples (N, C, H, W) from the unrestricted distribution.
    steps, batch_size : iterations and samples per iteration (shared by all classes).
    step_size : Adam step of the tanh-space logits (Neural Cleanse uses 0.1).
    init_cost, cost_up : the L1 price's schedule (:class:`_Schedule`).
    target_rate : flip rate on a batch that counts as success.
    quantile : for class k only the samples the model finds *least* like k count: those whose
        probability of k is at most its ``quantile`` over the pool (default: the far half).
        Samples already near k's boundary say nothing about how hard k is to reach, and a
        fixed share keeps every class's statistic on the same footing.
    probabilities : the model's class probabilities for ``samples``, when the caller already
        has them (computed here otherwise).
    mask_init, pattern_init : the starting tanh-space logits: a number for a uniform mask (the
        default, a faint 0.02 everywhere), or tensors (K, 1, H, W) and (K, C, H, W), one row per
        entry of ``classes`` (see :func:`gradient_start`).
    far_batches : draw each class's batch from its own far samples (:class:`_Batches`); off by
        default here, on in the scan (docs/design.md, far batches).
    description : the progress bar's label.
    chunk : samples per forward pass when the fitted masks are checked.
    measure_flips : measure each fitted mask's flip rate (:func:`flip_rates`); a caller that keeps
        only some of the rows measures those afterwards instead (``flip_rate`` is then None).
    """
    generator = generator or torch.Generator().manual_seed(0)
    classes = list(range(num_classes)) if classes is None else list(classes)
    k, device = len(classes), samples.device
    base = class_probabilities(model, samples) if probabilities is None else probabilities
    target = torch.tensor(classes, device=device)
    far = far_samples(base, quantile)[:, target]  # (N, K): the samples that count for each class
    batches = _Batches(samples, far, far_batches, batch_size, generator)
    logits = _start_logits(mask_init, pattern_init, (k, *samples.shape[1:]), device)
    schedule = _Schedule.start((k, *samples.shape[1:]), device, init_cost, cost_up, target_rate)
    moments = MomentIntegrator(step_size), MomentIntegrator(step_size)
    for _ in tqdm(range(steps), disable=not progress, desc=description, unit="step"):
        logits = _fit_step(model, *batches.draw(), target, logits, moments, schedule, low, high)
    with torch.no_grad():
        never = schedule.finish(*logits, low, high)
        shares = [float((base.argmax(1) == c).float().mean()) for c in classes]
        flips = (
            flip_rates(model, schedule.best_mask, schedule.best_pattern, classes, samples, base, quantile, chunk)
            if measure_flips
            else [None] * k
        )
    return Signatures(
        schedule.best_mask.cpu(),
        schedule.best_pattern.cpu(),
        schedule.best_l1.tolist(),
        flips,
        shares,
        (~never).tolist(),
        steps * k * batch_size,
    )


class _Batches:
    """Each fit step's batch (K, B, C, H, W) and per-sample weights (K, B). With ``far_batches``
    each class draws ``batch_size`` of its own far samples (all weighted alike); otherwise one
    shared batch, of which each class weighs only its far samples. Far batches give the same
    number of informative samples at about half the forward and backward work; the scan's box
    test removes the extra clean-model flags they gave on their own."""

    def __init__(self, samples, far, far_batches: bool, batch_size: int, generator: torch.Generator):
        self.samples, self.far, self.far_batches = samples, far, far_batches
        self.batch_size, self.generator, self.classes = batch_size, generator, far.shape[1]
        if far_batches:  # per class, the indices of its far samples, padded to one table
            far_index = [far[:, row].nonzero()[:, 0] for row in range(self.classes)]
            self.far_count = torch.tensor([len(f) for f in far_index], device=samples.device).clamp_min(1)
            self.far_table = torch.nn.utils.rnn.pad_sequence(far_index, batch_first=True)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, size, device = self.classes, self.batch_size, self.samples.device
        if self.far_batches:
            draw = (torch.rand(k, size, generator=self.generator).to(device) * self.far_count[:, None]).long()
            x = self.samples[self.far_table.gather(1, draw)]  # every sample is far from its class
            return x, torch.full((k, size), 1 / size, device=device)
        index = torch.randint(0, len(self.samples), (size,), generator=self.generator).to(device)
        x, informative = self.samples[index][None], self.far[index].T.float()  # (K, B): which samples count
        return x, informative / informative.sum(1, keepdim=True).clamp_min(1)


def _start_logits(mask_init, pattern_init, shape: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tanh-space logits the fit starts from (``shape``: K, C, H, W): by default a faint
    uniform mask and a mid-grey pattern; tanh keeps both in range."""
    k, channels, height, width = shape
    if isinstance(mask_init, torch.Tensor):
        mask_logit = mask_init.to(device).float().reshape(k, 1, height, width).clone()
    else:
        mask_logit = torch.full((k, 1, height, width), mask_init, device=device)
    if pattern_init is not None:
        pattern_logit = pattern_init.to(device).float().reshape(k, channels, height, width).clone()
    else:
        pattern_logit = torch.zeros(k, channels, height, width, device=device)
    return mask_logit, pattern_logit


@dataclass
class _Schedule:
    """Neural Cleanse's adaptive L1 price per class, per step: it starts at ``init_cost`` once a
    class first reaches the target flip rate, then is multiplied by ``cost_up`` after each
    success and divided by ``cost_up ** 1.5`` after each failure. Also the smallest mask that
    reached the target so far."""

    cost: torch.Tensor
    best_l1: torch.Tensor
    best_mask: torch.Tensor
    best_pattern: torch.Tensor
    init_cost: float
    cost_up: float
    target_rate: float

    @classmethod
    def start(cls, shape: tuple, device, init_cost: float, cost_up: float, target_rate: float) -> _Schedule:
        k, channels, height, width = shape
        return cls(
            torch.zeros(k, device=device),
            torch.full((k,), float("inf"), device=device),
            torch.zeros(k, height, width, device=device),
            torch.zeros(k, channels, height, width, device=device),
            init_cost,
            cost_up,
            target_rate,
        )

    @torch.no_grad()
    def update(self, hit: torch.Tensor, l1: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> None:
        """After a step whose batches flipped ``hit`` (weighted share per class)."""
        success = hit >= self.target_rate
        improved = success & (l1 < self.best_l1)
        self.best_l1 = torch.where(improved, l1, self.best_l1)
        self.best_mask[improved] = mask[improved, 0]
        self.best_pattern[improved] = pattern[improved]
        start = success & (self.cost == 0)
        cost = torch.where(start, torch.full_like(self.cost, self.init_cost), self.cost)
        self.cost = torch.where(success & ~start, cost * self.cost_up, cost / self.cost_up**1.5)

    @torch.no_grad()
    def finish(self, mask_logit, pattern_logit, low: float, high: float) -> torch.Tensor:
        """Classes that never reached the target report their final mask; returns which."""
        mask, pattern = from_tanh(mask_logit), from_tanh(pattern_logit, low, high)
        never = torch.isinf(self.best_l1)
        self.best_mask[never] = mask[never, 0]
        self.best_pattern[never] = pattern[never]
        self.best_l1 = torch.where(never, mask.flatten(1).sum(1), self.best_l1)
        return never


def _fit_step(model, x, weight, target, logits, moments, schedule: _Schedule, low: float, high: float):
    """One step of every class's fit: the stamped batches' weighted cross-entropy plus the L1
    price, one Adam-like step of both logits, the schedule updated. Returns the new logits."""
    mask_logit, pattern_logit = (logit.requires_grad_(True) for logit in logits)
    k, batch_size = weight.shape
    height, width = mask_logit.shape[-2:]
    mask, pattern = from_tanh(mask_logit), from_tanh(pattern_logit, low, high)
    stamped = stamp(x, mask, pattern, batch_axis=1)  # (K, B, C, H, W)
    scores = model(stamped.flatten(0, 1)).reshape(k, batch_size, -1).float()
    ce = torch.nn.functional.cross_entropy(
        scores.flatten(0, 1), target.repeat_interleave(batch_size), reduction="none"
    ).view(k, batch_size)
    l1 = mask.flatten(1).sum(1)
    loss = ((ce * weight).sum(1) + schedule.cost * l1 / (height * width)).sum()
    mask_grad, pattern_grad = torch.autograd.grad(loss, [mask_logit, pattern_logit])
    with torch.no_grad():
        schedule.update(((scores.argmax(-1) == target[:, None]).float() * weight).sum(1), l1, mask, pattern)
        return (
            (mask_logit + moments[0].step(mask_grad)).detach(),
            (pattern_logit + moments[1].step(pattern_grad)).detach(),
        )


@torch.no_grad()
def flip_rates(
    model: nn.Module,
    masks: torch.Tensor,
    patterns: torch.Tensor,
    classes: list[int],
    samples: torch.Tensor,
    probabilities: torch.Tensor,
    quantile: float = 0.5,
    chunk: int = 1024,
) -> list[float]:
    """Per row, the share of the class's far ``samples`` (up to 1,024 of them) that its mask and
    pattern send to the class (1 where it has no far samples)."""
    far = far_samples(probabilities, quantile)
    rates = []
    for row, c in enumerate(classes):
        pool = samples[far[:, c]][:1024]
        rates.append(
            stamped_share(model, masks[row].to(samples.device), patterns[row].to(samples.device), pool, c, chunk)
            if len(pool)
            else 1.0
        )
    return rates


def stamp_size(mask_l1: float, pixels: int) -> float:
    """A class's size as the scan scores it: sqrt(mask L1 x the pixels its hard stamp needs), the
    region's (``signature_size``) or the box's (``box_size``). The L1 is floored so a log exists."""
    return math.sqrt(max(mask_l1, 1e-6) * pixels)


def gradient_start(
    model: nn.Module,
    samples: torch.Tensor,
    classes: list[int],
    probabilities: torch.Tensor,
    quantile: float = 0.5,
    count: int = 256,
    base: float = -3.0,
    gain: float = 1.0,
    cap: float = 4.0,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Starting logits for a mask fit that begins where the model is most sensitive.

    Per class: the mean absolute input gradient of the class's cross-entropy over up to ``count``
    of the samples the model finds least like the class (its input-agnostic sensitivity map). The
    mask logits start at ``base + gain * z`` (z: that map standardised over the pixels, capped at
    ``cap``), the pattern logits at the sign of the mean descent direction. On a trojaned model
    the target's sensitivity peaks on the trigger, so the fit starts near it instead of spreading
    a faint mask over the whole image, which the L1 price then cannot concentrate in the steps
    it has. Also returns the number of per-sample gradients spent. The gradients are taken
    ``chunk`` samples at a time (the caller sizes it to its memory cap).
    """
    far = far_samples(probabilities, quantile)
    masks, patterns, spent = [], [], 0
    for c in classes:
        chosen = samples[far[:, c]][:count]
        absolute, signed = 0.0, 0.0
        for i in range(0, len(chosen), chunk):
            x = chosen[i : i + chunk].detach().requires_grad_(True)
            with torch.enable_grad():
                # Each chunk's mean loss weighted by its share: the gradients of the mean loss over all samples.
                loss = torch.nn.functional.cross_entropy(model(x).float(), torch.full((len(x),), c, device=x.device))
                (gradient,) = torch.autograd.grad(loss * (len(x) / len(chosen)), x)
            absolute = absolute + gradient.abs().sum(0)
            signed = signed + gradient.sum(0)
        spent += len(chosen)
        sensitivity = (absolute / max(len(chosen), 1)).sum(0, keepdim=True)  # (1, H, W)
        z = (sensitivity - sensitivity.mean()) / sensitivity.std().clamp_min(1e-12)
        masks.append(base + gain * z.clamp(max=cap))
        patterns.append(-(signed / max(len(chosen), 1)).sign())
    return torch.stack(masks), torch.stack(patterns), spent


def far_samples(probabilities: torch.Tensor, quantile: float) -> torch.Tensor:
    """(N, K) booleans: whether sample n is among the ``quantile`` of the samples that the model
    finds least like class k (its probability of k at most that quantile over the samples)."""
    probabilities = probabilities.float()
    return probabilities <= torch.quantile(probabilities, quantile, dim=0)


@torch.no_grad()
def class_probabilities(model: nn.Module, samples: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(N, classes) softmax probabilities."""
    return torch.cat([model(samples[i : i + chunk]).float().softmax(1) for i in range(0, len(samples), chunk)])


@torch.no_grad()
def balanced_pool(
    model: nn.Module, candidates: torch.Tensor, size: int, generator: torch.Generator, chunk: int = 1024
) -> torch.Tensor:
    """Up to ``size`` samples from ``candidates`` with the model's predicted classes as even as
    the candidates allow: no single class the model answers for noise can dominate the pool."""
    predicted = torch.cat([model(candidates[i : i + chunk]).argmax(1) for i in range(0, len(candidates), chunk)])
    order = torch.randperm(len(candidates), generator=generator).to(predicted.device)
    groups = [order[predicted[order] == c] for c in predicted.unique()]
    chosen, share = [], max(1, size // max(len(groups), 1))
    # Fill evenly; classes with few samples give all they have and the rest is shared out.
    leftovers = []
    for group in sorted(groups, key=len):
        take = min(len(group), share)
        chosen.append(group[:take])
        leftovers.append(group[take:])
        remaining_groups = len(groups) - len(chosen)
        if remaining_groups:
            share = max(1, (size - sum(len(c) for c in chosen)) // remaining_groups)
    picked = torch.cat(chosen)
    if len(picked) < size:
        picked = torch.cat([picked, torch.cat(leftovers)[: size - len(picked)]])
    return candidates[picked[:size].cpu()]


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


def _uniform_mask(shape, device, _row: int, strength: float) -> torch.Tensor:
    """A whole-image mask of one ``strength`` (the blend test's mask, whatever the row)."""
    return torch.full(shape, strength, device=device)


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


def fit_patterns(
    model: nn.Module,
    masks: torch.Tensor,
    pattern: torch.Tensor,
    samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    steps: int = 30,
    batch_size: int = 16,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """One pattern per mask of ``masks`` (R, H, W), each fitted with the mask held fixed so that
    ``(1 - mask) * x + mask * pattern`` sends ``samples`` to ``target``: ``steps`` Adam steps in
    tanh space (as in the signature fit) from ``pattern`` (C, H, W), on random batches of
    ``batch_size`` samples per mask. Returns the patterns (R, C, H, W) in the pixel range and the
    per-sample gradients spent."""
    generator = generator or torch.Generator().manual_seed(0)
    device = samples.device
    masks = masks.to(device)[:, None]  # (R, 1, H, W)
    logit = to_tanh(pattern.to(device), low, high, margin=1e-3).expand(len(masks), *pattern.shape).clone()
    moments = MomentIntegrator(step_size)
    labels = torch.full((len(masks) * batch_size,), target, device=device)
    for _ in range(steps):
        draw = torch.randint(0, len(samples), (len(masks), batch_size), generator=generator).to(device)
        logit.requires_grad_(True)
        stamped = stamp(samples[draw], masks, from_tanh(logit, low, high), batch_axis=1)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(stamped.flatten(0, 1)).float(), labels)
            (gradient,) = torch.autograd.grad(loss, logit)
        logit = (logit + moments.step(gradient)).detach()
    with torch.no_grad():
        return from_tanh(logit, low, high), steps * len(masks) * batch_size


def polished_pattern(
    model: nn.Module,
    mask: torch.Tensor,
    pattern: torch.Tensor,
    fit_samples: torch.Tensor,
    test_samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    steps: int = 50,
    batch_size: int = 32,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, bool, int]:
    """The recovered trigger's pattern, refitted under its final mask.

    Why: the signature fit shapes pattern and mask together, under a price on the mask, so once
    the mask is hardened to a region or box the pattern inside it is rarely the best one (a
    recovered 3 px box matching the planted white patch exactly, but with grey pixels, flipped
    89% of real images where the planted patch flips 99.8%). The refit (:func:`fit_patterns`,
    ``steps`` steps on ``fit_samples``) is kept only if it sends at least as many of
    ``test_samples`` to ``target`` as the pattern it replaces. Returns (pattern, kept, per-sample
    gradients spent)."""
    if steps < 1 or len(fit_samples) == 0:
        return pattern, False, 0
    mask = mask.to(fit_samples.device)
    pattern = pattern.to(mask.device)
    refit, spent = fit_patterns(
        model, mask[None], pattern, fit_samples, target, low, high, steps, batch_size, step_size, generator
    )
    refit = torch.where(mask > 0, refit[0], pattern)  # outside the mask, exactly as it was (no tanh round trip)
    before = stamped_share(model, mask, pattern, test_samples, target, chunk)
    after = stamped_share(model, mask, refit, test_samples, target, chunk)
    return (refit, True, spent) if after >= before else (pattern, False, spent)


def fitted_box(
    model: nn.Module,
    region: torch.Tensor,
    pattern: torch.Tensor,
    fit_samples: torch.Tensor,
    test_samples: torch.Tensor,
    target: int,
    low: float,
    high: float,
    largest_side: int,
    placements: int = 3,
    steps: int = 30,
    batch_size: int = 16,
    step_size: float = 0.1,
    required: float = 0.8,
    generator: torch.Generator | None = None,
    chunk: int = 1024,
    boxes_per_pass: int | None = None,
) -> tuple[int, torch.Tensor, torch.Tensor, int] | None:
    """The smallest square box, of side at most ``largest_side``, placed at one of the region's
    ``placements`` densest spots (:func:`box_spots`), whose own pattern, fitted inside it on
    ``fit_samples``, sends at least ``required`` of ``test_samples`` to ``target``.

    Why: on a network with global average pooling the signature fit can spread a trigger's
    evidence over scattered pixels, and its pattern under any one box is then not the trigger
    (the ``test`` split: a 5 px white patch on a resnet whose fitted-pattern box needed 196 px
    or more). Fitting the pattern inside the box finds the patch again. Such a box is an adversarial
    patch, stronger than a stamp of the fitted pattern, so the caller bounds it more tightly.

    Each box's pattern starts from the class's ``pattern`` and takes ``steps`` Adam steps (tanh
    space, as in the signature fit) on batches of ``batch_size`` samples. The largest side is
    fitted first, at every spot; only if one of those works are the smaller sides fitted, all at
    once, ``boxes_per_pass`` boxes (times ``batch_size`` samples) per forward and backward pass
    (default: all). Returns (pixels, mask (H, W), pattern (C, H, W), per-sample gradients spent),
    or None.
    """
    if largest_side < 1:
        return None
    generator = generator or torch.Generator().manual_seed(0)
    region = region.to(fit_samples.device)
    fit = partial(
        _fit_boxes, model, region, pattern, fit_samples, test_samples, target, low, high, placements,
        steps, batch_size, step_size, required, generator, chunk, boxes_per_pass,
    )  # fmt: skip
    working, spent = fit([largest_side])
    if working:
        smaller, more = fit(range(1, largest_side))
        working, spent = working + smaller, spent + more
    if not working:
        return None
    side, mask, stamp = min(working, key=lambda found: found[0])
    return side * side, mask, stamp, spent


def _fit_boxes(
    model,
    region,
    pattern,
    fit_samples,
    test_samples,
    target: int,
    low: float,
    high: float,
    placements: int,
    steps: int,
    batch_size: int,
    step_size: float,
    required: float,
    generator,
    chunk: int,
    boxes_per_pass,
    sides,
) -> tuple[list, int]:
    """Each box of the ``sides`` at the region's spots, with its own pattern fitted inside it
    (:func:`fit_patterns`, ``boxes_per_pass`` boxes at a time): those whose stamp sends
    ``required`` of ``test_samples`` to ``target``, as (side, mask, pattern), and the per-sample
    gradients spent. The search behind :func:`fitted_box`."""
    boxes = [(side, mask) for side in sides for mask in spot_squares(region, side, placements)]
    if not boxes or len(fit_samples) == 0:
        return [], 0
    group = boxes_per_pass or len(boxes)
    masks = torch.stack([mask for _, mask in boxes])
    fitted = [
        fit_patterns(
            model,
            masks[g : g + group],
            pattern,
            fit_samples,
            target,
            low,
            high,
            steps,
            batch_size,
            step_size,
            generator,
        )
        for g in range(0, len(boxes), group)
    ]
    stamps = torch.cat([stamp for stamp, _ in fitted])
    with torch.no_grad():
        working = [
            (side, mask, stamps[row])
            for row, (side, mask) in enumerate(boxes)
            if stamp_flips(model, mask, stamps[row], test_samples, target, required, chunk)
        ]
    return working, sum(used for _, used in fitted)  # fmt: skip


def fills_its_box(mask: torch.Tensor) -> bool:
    """Whether the mask's pixels (above 0.5) are exactly a filled rectangle."""
    hard = mask > 0.5
    rows, cols = hard.any(1).nonzero()[:, 0], hard.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        return False
    return int(hard.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)


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
