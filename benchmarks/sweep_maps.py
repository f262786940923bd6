"""Parameter sweep that chose the map defaults: every combination of distribution, random shift,
gradient smoothing and step size, scored on Fashion-MNIST.

    python benchmarks/sweep_maps.py --device cuda --out sweep.json     # about 3 minutes on one H100

Per setting it records: mean fooling rate on the 10,000 test images (map added, clipped), the
worst class's rate, the largest map RMS, how many displayed maps an independent judge
(fmnist-resnet) reads as their class, and how many maps correlate best with their own class's
mean training image.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from agnostic_saliency import InputAgnosticSaliency, load_model
from agnostic_saliency.concepts import concept_matrix
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.method.scale import minmax
from agnostic_saliency.metrics.fidelity import fooling_statistics
from agnostic_saliency.metrics.recognisability import class_means, measure_recognisability


def score(model, judge, maps, concepts, test_x, means, second=None):
    matrix = concept_matrix(concepts, 10, maps.device)
    fooling, _ = fooling_statistics(model, maps, test_x, matrix, 0.0, 1.0)
    recog = measure_recognisability(maps, minmax(maps), concepts, judge=judge, means=means.to(maps.device))
    return {
        "fool": sum(fooling) / len(fooling),
        "min_fool": min(fooling),
        "rms": float(maps.flatten(1).pow(2).mean(1).sqrt().max()),
        "judge": sum(recog.judge_reads_concept),
        "own_mean": sum(recog.correlates_with_own_class),
        "second_judge": sum(measure_recognisability(maps, minmax(maps), concepts, judge=second).judge_reads_concept)
        if second is not None
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn")
    parser.add_argument("--weights")
    parser.add_argument("--judge", default="fmnist-mlp")
    parser.add_argument("--second-judge", default="fmnist-resnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--grid", default="full", choices=("full", "small", "v2", "v3", "v4"))
    parser.add_argument("--pictures", help="folder for a grid PNG per setting")
    parser.add_argument("--out", default="sweep.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    loaded = load_model(args.model, weights=args.weights, input_shape=(1, 28, 28))
    judge = load_model(args.judge, input_shape=(1, 28, 28)).model.to(device).eval()
    second = load_model(args.second_judge, input_shape=(1, 28, 28)).model.to(device).eval()
    model = loaded.model.to(device).eval()
    test_x, _ = load_fashion_mnist("test")
    train_x, train_y = load_fashion_mnist("train")
    means = class_means(train_x, train_y, 10)
    test_x = test_x.to(device)
    explainer = InputAgnosticSaliency(model, loaded.spec, loaded.class_names)
    grid = {
        "distribution": ["uniform-flat", "uniform", "dark", "dark2", "dark2+uniform"],
        "max_shift": [0, 2, 4],
        "smoothing": [0.0, 1.0, 2.0],
        "step_size": [0.01, 0.03],
    }
    if args.grid == "small":
        grid = {"distribution": ["uniform", "dark2"], "max_shift": [0, 3], "smoothing": [0.0, 1.0], "step_size": [0.01]}
    settings_list = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if args.grid == "v2":
        base = dict(distribution="dark2+uniform", normalize_samples=True, budget=0.25, max_shift=2)
        changes = [
            {},
            {"frequency_decay": 0.5},
            {"frequency_decay": 1.0},
            {"frequency_decay": 1.5},
            {"frequency_decay": 2.0},
            {"distribution": "dark3"},
            {"distribution": "uniform"},
            {"distribution": "dark2"},
            {"max_scale": 0.1, "max_rotation": 10},
            {"frequency_decay": 1.0, "max_scale": 0.1, "max_rotation": 10},
            {"batch_size": 64},
            {"budget": 0.2},
            {"max_shift": 0},
            {"distribution": "dark3+uniform", "frequency_decay": 1.0},
            {"smoothing": 0.5},
            {"normalize_samples": False},
        ]
        settings_list = [{**base, **change} for change in changes]
    if args.grid == "v3":
        base = dict(distribution="dark2+uniform", normalize_samples=True, budget=0.25, max_shift=2)
        changes = [
            {"diversity_scale": 0.15, "diversity_shift": 2},
            {"diversity_scale": 0.3, "diversity_shift": 3},
            {"diversity_scale": 0.3, "diversity_shift": 3, "frequency_decay": 0.5},
            {"diversity_scale": 0.3, "diversity_shift": 3, "distribution": "dark2"},
            {"diversity_scale": 0.5, "diversity_shift": 4},
            {"diversity_scale": 0.3, "diversity_shift": 3, "max_shift": 0},
            {"diversity_scale": 0.3, "diversity_shift": 3, "max_scale": 0.1, "max_rotation": 10},
            {"diversity_scale": 0.3, "diversity_shift": 3, "smoothing": 0.5},
            {"diversity_scale": 0.3, "diversity_shift": 3, "step_size": 0.02},
            {"diversity_scale": 0.3, "diversity_shift": 3, "distribution": "dark3"},
        ]
        settings_list = [{**base, **change} for change in changes]
    if args.grid == "v4":
        base = dict(distribution="dark2+uniform", normalize_samples=True, budget=0.25, max_shift=2)
        changes = [
            {},
            {"diversity_scale": 0.3, "diversity_shift": 3},
            {"distribution": "dark2", "diversity_scale": 0.3, "diversity_shift": 3},
            {"distribution": "dark3", "diversity_scale": 0.3, "diversity_shift": 3},
            {"frequency_decay": 0.5},
            {"frequency_decay": 1.0},
            {"distribution": "dark2", "frequency_decay": 1.0},
            {"smoothing": 0.5},
            {"batch_size": 64},
            {"distribution": "dark3"},
            {"distribution": "dark2"},
            {"distribution": "uniform"},
            {"distribution": "uniform-flat", "normalize_samples": False},
            {"distribution": "dark2+uniform", "max_shift": 0},
        ]
        settings_list = [{**base, **change} for change in changes]
    rows = []
    for index, settings in enumerate(settings_list):
        start = time.perf_counter()
        result = explainer.attribute(steps=args.steps, refine_steps=100, progress=False, **settings)
        seconds = time.perf_counter() - start
        row = {
            **settings,
            "seconds": seconds,
            "raw": score(model, judge, result.unrefined_maps.to(device), result.concepts, test_x, means, second),
            "final": score(model, judge, result.maps.to(device), result.concepts, test_x, means, second),
            "refined": sum(result.refined),
        }
        rows.append(row)
        if args.pictures:
            from pathlib import Path

            from agnostic_saliency.render.images import save_grid

            Path(args.pictures).mkdir(parents=True, exist_ok=True)
            save_grid(minmax(result.unrefined_maps), result.names, f"{args.pictures}/{index:02d}_raw.png")
            save_grid(result.displayed, result.names, f"{args.pictures}/{index:02d}_final.png")
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
