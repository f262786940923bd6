"""The scan's samples: drawn evenly over the model's answers, and which of them count for each
class (its far samples, the ones the model finds least like it).

Samples near a class's boundary carry no information about how hard the class is to reach, and on
noise most models sit near one "easy" class (for Fashion-MNIST, "bag") for nearly every sample,
which would otherwise look like a backdoor.
"""

from __future__ import annotations

import torch
from torch import nn


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
