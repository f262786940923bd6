"""The scan's first stage: the evidence. Draw the pool, fit every class's signature, and measure
each class into one per-class table (region, box, blend strength, ...) for the verdict.

The pool is drawn from an unrestricted distribution (procedural shapes by default; unlabeled
images when given) and nudged into class exemplars (:mod:`.exemplars`). Every class's signature
is fitted in one batched loop from two starts, a faint uniform mask and the class's gradient
start, keeping the smaller (:mod:`.signatures`). Each class's hard region then gets the smallest
square box that still flips the held-out exemplars, searched further by the looks of
:mod:`.looks` while its box is too wide (the last, a small box anywhere with its own pattern),
and the weakest whole-image blend of its pattern that flips them. With more classes than the
shortlist, a cheap pass ranks them first and only the most anomalous, plus a few reference
classes, get the full fit (:mod:`.shortlist`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fitting import Pool, Probe, blend_test, draw_pool, fit_classes, smallest_boxes
from .looks import BoxState, measure_boxes
from .shortlist import cheap_anomaly, log_gap, pick_classes, shortlist_size
from .verdict import EvidenceTable, box_sizes, largest_box


@dataclass
class Evidence:
    """The first stage's output: the table the verdict reads, and the stamps behind it."""

    table: EvidenceTable
    masks: torch.Tensor  # (K, H, W)
    patterns: torch.Tensor  # (K, C, H, W)
    hard: list[torch.Tensor]  # each class's hard region (H, W)
    spotted: set  # classes the every-size look searched (their trigger box gets as many spots)
    pool: Pool
    shortlist: dict  # shortlisted, reference_classes, shortlist_shift (None without a cheap pass)
    sample_gradients: int
    class_chunks: int
    small_boxes: dict  # class -> (mask, pattern) of the small box that reached it (the small-box look)


def cheap_pass(probe: Probe, pool: Pool, kept: int) -> dict:
    """The shortlist's cheap pass: every class's signature at a few steps, with the statistics
    the verdict reads, ranked; the ``kept`` most anomalous, and a few reference classes, go on.
    Its stamp tests take a share of the held-out exemplars, its gradient starts fewer samples."""
    every, settings = list(range(probe.num_classes)), probe.config.fit
    tests = pool.held_out[: settings.cheap_tests], pool.held_probabilities[: settings.cheap_tests]
    fit = fit_classes(
        probe,
        pool,
        pool.fit,
        every,
        probe.config.run.progress,
        pool.fit_probabilities,
        steps=settings.shortlist_steps,
        description="shortlist",
        tests=tests,
        start_samples=settings.cheap_start_samples,
        measure_flips=False,
    )
    cheap = dict(fit.stats, masks=fit.masks, patterns=fit.patterns, hard=fit.hard, spent=fit.sample_gradients)
    cheap["box_pixels"] = smallest_boxes(probe, tests, fit.hard, fit.patterns, every)
    cheap["box_size"] = box_sizes(cheap["mask_l1"], cheap["box_pixels"])
    cheap["blend_strength"] = blend_test(probe, tests, fit.patterns, every)
    cheap["anomaly"] = cheap_anomaly(cheap["size"], cheap["box_size"], cheap["blend_strength"])
    cheap["shortlisted"], cheap["reference"] = pick_classes(cheap["anomaly"], kept, settings.reference_classes)
    return cheap


def every_row(cheap: dict | None, name: str, full_values, full_classes: list[int]):
    """One value per class: the full fit's for its classes, the cheap pass's ``name`` for the rest."""
    if cheap is None:
        return full_values
    if isinstance(full_values, torch.Tensor):
        merged = cheap[name].clone()
        merged[full_classes] = full_values
        return merged
    merged = list(cheap[name])
    for row, k in enumerate(full_classes):
        merged[k] = full_values[row]
    return merged


@dataclass
class Fitted:
    """The evidence before the looks: the pool, the fits, and every class's first box. The looks
    and the blend test only read it (through a copy of ``state``), so one fit can serve several
    settings of the looks, as the scan's ablation benchmark does."""

    pool: Pool
    cheap: dict | None
    full: list[int]  # the fully fitted classes
    stats: dict
    state: BoxState
    chunks: int
    spent: int


def gather_evidence(probe: Probe) -> Evidence:
    """The first stage: the pool, the (cheap and) full fit, every class's box (with the looks)
    and blend strength, in one table. Outside the full fit a class's figures are the cheap
    pass's, with the shortlist's log gaps to move them onto the full fit's scale."""
    return finish_evidence(probe, fit_evidence(probe))


def fit_evidence(probe: Probe) -> Fitted:
    """The pool, the (cheap and) full fit and every class's first box."""
    pool, count = draw_pool(probe)
    num_classes, cheap = probe.num_classes, None
    full, kept = list(range(num_classes)), shortlist_size(probe.config.fit.shortlist, num_classes)
    if kept < num_classes:
        cheap = cheap_pass(probe, pool, kept)
        count += cheap["spent"]
        full = sorted(cheap["shortlisted"] + cheap["reference"])
    fit = fit_classes(probe, pool, pool.fit, full, probe.config.run.progress, pool.fit_probabilities)
    count += fit.sample_gradients
    stats = {name: every_row(cheap, name, values, full) for name, values in fit.stats.items()}
    shift = {"size": 0.0, "box": 0.0, "blend": 0.0}
    reference = [] if cheap is None else cheap["reference"]
    if cheap is not None:
        shift["size"] = log_gap(stats["size"], cheap["size"], reference)
    state = BoxState(
        boxes=[],
        hard=every_row(cheap, "hard", fit.hard, full),
        masks=every_row(cheap, "masks", fit.masks, full),
        patterns=every_row(cheap, "patterns", fit.patterns, full),
        mask_l1=stats["mask_l1"],
        sizes=stats["size"],
        full_fit=[k in set(full) for k in range(num_classes)],
        shift=shift,
        largest_box=largest_box(probe.config.box.max_trigger_area, probe.image_shape),
    )
    # A small signature alone also marks classes that are merely easy to reach (on
    # Fashion-MNIST, "bag" from a scatter of pixels); a trigger must also fit in a small box.
    found = smallest_boxes(probe, pool.tests, [state.hard[k] for k in full], state.patterns[full], full)
    state.boxes = every_row(cheap, "box_pixels", found, full)
    if cheap is not None:
        shift["box"] = log_gap(box_sizes(stats["mask_l1"], state.boxes), cheap["box_size"], reference)
    return Fitted(pool, cheap, full, stats, state, fit.chunks, count)


def finish_evidence(probe: Probe, fitted: Fitted) -> Evidence:
    """The looks on the boxes still too wide, every class's blend strength, and the table.
    ``fitted.state`` is changed in place."""
    pool, cheap, full, state = fitted.pool, fitted.cheap, fitted.full, fitted.state
    count = fitted.spent + measure_boxes(probe, pool, state)
    strengths = every_row(cheap, "blend_strength", blend_test(probe, pool.tests, state.patterns[full], full), full)
    reference = [] if cheap is None else cheap["reference"]
    if cheap is not None:
        state.shift["blend"] = log_gap(strengths, cheap["blend_strength"], reference)
    table = evidence_table(probe, fitted.stats, state, strengths, cheap)
    shortlist = {
        "shortlisted": None if cheap is None else cheap["shortlisted"],
        "reference_classes": None if cheap is None else reference,
        "shortlist_shift": None if cheap is None else state.shift,
    }
    return Evidence(
        table, state.masks, state.patterns, state.hard, state.spotted, pool,
        shortlist, count, fitted.chunks, state.small_boxes,
    )  # fmt: skip


def evidence_table(probe: Probe, stats: dict, state, strengths: list, cheap: dict | None) -> EvidenceTable:
    """The per-class table from the fit's statistics, the boxes after the looks and the blends."""
    classes = range(probe.num_classes)
    shortlisted = set(classes) if cheap is None else set(cheap["shortlisted"])
    return EvidenceTable(
        signature_size=stats["size"],
        mask_l1=stats["mask_l1"],
        box_pixels=state.boxes,
        blend_strength=strengths,
        small_box_reach=[state.reach.get(k) for k in classes],
        full_fit=state.full_fit,
        image_shape=probe.image_shape,
        shift=state.shift,
        region_pixels=stats["region_pixels"],
        flip_rate=stats["flip_rate"],
        baseline_share=stats["baseline_share"],
        reached=stats["reached"],
        start=stats["start"],
        shortlisted=[k in shortlisted for k in classes],
        cheap_anomaly=None if cheap is None else cheap["anomaly"],
    )
