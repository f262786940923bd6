"""Train the observers of benchmarks/maps.py on the Fashion-MNIST training split and write their
weights (safetensors) and a card each under benchmarks/judges/.

    OMP_NUM_THREADS=1 python scripts/train_judges.py    # all of them (the robust judge: 25 min wall time, shared CPU)
    OMP_NUM_THREADS=1 python scripts/train_judges.py robust       # only the adversarially trained judge

``robust`` is trained with L2 PGD adversarial training (Madry et al., ICLR 2018): each batch is
replaced by its worst case inside an L2 ball of radius ``eps`` found by projected gradient
ascent. The panel and the unseen net are trained plainly. Architectures: benchmarks/observers.py.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from observers import ARCHITECTURES, JUDGES_DIR  # noqa: E402

from agnostic_saliency.data import load_fashion_mnist  # noqa: E402

RECIPES = {
    "panel-mlp": dict(epochs=4, lr=2e-3, seed=11),
    "panel-pool": dict(epochs=3, lr=2e-3, seed=12),
    "panel-gap": dict(epochs=2, lr=3e-3, seed=13),
    "unseen-mobile": dict(epochs=3, lr=4e-3, seed=14),
    "unseen-residual": dict(epochs=3, lr=4e-3, seed=16),
    "robust": dict(epochs=2, lr=2e-3, seed=15, eps=1.5, pgd_steps=3),
}


def pgd_l2(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Worst-case inputs in the L2 ball of radius ``eps`` around x (clipped to [0, 1]), from a
    random start, with normalised-gradient steps of 2.5 eps / steps."""
    step = 2.5 * eps / steps
    delta = torch.randn(x.shape, generator=generator)
    delta = (
        delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.rand(len(x), 1, 1, 1, generator=generator)
    )
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + step * grad
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * (eps / norms).clamp(max=1.0)
    return (x + delta).clamp(0, 1).detach()


def train(name: str, train_x, train_y) -> tuple[nn.Module, float]:
    recipe = RECIPES[name]
    torch.manual_seed(recipe["seed"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    model = ARCHITECTURES[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    batch = 128
    steps = recipe["epochs"] * ((len(train_x) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], total_steps=steps)
    start = time.time()
    for epoch in range(recipe["epochs"]):
        order = torch.randperm(len(train_x), generator=generator)
        for first in range(0, len(train_x), batch):
            index = order[first : first + batch]
            x, y = train_x[index], train_y[index]
            if "eps" in recipe:
                model.eval()  # the attack sees the model as it will be used
                x = pgd_l2(model, x, y, recipe["eps"], recipe["pgd_steps"], generator)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()
        print(
            f"{name}: epoch {epoch + 1}/{recipe['epochs']} done at {time.time() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return model.eval(), time.time() - start


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return sum(
        (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item() for i in range(0, len(x), 1000)
    ) / len(x)


def robust_accuracy(model, x, y, eps: float, steps: int = 20) -> float:
    """Accuracy under a 20-step L2 PGD attack of radius eps."""
    generator = torch.Generator().manual_seed(0)
    correct = 0
    for i in range(0, len(x), 500):
        adversarial = pgd_l2(model, x[i : i + 500], y[i : i + 500], eps, steps, generator)
        with torch.no_grad():
            correct += (model(adversarial).argmax(1) == y[i : i + 500]).sum().item()
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(RECIPES), help="which to train (default: all)")
    parser.add_argument("--out", type=Path, default=JUDGES_DIR)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(RECIPES):
        recipe = RECIPES[name]
        model, seconds = train(name, train_x, train_y)
        clean = accuracy(model, test_x, test_y)
        # Robust accuracy of every observer on the first 2,000 test images, so the cards compare.
        robust = robust_accuracy(model, test_x[:2000], test_y[:2000], 1.5)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(
            state,
            str(args.out / f"{name}.safetensors"),
            metadata={"clean_accuracy": f"{clean:.4f}", "robust_accuracy_l2_1.5": f"{robust:.4f}"},
        )
        parameters = sum(v.numel() for v in model.parameters())
        training = (
            f"L2 PGD adversarial training, eps {recipe['eps']} (pixel range [0, 1]), {recipe['pgd_steps']} "
            f"steps of 2.5 eps / {recipe['pgd_steps']} from a random start, every batch replaced by its attack"
            if "eps" in recipe
            else "plain cross-entropy, no augmentation"
        )
        card = f"""# Observer card: {name}

- **Architecture**: `{type(model).__name__}` in `benchmarks/observers.py`, {parameters:,} parameters.
- **Data**: the 60,000 Fashion-MNIST training images (Debian package `dataset-fashion-mnist`), 1x28x28 in [0, 1].
- **Training**: {training}; Adam, one-cycle schedule, max lr {recipe["lr"]}, batch 128, {recipe["epochs"]} epochs,
  seed {recipe["seed"]}; {seconds:.0f} s on {platform.machine()} CPU, 1 thread, torch {torch.__version__}.
- **Clean accuracy**: {100 * clean:.2f}% on the 10,000 test images.
- **Robust accuracy**: {100 * robust:.2f}% on the first 2,000 test images under a 20-step L2 PGD attack, eps 1.5.
- **Command**: `OMP_NUM_THREADS=1 python scripts/train_judges.py {name}`
"""
        (args.out / f"{name}.md").write_text(card)
        print(f"{name}: clean {clean:.4f}, robust {robust:.4f}, {seconds:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
