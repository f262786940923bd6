"""Are the default budget, step size and steps sensible at 224x224? The same model at two sizes.

    python benchmarks/size_independence.py --json benchmarks/results/maps_size_independence_fmnist-cnn_cpu.json

No ImageNet weights can be downloaded here, so the check uses a trained model at two input sizes:
`fmnist-cnn` as it is (1x28x28) and the same network behind an 8x area downsampling, so that it
takes 1x224x224 inputs and reads exactly what the 28x28 network reads of their 8x8 block means.
Both get the default settings (budget 0.25 RMS of the pixel range, step 0.01 of the range, 600
nudge steps and 100 refinement steps) at the same seeds. Printed per size: the mean fooling rate on
the 10,000 test images (upscaled 8x, nearest, for 224x224), on fresh samples, the maps' RMS, the
step at which the maps first reach the budget (how much of the 600 steps moving inside the
budget gets), and seconds. The budget is an RMS over pixels and the step a per-pixel size, so
neither depends on the pixel count; the figures say whether the outcome does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from agnostic_saliency import InputAgnosticSaliency, load_model
from agnostic_saliency.concepts import concept_matrix
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.metrics.fidelity import fooling_statistics
from agnostic_saliency.models.spec import InputSpec, NormalizedModel

FACTOR = 8  # 28 x 8 = 224


class Downsampled(nn.Module):
    """A 28x28 network that takes 224x224 inputs: 8x8 block means, then the network."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(F.avg_pool2d(x, FACTOR))


def first_step_at_budget(explainer: InputAgnosticSaliency, settings: dict, seed: int) -> int | None:
    """Nudge steps until every map's RMS first reaches 99% of the budget (a short run of its own)."""
    from agnostic_saliency.method.project import rms

    for steps in (5, 10, 20, 40, 80, 160):
        result = explainer.attribute(
            "all", seed=seed, progress=False, refine=False, eval_samples=8, **dict(settings, steps=steps)
        )
        if float(rms(result.maps).min()) >= 0.99 * settings.get("budget", 0.25):
            return steps
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="attribute() settings")
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    loaded = load_model("fmnist-cnn")
    test_x, test_y = load_fashion_mnist("test")
    test_x = test_x[: args.test_images]
    sizes = {
        28: (loaded.model, loaded.spec, test_x),
        224: (
            Downsampled(loaded.model).eval(),
            InputSpec((1, 28 * FACTOR, 28 * FACTOR), loaded.spec.value_range, loaded.spec.mean, loaded.spec.std),
            None,
        ),
    }
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for size, (model, spec, images) in sizes.items():
            explainer = InputAgnosticSaliency(model, spec, loaded.class_names)
            start = time.perf_counter()
            result = explainer.attribute("all", seed=seed, progress=False, **settings)
            seconds = time.perf_counter() - start
            wrapped = NormalizedModel(model, spec).eval()
            concepts = concept_matrix(result.concepts, 10, "cpu")
            fooling = []
            for first in range(0, len(test_x), 1000):  # upscaled lazily: 10,000 at 224x224 are 2 GB
                part = test_x[first : first + 1000]
                if images is None:
                    part = F.interpolate(part, scale_factor=FACTOR, mode="nearest")
                rate, _ = fooling_statistics(wrapped, result.maps, part, concepts, *spec.value_range)
                fooling.append(torch.tensor(rate) * len(part))
            test_fooling = (torch.stack(fooling).sum(0) / len(test_x)).tolist()
            row = {
                "seed": seed,
                "size": size,
                "test_fooling": sum(test_fooling) / 10,
                "test_fooling_min": min(test_fooling),
                "fresh_fooling": sum(result.fidelity.fooling_rate) / 10,
                "rms_max": float(result.maps.flatten(1).pow(2).mean(1).sqrt().max()),
                "steps_to_budget": first_step_at_budget(explainer, settings, seed),
                "seconds": seconds,
            }
            rows.append(row)
            print(
                f"seed {seed} {size}x{size}: test fooling {row['test_fooling']:.3f} "
                f"(min {row['test_fooling_min']:.3f}), "
                f"fresh {row['fresh_fooling']:.3f}, RMS {row['rms_max']:.3f}, budget reached by step "
                f"{row['steps_to_budget']}, {seconds:.0f} s",
                flush=True,
            )
    if args.json:
        record = {"command": " ".join(["python", "benchmarks/size_independence.py", *sys.argv[1:]]), "rows": rows}
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
