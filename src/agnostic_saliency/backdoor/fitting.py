"""The scan's measuring tools: the model under scan (:class:`Probe`), the drawn pool
(:class:`Pool`), the two-start signature fit of any set of classes (:func:`fit_classes`), and the
first box and blend tests every class gets. The evidence stage (:mod:`.evidence`) and the looks
(:mod:`.looks`) both build on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..method.distributions import Distribution
from .config import ScanConfig
from .exemplars import class_exemplars, exemplar_quality
from .pool import balanced_pool, class_probabilities, far_samples
from .regions import smallest_box, smallest_region, weakest_blend
from .signatures import fit_signatures, flip_rates, gradient_start
from .verdict import stamp_size

FIT_STATISTICS = ("mask_l1", "flip_rate", "baseline_share", "reached")


@dataclass
class Probe:
    """The model under scan, ready to run (normalisation inside), and how to run it."""

    model: nn.Module
    source: Distribution
    device: torch.device
    low: float
    high: float
    num_classes: int
    image_shape: tuple[int, int]
    classes_per_pass: int  # fit rows whose forward+backward fits the memory cap
    samples_per_pass: int  # samples per pass outside the fit, under the same cap
    seed: int
    generator: torch.Generator  # the draw's own random stream
    config: ScanConfig


@dataclass
class Pool:
    """The drawn samples: the fit's, and the held-out ones every stamp test uses, each with the
    model's class probabilities and which samples count for each class (its far ones)."""

    fit: torch.Tensor
    held_out: torch.Tensor
    fit_probabilities: torch.Tensor
    held_probabilities: torch.Tensor
    fit_far: torch.Tensor
    held_far: torch.Tensor
    exemplars: tuple[float, float] | None  # share on class and mean confidence, or None for raw samples

    @property
    def tests(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.held_out, self.held_probabilities


@dataclass
class Fit:
    """Fitted signatures, one row per fitted class: masks, patterns, hard regions and statistics."""

    masks: torch.Tensor
    patterns: torch.Tensor
    hard: list[torch.Tensor]
    stats: dict  # mask_l1, flip_rate, baseline_share, reached, region_pixels, size, start
    sample_gradients: int
    chunks: int


def raw_pool(probe: Probe, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``size`` raw samples of the distribution, balanced over the model's answers."""
    generator = generator or probe.generator
    candidates = probe.source.sample(4 * size, generator, probe.device)
    return balanced_pool(probe.model, candidates, size, generator, chunk=probe.samples_per_pass)


def draw_pool(probe: Probe) -> tuple[Pool, int]:
    """The pool (class exemplars, or raw samples with ``exemplar_steps`` 0), split into the fit's
    ``pool_size`` and half as many held out; also the per-sample gradients spent."""
    settings, spp = probe.config.pool, probe.samples_per_pass
    total, count, quality = settings.pool_size + settings.pool_size // 2, 0, None
    if settings.exemplar_steps > 0:
        samples, labels, count = class_exemplars(
            probe.model,
            probe.source,
            total,
            probe.num_classes,
            probe.low,
            probe.high,
            probe.generator,
            probe.device,
            steps=settings.exemplar_steps,
            step_size=settings.exemplar_step_size,
            confidence=settings.exemplar_confidence,
            progress=probe.config.run.progress,
            chunk=min(512, spp),
        )
        quality = exemplar_quality(probe.model, samples, labels, spp)
    else:
        samples = raw_pool(probe, total)
    fit, held_out = samples[: settings.pool_size], samples[settings.pool_size :]
    quantile = probe.config.fit.quantile
    held_probabilities = class_probabilities(probe.model, held_out, spp)
    held_far = far_samples(held_probabilities, quantile)
    fit_probabilities = class_probabilities(probe.model, fit, spp)
    fit_far = far_samples(fit_probabilities, quantile)
    return Pool(fit, held_out, fit_probabilities, held_probabilities, fit_far, held_far, quality), count


def fit_classes(
    probe: Probe,
    pool: Pool,
    samples: torch.Tensor,
    classes: list[int],
    progress: bool = False,
    probabilities: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    description: str = "signatures",
    tests: tuple[torch.Tensor, torch.Tensor] | None = None,
    start_samples: int | None = None,
    measure_flips: bool = True,
) -> Fit:
    """Every class's signature fitted from two starts, a faint uniform mask and the class's
    gradient start (:func:`.signatures.gradient_start`), all in one batched loop split into
    groups whose forward+backward fits the memory cap. Per class the start with the smaller
    signature on the held-out samples is kept: each start finds compact triggers that the other
    misses, and a class's signature is the smallest one found. ``tests``: the held-out samples
    and their probabilities for the region test (default the pool's); ``start_samples``: samples
    behind each gradient start (default the config's); ``measure_flips``: measure the kept start's flip rate (None
    otherwise)."""
    settings, spp = probe.config.fit, probe.samples_per_pass
    if probabilities is None:  # once, shared by every group
        probabilities = class_probabilities(probe.model, samples, spp)
    seeded_masks, seeded_patterns, seeding = gradient_starts(probe, samples, classes, probabilities, start_samples)
    rows = classes + classes
    mask_init = torch.cat([torch.full_like(seeded_masks, settings.uniform_start), seeded_masks])
    pattern_init = torch.cat([torch.zeros_like(seeded_patterns), seeded_patterns])
    starts = range(0, len(rows), probe.classes_per_pass)
    parts = [
        fit_signatures(
            probe.model,
            samples,
            probe.num_classes,
            probe.low,
            probe.high,
            steps=settings.steps if steps is None else steps,
            batch_size=settings.batch_size,
            step_size=settings.step_size,
            init_cost=settings.init_cost,
            cost_up=settings.cost_up,
            target_rate=settings.target_rate,
            generator=generator or probe.generator,
            progress=progress,
            classes=rows[c : c + probe.classes_per_pass],
            quantile=settings.quantile,
            probabilities=probabilities,
            mask_init=mask_init[c : c + probe.classes_per_pass],
            pattern_init=pattern_init[c : c + probe.classes_per_pass],
            far_batches=settings.far_batches,
            chunk=spp,
            measure_flips=False,
            description=description + (f" {i + 1}/{len(starts)}" if len(starts) > 1 else ""),
        )
        for i, c in enumerate(starts)
    ]
    both = Fit(
        torch.cat([p.masks for p in parts]),
        torch.cat([p.patterns for p in parts]),
        [],
        {name: sum((getattr(p, name) for p in parts), []) for name in FIT_STATISTICS},
        seeding + sum(p.sample_gradients for p in parts),
        len(parts),
    )
    kept = smaller_start(probe, pool.tests if tests is None else tests, both, classes)
    if measure_flips:  # only the kept start's flip rate is reported, so only it is measured
        kept.stats["flip_rate"] = flip_rates(
            probe.model, kept.masks, kept.patterns, classes, samples, probabilities, settings.quantile, spp
        )
    return kept


def gradient_starts(probe: Probe, samples, classes: list[int], probabilities, count: int | None = None):
    """Each class's gradient start (:func:`.signatures.gradient_start`) under the config's
    settings, from ``count`` far samples (default ``start_samples``)."""
    settings = probe.config.fit
    return gradient_start(
        probe.model,
        samples,
        classes,
        probabilities,
        settings.quantile,
        count=settings.start_samples if count is None else count,
        base=settings.start_base,
        gain=settings.start_gain,
        cap=settings.start_cap,
        chunk=probe.samples_per_pass,
    )


def smaller_start(probe: Probe, tests: tuple[torch.Tensor, torch.Tensor], both: Fit, classes: list[int]) -> Fit:
    """Of ``both`` (the uniform starts' rows, then the gradient starts'), per class the start
    whose signature, sqrt(mask L1 x hard region), is smaller on ``tests``."""
    settings = probe.config.fit
    regions, hard = smallest_region(
        probe.model,
        both.masks.to(probe.device),
        both.patterns.to(probe.device),
        classes + classes,
        *tests,
        required=settings.required,
        sizes=settings.region_sizes,
        quantile=settings.quantile,
        chunk=probe.samples_per_pass,
    )
    n = len(classes)
    sizes = [stamp_size(a, b) for a, b in zip(both.stats["mask_l1"], regions)]
    best = [row + n if sizes[row + n] < sizes[row] else row for row in range(n)]
    chosen = torch.tensor(best)
    stats = {name: [values[row] for row in best] for name, values in both.stats.items()}
    stats.update(
        region_pixels=[regions[row] for row in best],
        size=[sizes[row] for row in best],
        start=["gradient" if row >= n else "uniform" for row in best],
    )
    return Fit(
        both.masks[chosen],
        both.patterns[chosen],
        [hard[row] for row in best],
        stats,
        both.sample_gradients,
        both.chunks,
    )


def smallest_boxes(
    probe: Probe, tests, regions: list[torch.Tensor], patterns: torch.Tensor, classes: list[int], every_size: int = 0
) -> list[int]:
    """Each class's smallest box at its region's densest spot; with ``every_size`` (a largest
    area), every box size up to it at the region's ``box_placements`` densest spots instead."""
    return smallest_box(
        probe.model,
        [h.to(probe.device) for h in regions],
        patterns.to(probe.device),
        classes,
        *tests,
        required=probe.config.fit.required,
        quantile=probe.config.fit.quantile,
        chunk=probe.samples_per_pass,
        placements=probe.config.box.box_placements if every_size else 1,
        every_side_up_to=every_size,
    )


def blend_test(
    probe: Probe, tests, patterns: torch.Tensor, classes: list[int], required: float | None = None
) -> list[float | None]:
    """Each class's weakest blend that flips ``required`` (default ``blend_required``) of the
    held-out exemplars."""
    return weakest_blend(
        probe.model,
        patterns.to(probe.device),
        classes,
        *tests,
        required=probe.config.blend.blend_required if required is None else required,
        quantile=probe.config.fit.quantile,
        strengths=probe.config.blend.strengths(),
        chunk=probe.samples_per_pass,
    )
