"""The box searches ("looks"): one ordered list of strategies, each tried on the anomalous classes
whose box is still too wide for the compact-box test after the ones before it.

The first look, every class's, is the smallest box at its hard region's densest spot
(:mod:`.evidence`). Then, in this order:

2. every size: every box size up to the bound, each at the region's few densest spots; the
   region can be the trigger plus a denser cluster of scattered helper pixels (see
   :func:`.regions.smallest_box`).

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


@dataclass(frozen=True)
class Look:
    """One box search: whether a config runs it, who it is for, and the search itself."""

    name: str
    runs: Callable[[ScanConfig], bool]
    candidates: Callable[[Probe, BoxState], list[int]]
    search: Callable[[Probe, Pool, BoxState, list[int]], None]


LOOKS = (
    Look("every size", lambda c: c.box.every_size_look and c.box.box_placements > 1, size_anomalous, every_size_look),
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
