"""Nudging samples toward a concept: the loss whose gradient moves the shared maps.

A *concept* is a set of class indices. All K concepts are encoded as a (K, num_classes) boolean
matrix so that the loss for every map is computed in one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


def concept_matrix(concepts: Sequence[Sequence[int]], num_classes: int, device=None) -> torch.Tensor:
    """(K, num_classes) boolean matrix, row k marking the classes of concept k."""
    matrix = torch.zeros(len(concepts), num_classes, dtype=torch.bool, device=device)
    for row, classes in enumerate(concepts):
        for c in classes:
            if not 0 <= int(c) < num_classes:
                raise InputError(f"class index {c} is out of range for a model with {num_classes} classes")
            matrix[row, int(c)] = True
    return matrix


def concept_log_probability(logits: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    """log P(concept) = logsumexp(logits[concept]) - logsumexp(logits), per row.

    ``logits`` is (K, B, classes) and ``concepts`` (K, classes); returns (K, B). For a single class
    this is the negative cross-entropy.
    """
    masked = logits.masked_fill(~concepts[:, None, :], float("-inf"))
    return torch.logsumexp(masked, dim=-1) - torch.logsumexp(logits, dim=-1)


def concept_hits(logits: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    """(K, B) booleans: the model's top-1 class belongs to the concept."""
    predicted = logits.argmax(-1)
    return concepts.gather(1, predicted)


def shift_maps(maps: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll each map by a random offset of up to ``max_shift`` pixels (one offset per map per
    step). Random shifts during nudging make the map draw shift-robust shapes rather than
    pixel-exact adversarial noise."""
    if max_shift <= 0:
        return maps
    shifts = torch.randint(-max_shift, max_shift + 1, (len(maps), 2), generator=generator).tolist()
    return torch.stack([torch.roll(m, shifts=(dy, dx), dims=(-2, -1)) for m, (dy, dx) in zip(maps, shifts)])


def perturbed_inputs(samples: torch.Tensor, maps: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """clip(x + rho_k) for every map and sample: (K, B, C, H, W)."""
    return (samples[None] + maps[:, None]).clamp(low, high)


def nudge_loss(model, samples, maps, concepts, low, high) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean negative log-probability of each concept over the samples, summed over maps (so each
    map receives its own mean gradient), and the (K, B) hits for monitoring."""
    k, b = maps.shape[0], samples.shape[0]
    inputs = perturbed_inputs(samples, maps, low, high)
    logits = model(inputs.reshape(k * b, *samples.shape[1:])).reshape(k, b, -1).float()
    log_p = concept_log_probability(logits, concepts)
    return -log_p.mean(dim=1).sum(), concept_hits(logits, concepts)
