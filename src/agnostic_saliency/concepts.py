"""Concepts and perturbed inputs, shared by the method (nudge) and the metrics (fidelity).

A *concept* is a set of class indices. All K concepts are encoded as a (K, num_classes) boolean
matrix so that the loss and the hits for every map are computed in one batched call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from .errors import InputError


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


def perturbed_inputs(samples: torch.Tensor, maps: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """clip(x + rho_k) for every map and sample: (K, B, C, H, W)."""
    return (samples[None] + maps[:, None]).clamp(low, high)


def chunk_seed(seed: int, concepts: Sequence[Sequence[int]]) -> int:
    """A seed for one chunk of concepts: a hash of the run's seed and the chunk's classes."""
    digest = hashlib.sha256(json.dumps([int(seed), [list(map(int, c)) for c in concepts]]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
