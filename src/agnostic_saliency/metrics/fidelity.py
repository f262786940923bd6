"""Fidelity: does the model read the map as its concept?

- fooling rate: share of samples (fresh draws from D, or held-out real images) that the model
  assigns to the concept once the map is added, clipped to the valid range;
- target confidence: mean probability of the concept on those samples;
- map alone: the label and confidence the model gives the *displayed* (scaled) map by itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..concepts import concept_hits, concept_log_probability, perturbed_inputs


@dataclass
class Fidelity:
    """Per-map fidelity figures (lists in target order)."""

    fooling_rate: list[float]
    target_confidence: list[float]
    real_fooling_rate: list[float] | None
    real_target_confidence: list[float] | None
    map_alone_label: list[int]
    map_alone_confidence: list[float]
    map_alone_in_concept: list[bool]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def fooling_statistics(model, maps, samples, concepts, low, high, chunk: int = 4096):
    """(fooling rate, mean concept probability) per map, on ``samples`` with each map added."""
    k, n = maps.shape[0], samples.shape[0]
    hits = torch.zeros(k, device=maps.device)
    confidence = torch.zeros(k, device=maps.device)
    maps_per_pass = max(1, min(k, chunk))  # more maps than the chunk holds: a few maps at a time
    per_map = max(1, chunk // maps_per_pass)
    for first in range(0, k, maps_per_pass):
        rows = slice(first, first + maps_per_pass)
        for start in range(0, n, per_map):
            batch = samples[start : start + per_map].to(maps.device)
            inputs = perturbed_inputs(batch, maps[rows], low, high)
            logits = model(inputs.flatten(0, 1)).reshape(len(inputs), len(batch), -1).float()
            hits[rows] += concept_hits(logits, concepts[rows]).float().sum(1)
            confidence[rows] += concept_log_probability(logits, concepts[rows]).exp().sum(1)
    return (hits / n).tolist(), (confidence / n).tolist()


@torch.no_grad()
def map_alone(model, displayed, concepts, chunk: int = 4096):
    """Top-1 label, its probability, and whether it lies in the concept, for each displayed map."""
    probabilities = torch.cat([model(part).float().softmax(-1) for part in displayed.split(chunk)])
    confidence, label = probabilities.max(-1)
    inside = concepts.gather(1, label[:, None]).squeeze(1)
    return label.tolist(), confidence.tolist(), inside.tolist()


def measure_fidelity(
    model, maps, displayed, concepts, fresh_samples, low, high, real_images=None, chunk: int = 4096
) -> Fidelity:
    """All fidelity figures for ``maps`` (signed, pixel space) and their ``displayed`` pictures,
    with at most ``chunk`` inputs in one forward pass."""
    fooling, confidence = fooling_statistics(model, maps, fresh_samples, concepts, low, high, chunk)
    real_fooling = real_confidence = None
    if real_images is not None:
        real_fooling, real_confidence = fooling_statistics(model, maps, real_images, concepts, low, high, chunk)
    label, alone_confidence, inside = map_alone(model, displayed, concepts, chunk)
    return Fidelity(fooling, confidence, real_fooling, real_confidence, label, alone_confidence, inside)
