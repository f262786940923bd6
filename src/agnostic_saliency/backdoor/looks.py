"""The box searches ("looks"): one ordered list of strategies, each tried on the anomalous classes
whose box is still too wide for the compact-box test after the ones before it.

The first look, every class's, is the smallest box at its hard region's densest spot
(:mod:`.evidence`). Then, in this order:

2. every size: every box size up to the bound, each at the region's few densest spots; the
   region can be the trigger plus a denser cluster of scattered helper pixels (see
   :func:`.regions.smallest_box`);
3. fitted box: the pattern fitted inside the box. On a network with global average pooling the
   fit can spread a patch's evidence, so that the fitted pattern under any one box is not the
   trigger. A box with its own fitted pattern is an adversarial patch, so it must work at half
   the bound (:func:`.patterns.fitted_box`).

Each look has its own switch in :class:`.config.BoxConfig` and its own random stream, so turning
one off leaves the others' draws as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import ScanConfig
from .fitting import Pool, Probe, smallest_boxes
from .patterns import fitted_box
from .verdict import size_index


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
    box_fits: dict = field(default_factory=dict)  # class -> (box mask, pattern fitted inside it)
    spotted: set = field(default_factory=set)
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


def fitted_box_look(probe: Probe, pool: Pool, state: BoxState, classes: list[int]) -> None:
    """The third look: a box with its own fitted pattern, at most half the bound."""
    settings = probe.config
    side = math.isqrt(int(state.largest_box * settings.box.fitted_box_share))
    if side < 1:
        return
    generator = torch.Generator().manual_seed(probe.seed + 11)  # leaves the scan's own draws as they were
    for k in classes:
        found, spent = fitted_box(
            probe.model,
            state.hard[k].to(probe.device),
            state.patterns[k].to(probe.device),
            pool.fit[pool.fit_far[:, k]],
            pool.held_out[pool.held_far[:, k]],
            k,
            probe.low,
            probe.high,
            side,
            settings.box.box_placements,
            steps=settings.box.box_fit_steps,
            batch_size=settings.fit.batch_size,
            step_size=settings.fit.step_size,
            required=settings.fit.required,
            generator=generator,
            chunk=probe.samples_per_pass,
            boxes_per_pass=probe.classes_per_pass,
        )
        state.spent += spent
        if found is not None:
            state.boxes[k], state.box_fits[k] = found[0], (found[1].cpu(), found[2].cpu())


@dataclass(frozen=True)
class Look:
    """One box search: whether a config runs it, who it is for, and the search itself."""

    name: str
    runs: Callable[[ScanConfig], bool]
    candidates: Callable[[Probe, BoxState], list[int]]
    search: Callable[[Probe, Pool, BoxState, list[int]], None]


LOOKS = (
    Look("every size", lambda c: c.box.every_size_look and c.box.box_placements > 1, size_anomalous, every_size_look),
    Look("fitted box", lambda c: c.box.fitted_box_look and c.box.box_fit_steps > 0, size_anomalous, fitted_box_look),
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
