"""The scan's third stage: the recovered trigger of each flagged class, and its attack success.

It runs after the verdict and only for the flagged classes; it reads the evidence and the
verdict and returns its own :class:`Recovery`, so it cannot change either.

A flagged patch class's mask is hardened to the smallest region that still flips held-out
exemplars and compacted to the box of its main part where the box still flips them (or else
to the square the box test found on it); a class the small-box look reached keeps that box and
its pattern. A flagged blend's trigger is its pattern at the weakest strength that works. Each trigger's pattern
is then refitted under its final mask, on exemplars and then on raw samples (each refit kept
unless it flips fewer held-out samples), and its attack success rate measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .evidence import Evidence
from .fitting import Probe, blend_test
from .patterns import polished_pattern
from .regions import compact_region, fills_its_box, working_box
from .stamps import attack_success
from .verdict import Verdict


@dataclass
class Recovery:
    """The flagged classes' triggers, and what changed for them (class -> value)."""

    triggers: dict  # class -> (mask (H, W), pattern (C, H, W)) on the CPU
    asr: dict  # attack success on fresh samples of the distribution
    asr_images: dict  # attack success on the caller's images, if any
    strengths: dict  # a blend trigger's strength
    polished: dict  # whether a polish was kept
    hard: dict = field(default_factory=dict)  # the trigger's mask, for the result's region masks
    patterns: dict = field(default_factory=dict)  # signature patterns replaced by a polish
    sample_gradients: int = 0


def recover(probe: Probe, evidence: Evidence, verdict: Verdict, images: torch.Tensor | None = None) -> Recovery:
    """The third stage for ``verdict.flagged``: each trigger's mask, then pattern, then attack
    success (on fresh samples, and on ``images`` when given)."""
    flagged = list(verdict.flagged)
    patterns, hard = evidence.patterns.clone(), list(evidence.hard)
    done = Recovery({}, {}, {}, {}, {k: False for k in flagged})
    blends = [k for k in flagged if not verdict.compact[k]]
    # A flagged blend's trigger strength: the weakest that flips as many held-out exemplars as a
    # patch must (the verdict's blend test asks for fewer).
    if blends:
        found = blend_test(probe, evidence.pool.tests, evidence.patterns[blends], blends, probe.config.fit.required)
        done.strengths = dict(zip(blends, found))
    for k in flagged:
        if not verdict.compact[k]:  # a blend: the pattern over the whole image
            hard[k] = torch.full(probe.image_shape, done.strengths[k] or evidence.table.blend_strength[k])
        elif k in evidence.small_boxes:  # the small box that reached the class, and its own pattern
            hard[k], patterns[k] = evidence.small_boxes[k]
        else:
            hard[k] = patch_trigger(probe, evidence, k, patterns[k])
    polish(probe, evidence, flagged, hard, patterns, done)
    attack_samples = probe.config.recovery.attack_samples
    fresh = probe.source.sample(attack_samples, torch.Generator().manual_seed(probe.seed + 7), probe.device)
    for k in flagged:
        mask, pattern = hard[k].to(probe.device), patterns[k].to(probe.device)
        done.triggers[k] = (hard[k].cpu(), patterns[k].cpu())
        done.asr[k] = attack_success(probe.model, mask, pattern, fresh, k, probe.samples_per_pass)
        if images is not None:
            done.asr_images[k] = attack_success(
                probe.model, mask, pattern, images.to(probe.device), k, probe.samples_per_pass
            )
        done.hard[k], done.patterns[k] = hard[k], patterns[k]
    return done


def patch_trigger(probe: Probe, evidence: Evidence, k: int, pattern: torch.Tensor) -> torch.Tensor:
    """A flagged patch's trigger mask: its region compacted to a working box, or the square the
    box test found on it."""
    required, spp, device = probe.config.fit.required, probe.samples_per_pass, probe.device
    others = evidence.pool.held_out[evidence.pool.held_far[:, k]]
    region, pattern = evidence.hard[k].to(device), pattern.to(device)
    boxed = compact_region(probe.model, region, pattern, others, k, required, chunk=spp)
    if not fills_its_box(boxed):
        # The region did not compact to a box that works, but the box test found one on it:
        # that square is the trigger (the region can be the trigger plus scattered helpers).
        spots = probe.config.box.box_placements if k in evidence.spotted else 1
        side = math.isqrt(evidence.table.box_pixels[k])
        square = working_box(probe.model, region, pattern, others, k, side, spots, required, spp)
        boxed = boxed if square is None else square
    return boxed.cpu()


def polish(probe: Probe, evidence: Evidence, flagged: list[int], hard: list, patterns: torch.Tensor, done) -> None:
    """The final masks are fixed; the pattern under each is refitted for the trigger's sake. Twice:
    on the class's far exemplars, then on raw samples of the distribution. A pattern fitted on
    exemplars alone flips them but fewer real images (commit a73fe5a: a CNN's recovered 4x4 box
    over a 3 px white patch flipped 87% of real test images; 99.6% after the second fit), and one
    fitted on raw samples alone, from the signature fit's pattern, 91%."""
    config, pool = probe.config, evidence.pool
    steps = config.recovery.polish_steps
    if not flagged or steps <= 0:
        return
    generator = torch.Generator().manual_seed(probe.seed + 13)  # leaves the scan's own draws as they were
    batch = config.fit.batch_size * min(2, probe.classes_per_pass)  # no larger a pass than the fit's
    raw_fit = probe.source.sample(config.pool.pool_size, generator, probe.device)
    raw_test = probe.source.sample(config.pool.pool_size // 2, generator, probe.device)
    for k in flagged:
        exemplar_fit, exemplar_test = pool.fit[pool.fit_far[:, k]], pool.held_out[pool.held_far[:, k]]
        rounds = (
            (config.recovery.polish_exemplars, exemplar_fit, exemplar_test),
            (config.recovery.polish_raw, raw_fit, torch.cat([exemplar_test, raw_test])),
        )
        for runs, fit_samples, test_samples in rounds:
            if not runs:
                continue
            patterns[k], kept, spent = polished_pattern(
                probe.model,
                hard[k].to(probe.device),
                patterns[k].to(probe.device),
                fit_samples,
                test_samples,
                k,
                probe.low,
                probe.high,
                steps=steps,
                batch_size=batch,
                step_size=config.fit.step_size,
                generator=generator,
                chunk=probe.samples_per_pass,
            )
            done.polished[k] = done.polished[k] or kept
            done.sample_gradients += spent
