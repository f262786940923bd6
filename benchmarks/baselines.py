"""Our input-agnostic maps against the data-free baseline users would pick instead: activation
maximisation (AM) in the style of Lucid/Lucent, at the same budget.

    python benchmarks/baselines.py --model fmnist-cnn --real fashion-mnist \\
        --judge fmnist-mlp --judge fmnist-resnet --json benchmarks/results/baselines_fmnist-cnn.json
    python benchmarks/baselines.py --model examples/fmnist_lenet.py:build \\
        --weights tests/fixtures/population/lenet-clean-0.safetensors --real fashion-mnist \\
        --judge fmnist-mlp --judge fmnist-resnet
    python benchmarks/baselines.py --model examples/cifar10_keras.py:build \\
        --weights artifacts/cifar10/cifar10_keras.safetensors --value-range 0,255 \\
        --maps runs/cifar10 --real skimage

Methods, one picture per class each:

- ``ours``: the default maps (``InputAgnosticSaliency.attribute``), or those of an earlier
  ``agnostic-saliency map`` run (``--maps DIR``: its ``maps.safetensors`` and seconds);
- ``am-plain``: gradient ascent on the class logit in pixel space, no transforms;
- ``am-robust``: the same with Lucid's jitter/scale/rotation robustness;
- ``am-fourier``: robustness and the decorrelated Fourier parameterisation (Lucid's default);
- ``lucent``: Lucent itself (``torch-lucent``), when it is installed.

The budget: an AM picture is an image, not a perturbation, so each is turned into a pattern to
add to inputs (its deviation from its mean grey level) scaled to the RMS of our map of the same
class, which sits on its l2 budget: both are then compared at equal energy added to the same
inputs, and the pictures shown are unchanged (min-max scaled either way).

Figures per method, over all classes: the fooling rate (share of inputs the model assigns to the
class once the pattern is added, clipped to the range) on fresh samples of the maps'
distribution and on real images (``--real fashion-mnist``: the 10,000 test images;
``--real skimage``: random crops of scikit-image's colour pictures, natural but not CIFAR-10);
how many displayed pictures the model itself reads as their class; how many each judge reads
as their class (``--judge SPEC [--judge-weights FILE]``, repeatable, in order); the seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from agnostic_saliency import InputAgnosticSaliency, load_model
from agnostic_saliency.baselines.activation_max import (
    NO_ROBUSTNESS,
    activation_maximisation,
    as_budget_maps,
    lucent_maximisation,
)
from agnostic_saliency.concepts import concept_matrix
from agnostic_saliency.method.distributions import DEFAULT_DISTRIBUTION, make_distribution
from agnostic_saliency.method.project import rms
from agnostic_saliency.method.scale import minmax
from agnostic_saliency.metrics.fidelity import fooling_statistics, map_alone
from agnostic_saliency.metrics.recognisability import judge_reading
from agnostic_saliency.models.spec import NormalizedModel, parse_floats, parse_shape
from agnostic_saliency.render.images import save_grid

AM_VARIANTS = {
    "am-plain": dict(parameterisation="pixel", robustness=NO_ROBUSTNESS),
    "am-robust": dict(parameterisation="pixel"),
    "am-fourier": dict(parameterisation="fourier"),
}

# the colour photographs that ship inside scikit-image's wheel (others need a download)
SKIMAGE_PICTURES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)


def skimage_crops(count: int, shape, value_range, seed: int) -> torch.Tensor:
    """``count`` random square crops (a fifth to all of the shorter side) of scikit-image's
    colour pictures, resized to the input shape, in the model's range."""
    import numpy as np
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    channels, height, width = shape
    pictures = []
    for name in SKIMAGE_PICTURES:
        try:
            array = getattr(data, name)()
        except (ModuleNotFoundError, OSError):  # not in the wheel: fetching it needs pooch and a network
            continue
        array = array[0] if isinstance(array, tuple) else array
        if array.ndim == 3 and array.shape[2] >= 3:
            pictures.append(array[..., :3].astype(np.uint8))
    crops = []
    for i in range(count):
        array = pictures[i % len(pictures)]
        side = int(rng.uniform(0.2, 1.0) * min(array.shape[:2]))
        top, left = rng.integers(0, array.shape[0] - side + 1), rng.integers(0, array.shape[1] - side + 1)
        image = Image.fromarray(array[top : top + side, left : left + side]).resize((width, height), Image.BILINEAR)
        if channels == 1:
            image = image.convert("L")
        crops.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).reshape(height, width, -1))
    unit = torch.stack(crops).permute(0, 3, 1, 2)
    low, high = value_range
    return low + (high - low) * unit


def real_images(kind: str | None, spec, count: int, seed: int):
    if kind is None:
        return None
    if kind == "fashion-mnist":
        from agnostic_saliency.data import load_fashion_mnist

        images, _ = load_fashion_mnist("test")
        if count < len(images):  # a random subset, the same for every method
            images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]]
        low, high = spec.value_range
        return low + (high - low) * images
    if kind == "skimage":
        return skimage_crops(count, spec.shape, spec.value_range, seed)
    raise SystemExit(f"unknown --real {kind!r}: use fashion-mnist or skimage")


def our_maps(args, loaded) -> tuple[torch.Tensor, float, str]:
    if args.maps:
        folder = Path(args.maps)
        summary = json.loads((folder / "summary.json").read_text())
        maps = load_file(str(folder / "maps.safetensors"))["maps"]
        return maps, float(summary["seconds"]), f"{args.maps} ({summary['steps']} steps, batch {summary['batch_size']})"
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names)
    settings = {
        key: value for key, value in (("steps", args.steps), ("refine_steps", args.refine_steps)) if value is not None
    }
    result = explainer.attribute(targets="all", seed=args.seed, progress=False, **settings)
    changed = ", ".join(f"{key} {value}" for key, value in settings.items())
    return result.maps, result.seconds, f"default settings{', ' + changed if changed else ''}"


def evaluate(wrapped, maps, concepts, fresh, real, judges, low, high) -> dict:
    displayed = minmax(maps, low, high)
    row = {}
    row["fooling_fresh"], _ = fooling_statistics(wrapped, maps, fresh, concepts, low, high)
    if real is not None:
        row["fooling_real"], _ = fooling_statistics(wrapped, maps, real, concepts, low, high)
    label, _, inside = map_alone(wrapped, displayed, concepts)
    row["model_reads"] = [bool(v) for v in inside]
    concept_lists = [[k] for k in range(len(maps))]
    row["judges"] = {}
    for name, judge in judges.items():
        labels, _, reads = judge_reading(judge, displayed, concept_lists)
        row["judges"][name] = {"label": labels, "reads": reads}
    row["rms"] = rms(maps).tolist()
    return row


def am_pictures(runs: dict, cache: str | None) -> dict:
    """name -> (pictures, seconds, settings) of each AM run, read from ``cache`` (a folder) when
    an earlier run of the same settings left them there, so that the maps can be evaluated later."""
    found = {}
    for name, run in runs.items():
        tensors = Path(cache) / f"{name}.safetensors" if cache else None
        if tensors is not None and tensors.is_file():
            meta = json.loads(tensors.with_suffix(".json").read_text())
            found[name] = (load_file(str(tensors))["pictures"], meta["seconds"], meta["settings"])
            print(f"{name}: read from {tensors}", file=sys.stderr)
            continue
        start = time.perf_counter()
        result = run()
        found[name] = (result.pictures, time.perf_counter() - start, result.config)
        print(f"{name}: {found[name][1]:.1f} s", file=sys.stderr)
        if tensors is not None:
            tensors.parent.mkdir(parents=True, exist_ok=True)
            save_file({"pictures": result.pictures.contiguous()}, str(tensors))
            tensors.with_suffix(".json").write_text(json.dumps({"seconds": found[name][1], "settings": result.config}))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn")
    parser.add_argument("--weights")
    parser.add_argument("--input-shape")
    parser.add_argument("--value-range")
    parser.add_argument("--maps", help="an earlier `agnostic-saliency map` run folder holding our maps")
    parser.add_argument("--steps", type=int, help="our nudging steps (default: the method's default)")
    parser.add_argument("--refine-steps", type=int, help="our refinement steps (default: the method's default)")
    parser.add_argument("--am-steps", type=int, default=512, help="AM steps (Lucid/Lucent: 512)")
    parser.add_argument("--lucent-steps", type=int, default=512)
    parser.add_argument("--no-lucent", action="store_true")
    parser.add_argument("--am-cache", help="a folder keeping the AM pictures (and seconds) for later runs")
    parser.add_argument("--am-only", action="store_true", help="only compute (and cache) the AM pictures")
    parser.add_argument("--real", choices=["fashion-mnist", "skimage"])
    parser.add_argument(
        "--real-count",
        type=int,
        default=1000,
        help="real images: a random subset of the test set, or crops for skimage",
    )
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--judge", action="append", default=[], help="a judge model spec (repeatable)")
    parser.add_argument(
        "--judge-weights", action="append", default=[], help="weights of the judge at the same position ('-' for none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--grid", help="write a PNG: one row per method, one column per class")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    value_range = parse_floats(args.value_range, "value range") if args.value_range else None
    shape = parse_shape(args.input_shape) if args.input_shape else None
    loaded = load_model(args.model, weights=args.weights, input_shape=shape, value_range=value_range)
    spec, names = loaded.spec, loaded.class_names
    low, high = spec.value_range
    wrapped = NormalizedModel(loaded.model, spec).eval()
    judges = {}
    for i, judge_spec in enumerate(args.judge):
        weights = args.judge_weights[i] if i < len(args.judge_weights) and args.judge_weights[i] != "-" else None
        judge = load_model(judge_spec, weights=weights, input_shape=spec.shape, value_range=spec.value_range)
        judges[judge_spec] = NormalizedModel(judge.model, judge.spec).eval()
    targets = list(range(len(names)))
    concepts = concept_matrix([[k] for k in targets], len(names))
    fresh = make_distribution(DEFAULT_DISTRIBUTION, spec).sample(
        args.eval_samples, torch.Generator().manual_seed(args.seed + 7_000_001)
    )
    real = real_images(args.real, spec, args.real_count, args.seed)

    runs = {
        name: (
            lambda kw=kw: activation_maximisation(
                loaded.model, spec, targets, steps=args.am_steps, seed=args.seed, **kw
            )
        )
        for name, kw in AM_VARIANTS.items()
    }
    if not args.no_lucent:
        try:
            import lucent  # noqa: F401

            importlib.import_module(
                "torch._dynamo"
            )  # torch.optim's one-off import (~20 s here), kept out of the timing

            runs["lucent"] = lambda: lucent_maximisation(
                loaded.model, spec, targets, steps=args.lucent_steps, seed=args.seed
            )
        except ImportError:
            print("lucent: torch-lucent is not installed, skipped", file=sys.stderr)
    baselines = am_pictures(runs, args.am_cache)
    if args.am_only:
        return 0

    rows, pictures = {}, {}
    maps, seconds, source = our_maps(args, loaded)
    map_rms = rms(maps)
    rows["ours"] = {
        **evaluate(wrapped, maps, concepts, fresh, real, judges, low, high),
        "seconds": seconds,
        "source": source,
    }
    pictures["ours"] = minmax(maps, low, high)
    print(f"ours: {source}, {seconds:.1f} s", file=sys.stderr)
    for name, (images, elapsed, settings) in baselines.items():
        patterns = as_budget_maps(images, map_rms)
        rows[name] = {
            **evaluate(wrapped, patterns, concepts, fresh, real, judges, low, high),
            "seconds": elapsed,
            "settings": settings,
        }
        pictures[name] = minmax(patterns, low, high)

    judge_names = list(judges)
    print(
        f"model {args.model}, {len(names)} classes, budget: the RMS of our map of each class "
        f"(mean {float(map_rms.mean()) / spec.span:.3f} of the range), seed {args.seed}"
    )
    header = "| method | fooling, fresh samples | " + ("fooling, real images | " if real is not None else "")
    header += "model reads its picture | " + "".join(f"judge {j} | " for j in judge_names) + "seconds |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, row in rows.items():
        cells = [name, f"{sum(row['fooling_fresh']) / len(targets):.3f}"]
        if real is not None:
            cells.append(f"{sum(row['fooling_real']) / len(targets):.3f}")
        cells.append(f"{sum(row['model_reads'])}/{len(targets)}")
        cells += [f"{sum(row['judges'][j]['reads'])}/{len(targets)}" for j in judge_names]
        cells.append(f"{row['seconds']:.1f}")
        print("| " + " | ".join(cells) + " |")
    if args.grid:
        stack = torch.cat([pictures[name] for name in rows])
        labels = [name for name in rows for _ in targets]
        captions = [f"{names[k][:10]} {rows[name]['fooling_fresh'][k]:.2f}" for name in rows for k in targets]
        save_grid(stack, labels, args.grid, columns=len(targets), captions=captions, value_range=spec.value_range)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "weights": args.weights,
                    "class_names": names,
                    "real": args.real,
                    "eval_samples": args.eval_samples,
                    "seed": args.seed,
                    "judges": judge_names,
                    "methods": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
