"""Fidelity and recognisability of the maps on Fashion-MNIST, with ablations side by side.

    python benchmarks/fidelity.py                                   # built-in fmnist-cnn, judge fmnist-mlp
    python benchmarks/fidelity.py --model examples/lenet.py:build --weights artifacts/lenet.pt --judge fmnist-cnn

For each variant (default settings; the default without its random shapes; uniform-flat noise
instead of per-sample brightness; no refinement; the nudge under bf16) it prints, over all 10 classes: mean fooling
rate on the 10,000 test images (map added as written, clipped), the same on test images of
other classes only, mean map RMS as a fraction of the pixel range, how many displayed maps the
independent judge reads as their class, how many maps correlate best with their own class's
mean training image, and the seconds.

As a yardstick for the last criterion it also prints how often *real* test images correlate best
with their own class's mean (a nearest-mean classifier under Pearson correlation): the
criterion asks more of a map than most real images of shirts, sandals or coats achieve.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from agnostic_saliency import InputAgnosticSaliency, load_model
from agnostic_saliency.concepts import concept_matrix
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.metrics.fidelity import fooling_statistics
from agnostic_saliency.metrics.recognisability import (
    class_means,
    measure_recognisability,
    pearson_matrix,
)
from agnostic_saliency.models.spec import NormalizedModel

VARIANTS = {
    "default": {},
    "no-shapes": {"distribution": "dark2+uniform"},
    "flat-noise": {"distribution": "uniform-flat", "normalize_samples": False},
    "bright-noise": {"distribution": "uniform"},
    "no-refine": {"refine": False},
    "bf16": {"precision": "bf16"},  # the nudge under bf16 autocast; every figure still measured in fp32
}


def evaluate(explainer, wrapped, judge, test_x, test_y, means, settings):
    start = time.perf_counter()
    result = explainer.attribute(targets="all", progress=False, **settings)
    seconds = time.perf_counter() - start
    device = test_x.device
    maps, displayed = result.maps.to(device), result.displayed.to(device)
    concepts = concept_matrix(result.concepts, explainer.num_classes, device)
    fooling, _ = fooling_statistics(wrapped, maps, test_x, concepts, 0.0, 1.0)
    other = []
    for k in range(len(result.concepts)):
        keep = test_y != k
        rate, _ = fooling_statistics(wrapped, maps[k : k + 1], test_x[keep], concepts[k : k + 1], 0.0, 1.0)
        other.append(rate[0])
    recog = measure_recognisability(maps, displayed, result.concepts, judge=judge, means=means)
    rms = result.maps.flatten(1).pow(2).mean(1).sqrt()
    return {
        "test_fooling_rate": sum(fooling) / len(fooling),
        "test_fooling_rate_other_classes": sum(other) / len(other),
        "min_class_fooling_rate": min(fooling),
        "rms_max": float(rms.max()),
        "judge_reads": sum(recog.judge_reads_concept),
        "own_mean_best": sum(recog.correlates_with_own_class),
        "map_alone_in_concept": sum(result.fidelity.map_alone_in_concept),
        "refined": sum(result.refined),
        "seconds": seconds,
        "per_class": {
            "fooling": fooling,
            "judge_label": recog.judge_label,
            "best_correlated": recog.best_correlated_class,
        },
    }


def real_image_own_mean_rates(test_x, test_y, means, chunk: int = 2000) -> list[float]:
    """Per class: the share of real test images that correlate best with their own class mean."""
    best = torch.cat([pearson_matrix(test_x[i : i + chunk], means).argmax(1) for i in range(0, len(test_x), chunk)])
    return [float((best[test_y == k] == k).float().mean()) for k in range(len(means))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn")
    parser.add_argument("--weights")
    parser.add_argument("--judge", default="fmnist-mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--judge-weights")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    loaded = load_model(args.model, weights=args.weights, input_shape=(1, 28, 28))
    judge = load_model(args.judge, weights=args.judge_weights, input_shape=(1, 28, 28))
    device = torch.device(args.device)
    loaded.model.to(device)
    judge_model = NormalizedModel(judge.model, judge.spec).to(device).eval()
    wrapped = NormalizedModel(loaded.model, loaded.spec).to(device).eval()
    test_x, test_y = load_fashion_mnist("test")
    train_x, train_y = load_fashion_mnist("train")
    means = class_means(train_x, train_y, 10).to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names)
    rows = {}
    for name in args.variants.split(","):
        rows[name] = evaluate(
            explainer, wrapped, judge_model, test_x, test_y, means, {"seed": args.seed, **VARIANTS[name]}
        )
        print(f"finished {name}", file=sys.stderr)
    header = (f"{'variant':<12} {'test fool':>9} {'other cls':>9} {'min cls':>8} {'max RMS':>8} {'judge':>6} "
              f"{'own mean':>8} {'alone':>6} {'seconds':>8}")
    print(f"model {args.model}, judge {args.judge}, seed {args.seed}, device {device}")
    print(header)
    for name, row in rows.items():
        print(
            f"{name:<12} {row['test_fooling_rate']:>9.3f} {row['test_fooling_rate_other_classes']:>9.3f} "
            f"{row['min_class_fooling_rate']:>8.3f} {row['rms_max']:>8.3f} {row['judge_reads']:>4}/10 "
            f"{row['own_mean_best']:>6}/10 {row['map_alone_in_concept']:>4}/10 {row['seconds']:>8.1f}"
        )
    reference = real_image_own_mean_rates(test_x, test_y, means)
    print(
        "yardstick: real test images that correlate best with their own class mean: "
        + " ".join(f"{r:.2f}" for r in reference)
        + f" (mean {sum(reference) / len(reference):.2f})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**rows, "real_images_own_mean_rate": reference}, f, indent=2)


if __name__ == "__main__":
    main()
