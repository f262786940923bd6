"""Train ``examples/unseen_model.py:build`` on Fashion-MNIST and save a plain state dict.

    python scripts/train_example.py --out artifacts/unseen_model.pt [--device cuda]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's testbed/

import argparse
import importlib.util
import time

import torch

from agnostic_saliency.data import load_fashion_mnist
from testbed.training import accuracy, train_classifier

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "unseen_model.pt")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("unseen_model", ROOT / "examples" / "unseen_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    device = torch.device(args.device)
    model = module.build().to(device)
    x, y = load_fashion_mnist("train")
    tx, ty = load_fashion_mnist("test")
    start = time.time()
    train_classifier(model, x.to(device), y.to(device), epochs=args.epochs, lr=2e-3, seed=7, max_shift=2)
    model.cpu()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"test accuracy {100 * accuracy(model, tx, ty):.2f}% after {time.time() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
