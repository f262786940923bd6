"""Data-free class exemplars: samples from an unrestricted distribution, nudged until the model
is confident of each class in turn.

Why the scan needs them: on raw noise or shapes most models answer one "easy" class (for
Fashion-MNIST, "bag") for almost everything, and a tiny patch sends any such sample there, so the
easy class looks exactly like a backdoor target. Real images do not have this problem, since a
confident trouser is far from "bag". Exemplars give the same footing without data: every sample
sits deep inside some class, the classes are evenly represented, and only a trigger that the
model learned as a shortcut flips them all with a small patch.

The nudge is a few signed-gradient steps of cross-entropy toward an assigned class (no norm
bound: the sample may move anywhere in the pixel range), stopped per sample once the model gives
that class at least ``confidence``. Deep exemplars matter: on the development split, exemplars
stopped at 0.9 confidence still let "bag" look like a backdoor on the CNN models, while 30 steps
of 0.02 (confidence about 1.0) did not on most.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ..method.distributions import Distribution
from .pool import class_probabilities


def class_exemplars(
    model: nn.Module,
    source: Distribution,
    count: int,
    num_classes: int,
    low: float,
    high: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    steps: int = 30,
    step_size: float = 0.02,
    confidence: float = 0.999,
    chunk: int = 512,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``count`` exemplars with the classes assigned in turn (0, 1, ..., K-1, 0, ...).

    Returns the exemplars (count, C, H, W) in the pixel range, the assigned classes, and the
    number of per-sample gradients spent. ``step_size`` is a fraction of the pixel range.
    ``progress`` shows a bar over the chunks' steps (a chunk that is done early skips ahead).
    """
    samples = source.sample(count, generator, device)
    labels = torch.arange(count, device=samples.device) % num_classes
    step_unit = step_size * (high - low)
    spent = 0
    chunks = range(0, count, chunk)
    bar = tqdm(total=len(chunks) * steps, disable=not progress, desc="exemplars", unit="step")
    for start in chunks:
        x, y = samples[start : start + chunk], labels[start : start + chunk]  # x is a view: steps land in samples
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for step in range(steps):
            active = ~done
            if not active.any():
                bar.update(steps - step)
                break
            bar.update(1)
            # One forward serves both the stopping test and the gradient: samples the model is
            # already confident of take no step and leave the active set.
            moving = x[active].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(moving).float()
                confident = logits.softmax(1).gather(1, y[active][:, None])[:, 0] >= confidence
                loss = torch.nn.functional.cross_entropy(logits, y[active], reduction="none")[~confident].sum()
                gradient = torch.autograd.grad(loss, moving)[0] if (~confident).any() else torch.zeros_like(moving)
            spent += int(active.sum())
            nudge = torch.where(confident.view(-1, *([1] * (moving.dim() - 1))), 0.0, -step_unit * gradient.sign())
            x[active] = (moving + nudge).clamp(low, high).detach()
            done[active] = confident
    bar.close()
    return samples, labels, spent


@torch.no_grad()
def exemplar_quality(
    model: nn.Module, exemplars: torch.Tensor, labels: torch.Tensor, chunk: int = 1024
) -> tuple[float, float]:
    """Share of exemplars the model assigns to their class, and its mean probability for it."""
    probabilities = class_probabilities(model, exemplars, chunk)
    hit = (probabilities.argmax(1) == labels).float().mean()
    return float(hit), float(probabilities.gather(1, labels[:, None]).mean())
