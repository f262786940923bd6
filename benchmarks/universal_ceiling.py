"""How far can a shared perturbation at the maps' budget move a model, given real data?

    OMP_NUM_THREADS=1 python benchmarks/universal_ceiling.py --model unseen-mobile
    OMP_NUM_THREADS=1 python benchmarks/universal_ceiling.py --model fmnist-cnn --steps 300

A yardstick, not the method: one targeted universal perturbation per class, trained with Adam on
batches of real Fashion-MNIST *training* images and projected onto the same l2 ball as the maps
(RMS 0.25 of the pixel range), with no transforms. Its test fooling (on the first ``--test-images``
test images, computed as benchmarks/maps.py computes it) is what the budget allows when data is
available; the gap to the maps' fooling is what the data-free samples and the transforms cost.

With ``--judge-weight W`` the robust judge (or the ``--judges`` named) joins the loss (W times its
cross-entropy on each map's ``positive`` display): a map that the model reads on real images *and*
the judges read as its class. This is a feasibility check, never the method (which sees no judge
and no data): if such maps exist at the budget, the gap to them is the method's; if they do not,
no data-free method reaches both. A judge in the loss reads these maps by construction; only the
others' readings are evidence. ``--save-maps DIR --label L`` keeps the maps as benchmarks/maps.py
keeps its own, so that it reads them with every observer: ``python benchmarks/maps.py --model
fmnist-cnn --seeds 0 --maps-dir DIR --label L``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from observers import ARCHITECTURES, load_observer  # noqa: E402

from agnostic_saliency import load_model  # noqa: E402
from agnostic_saliency.concepts import concept_matrix  # noqa: E402
from agnostic_saliency.data import load_fashion_mnist  # noqa: E402
from agnostic_saliency.method.scale import positive  # noqa: E402
from agnostic_saliency.metrics.fidelity import fooling_statistics  # noqa: E402


def universal_maps(model, images: torch.Tensor, classes: int, rms: float, steps: int, batch: int, lr: float,
                   generator: torch.Generator, judges=(), judge_weight: float = 0.0) -> torch.Tensor:
    """One perturbation per class minimising -log P(class | clip(x + map)) over real images, each
    kept inside the l2 ball of radius rms * sqrt(pixels) after every Adam step; with ``judges``,
    plus ``judge_weight`` times each one's cross-entropy on the maps' positive display."""
    radius = rms * images[0].numel() ** 0.5
    maps = torch.zeros(classes, *images.shape[1:], requires_grad=True)
    optimizer = torch.optim.Adam([maps], lr=lr)
    wanted = torch.arange(classes).repeat_interleave(batch)
    for _ in range(steps):
        x = images[torch.randint(0, len(images), (batch,), generator=generator)]
        inputs = (x[None] + maps[:, None]).clamp(0, 1).flatten(0, 1)
        loss = torch.nn.functional.cross_entropy(model(inputs), wanted)
        for judge in judges:
            loss = loss + judge_weight * torch.nn.functional.cross_entropy(judge(positive(maps)), torch.arange(classes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            norms = maps.flatten(1).norm(dim=1).clamp_min(1e-12)
            maps.mul_((radius / norms).clamp(max=1).view(-1, *([1] * (maps.dim() - 1))))
    return maps.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unseen-mobile", help="a built-in model or an observer of benchmarks/judges")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--rms", type=float, default=0.25)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge-weight", type=float, default=0.0,
                        help="each judge's weight in the loss (a feasibility check; default 0: none)")
    parser.add_argument("--judges", default="robust", help="the judges in the loss, comma-separated (default robust)")
    parser.add_argument("--save-maps", type=Path, help="keep the maps here, as benchmarks/maps.py --maps-dir does")
    parser.add_argument("--label", default="ceiling", help="the label of the kept maps (benchmarks/maps.py --label)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model in ARCHITECTURES:
        model = load_observer(args.model)
    else:
        model = load_model(args.model, input_shape=(1, 28, 28)).model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    train_x, _ = load_fashion_mnist("train")
    test_x, _ = load_fashion_mnist("test")
    start = time.perf_counter()
    judges = [load_observer(name) for name in args.judges.split(",")] if args.judge_weight > 0 else []
    for judge in judges:
        for parameter in judge.parameters():
            parameter.requires_grad_(False)
    maps = universal_maps(model, train_x, 10, args.rms, args.steps, args.batch, args.lr,
                          torch.Generator().manual_seed(args.seed), judges, args.judge_weight)
    seconds = time.perf_counter() - start
    if args.save_maps:
        args.save_maps.mkdir(parents=True, exist_ok=True)
        kept = args.save_maps / f"{args.model}_{args.label}_seed{args.seed}.safetensors"
        save_file({"unrefined_maps": maps.contiguous(), "maps": maps.clone().contiguous()}, str(kept),
                  metadata={"seconds": str(seconds), "refined": "0",
                            "settings": json.dumps({"universal_ceiling": vars(args) | {"save_maps": str(kept)}})})
    with torch.no_grad():
        fooling, _ = fooling_statistics(model, maps, test_x[: args.test_images],
                                        concept_matrix([[k] for k in range(10)], 10, maps.device), 0.0, 1.0)
    print(json.dumps({"model": args.model, "steps": args.steps, "rms": args.rms, "test_images": args.test_images,
                      "judge_weight": args.judge_weight, "judges": args.judges if args.judge_weight > 0 else None,
                      "fool": sum(fooling) / len(fooling), "min": min(fooling),
                      "per_class_fool": [round(f, 4) for f in fooling],
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
