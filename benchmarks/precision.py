"""Time the maps at each precision on an ImageNet-size torchvision model, side by side in one run.

    python benchmarks/precision.py --device cuda --json benchmarks/results/maps_precision_resnet50-random_h100.json

The model has random weights unless ``--weights`` names a local state dict (nothing is
downloaded), so the fooling rates mean nothing here: the script checks that every precision
runs, gives finite maps, and how long and how much GPU memory each takes. The first precision
also pays the warm-up (cuDNN autotuning, allocator growth), so run fp32 again last for a fair
ratio (``--precisions fp32,bf16,fp16,fp32``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

from agnostic_saliency import InputAgnosticSaliency, InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a torchvision.models builder name")
    parser.add_argument("--weights", help="a local state dict (safetensors or a weights-only torch file)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16,fp16,fp32")
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json")
    args = parser.parse_args()

    model = getattr(torchvision.models, args.model)(weights=None)
    if args.weights:
        from agnostic_saliency.models import load_weights

        model.load_state_dict(load_weights(args.weights))
    model = model.eval().to(args.device)
    spec = InputSpec((3, args.size, args.size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    explainer = InputAgnosticSaliency(model, spec, memory_cap_mb=16384)
    cuda = torch.device(args.device).type == "cuda"
    rows = []
    for precision in args.precisions.split(","):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = explainer.attribute(targets=list(range(args.targets)), steps=args.steps,
                                     batch_size=args.batch_size, refine_steps=max(1, args.steps // 3),
                                     eval_samples=4 * args.batch_size, precision=precision, progress=False)
        if cuda:
            torch.cuda.synchronize()
        per_class = result.per_class()
        rows.append({"precision": precision, "seconds": time.perf_counter() - start,
                     "mean_fooling_rate": sum(r["fooling_rate"] for r in per_class) / len(per_class),
                     "finite": bool(torch.isfinite(result.maps).all()),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})
        print(rows[-1], flush=True)
    reference = rows[-1]["seconds"] if rows[-1]["precision"] == "fp32" else rows[0]["seconds"]
    for row in rows:
        print(f"{row['precision']:<5} {row['seconds']:7.1f} s  {reference / row['seconds']:4.2f}x of fp32")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "device": args.device, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
