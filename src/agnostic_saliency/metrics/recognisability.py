"""Recognisability: is the displayed map the concept for *another* observer?

- an independent judge model (other architecture or seed, same task) classifies the displayed
  map; adversarial noise that only the explained model reads fails this. An ordinary judge shares
  the model's non-robust texture features, so its reading is not evidence a person can read the
  map: use an adversarially trained judge, with a panel of ordinary ones beside it
  (benchmarks/observers.py, docs/readable_maps.md);
- the map correlates most with its own class's mean training image among all classes' means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class Recognisability:
    judge_label: list[int] | None
    judge_confidence: list[float] | None
    judge_reads_concept: list[bool] | None
    mean_image_correlation: list[list[float]] | None  # (K, classes) Pearson correlations
    best_correlated_class: list[int] | None
    correlates_with_own_class: list[bool] | None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def judge_reading(judge, displayed: torch.Tensor, concepts: list[list[int]]):
    """Top-1 label and confidence of ``judge`` (pixel-space model) on each displayed map."""
    probabilities = judge(displayed).float().softmax(-1)
    confidence, label = probabilities.max(-1)
    reads = [int(label[k]) in concept for k, concept in enumerate(concepts)]
    return label.tolist(), confidence.tolist(), reads


def pearson_matrix(maps: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(K, R) Pearson correlation between every map and every reference picture."""
    a = maps.flatten(1).double()
    b = references.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).float()


def class_means(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean image per class: (classes, C, H, W)."""
    return torch.stack([images[labels == c].mean(0) for c in range(num_classes)])


def measure_recognisability(maps, displayed, concepts, judge=None, means=None) -> Recognisability:
    """Judge reading of ``displayed`` and correlation of ``maps`` with the class ``means``."""
    label = confidence = reads = None
    if judge is not None:
        label, confidence, reads = judge_reading(judge, displayed, concepts)
    matrix = best = own = None
    if means is not None:
        correlation = pearson_matrix(maps, means)
        best = correlation.argmax(1).tolist()
        own = [b in concept for b, concept in zip(best, concepts)]
        matrix = correlation.tolist()
    return Recognisability(label, confidence, reads, matrix, best, own)
