"""A plain supervised training loop, shared by the scripts that make the shipped models and the
backdoor population. Deterministic for a given seed on one machine."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from agnostic_saliency.method.distributions import random_shift


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    max_shift: int = 0,
    transform: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` with Adam and a cosine schedule on (images, labels) in pixel space [0, 1].

    ``transform(x, y, generator)`` may rewrite each batch (for example to poison it).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = tqdm(total=steps, disable=not progress, desc="train", leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x, y = images[index], labels[index]
            if max_shift:
                x = random_shift(x, max_shift, generator)
            if transform is not None:
                x, y = transform(x, y, generator)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        correct += (
            (model(images[start : start + batch_size]).argmax(1) == labels[start : start + batch_size]).sum().item()
        )
    return correct / len(images)
