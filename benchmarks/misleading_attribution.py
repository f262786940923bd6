"""Misleading attribution, measured: twin models, the stamped concept, and the sanity checks.

    python benchmarks/misleading_attribution.py                 # all three parts, about 15 min at 1 thread
    python benchmarks/misleading_attribution.py --parts twins   # twins, stamped, sanity (comma-separated)

Writes ``benchmarks/results/misleading_attribution_cpu.md`` (the tables), ``..._cpu.json`` (every
figure) and ``docs/misleading_attribution.png`` (one twin pair and one stamped image, every method).

*Twin models*: per architecture (``fmnist-lenet``, ``fmnist-cnn``) and trigger (a 4 px random
patch, a random blend at 0.15), a clean model and its trojaned twin, trained from the same
initialisation on the same images in the same order; only the 10% poisoned share of each batch
differs. On clean test images, each method's map of the true class is compared between the twins
(Spearman rank correlation of magnitudes, SSIM), beside how differently the twins behave (the
trigger's flip rate on each). Our map of the target class is compared between the twins too,
and its overlap with the planted trigger is measured on both.

*Stamped concept*: test images of class A that the built-in ``fmnist-cnn`` classifies correctly,
with its input-agnostic map of another class B added (clipped to the pixel range); flip rate to B,
and for the flipped images each method's attribution share on the class-A object (the pixels
where the original image is above 0.1) against the added pattern elsewhere, beside the object's
share of the image (what a uniform map would give), and the rank correlation of each method's
map with its map of the unstamped image for class A.

*Sanity*: cascading parameter randomisation (Quantus MPRT, top down) on ``fmnist-cnn`` and
``fmnist-resnet``, and data randomisation (the twins' clean CNN against the same architecture
trained on permuted labels).

No setting here was tuned on these models: the Captum settings are the documented defaults of
``agnostic_saliency.explain.methods``, our maps use the library's defaults except fewer steps
where stated (to fit the time budget).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's testbed/

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
import torch

from agnostic_saliency import load_model
from agnostic_saliency.data.fashion_mnist import load_fashion_mnist
from agnostic_saliency.explain.agnostic import compute_maps
from agnostic_saliency.explain.methods import METHODS, attribute
from agnostic_saliency.explain.sanity import (
    AGNOSTIC,
    model_similarity,
    parameter_randomisation,
    spearman,
    ssim,
)
from agnostic_saliency.method.scale import minmax
from agnostic_saliency.models.architectures import ARCHITECTURES
from agnostic_saliency.models.spec import InputSpec
from agnostic_saliency.output.explain import heatmap
from agnostic_saliency.render.images import save_grid
from testbed.training import accuracy, train_classifier
from testbed.triggers import attack_success_rate, blend_trigger, patch_trigger, poison_transform

ROOT = Path(__file__).resolve().parent.parent
SPEC = InputSpec((1, 28, 28))
CLASS_NAMES = [str(i) for i in range(10)]
PAIRS = [  # (architecture, trigger kind, target class, seed)
    ("fmnist-lenet", "patch", 0, 11),
    ("fmnist-lenet", "blend", 3, 12),
    ("fmnist-cnn", "patch", 5, 13),
    ("fmnist-cnn", "blend", 8, 14),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_trigger(kind: str, seed: int):
    if kind == "patch":
        return patch_trigger(size=4, position="bottom-right", pattern="random", seed=seed)
    return blend_trigger(alpha=0.15, pattern="random", seed=seed)


def train(arch: str, images, labels, seed: int, transform=None, epochs: int = 2):
    torch.manual_seed(seed)  # the same initial weights for both twins
    model = ARCHITECTURES[arch](num_classes=10)
    return train_classifier(
        model, images, labels, epochs=epochs, lr=3e-3, batch_size=128, seed=seed, transform=transform, progress=False
    )


def trigger_overlap(picture: torch.Tensor, trigger) -> dict:
    """How much of a (C, H, W) map sits on the planted trigger.

    Patch: the share of the map's energy inside the patch, beside the patch's share of the image
    (what a map unrelated to the trigger would give), and the share of the map's top-k pixels
    (k = patch area) that fall in the patch. Blend: the absolute correlation of the map with the
    blend pattern."""
    energy = picture.pow(2).sum(0)
    if trigger.kind == "patch":
        mask = trigger.mask > 0
        k = int(mask.sum())
        top = energy.flatten().topk(k).indices
        return {
            "energy_share": float(energy[mask].sum() / energy.sum().clamp_min(1e-12)),
            "area_share": float(mask.float().mean()),
            "top_k_hit": float(mask.flatten()[top].float().mean()),
        }
    a, b = picture.flatten().double(), trigger.pattern.flatten().double()
    return {"pattern_correlation": float(abs(torch.corrcoef(torch.stack([a, b]))[0, 1]))}


def twins(train_x, train_y, test_x, test_y, args) -> tuple[list[dict], dict]:
    subset = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[: args.train_images]
    tx, ty = train_x[subset], train_y[subset]
    rows, figure = [], {}
    for arch, kind, target, seed in PAIRS:
        started = time.perf_counter()
        trigger = make_trigger(kind, seed)
        clean = train(arch, tx, ty, seed)
        trojaned = train(arch, tx, ty, seed, transform=poison_transform(trigger, target, rate=0.1))
        keep = torch.nonzero(test_y != target)[:, 0][: args.images]
        x, y = test_x[keep], test_y[keep]
        row = {
            "arch": arch,
            "target": target,
            "seed": seed,
            "images": len(x),
            "clean_accuracy": [accuracy(clean, test_x, test_y), accuracy(trojaned, test_x, test_y)],
            "flip_rate": [attack_success_rate(m, trigger, test_x, test_y, target) for m in (clean, trojaned)],
            "trigger": trigger.describe() | {"kind": kind},
            "methods": {},
        }
        maps_clean = attribute(clean, SPEC, x, y)
        maps_trojaned = attribute(trojaned, SPEC, x, y)
        for method in METHODS:
            a, b = maps_clean[method].abs().numpy(), maps_trojaned[method].abs().numpy()
            row["methods"][method] = {
                "spearman": float(np.mean([spearman(p, q) for p, q in zip(a, b)])),
                "ssim": float(np.mean([ssim(p, q, (28, 28)) for p, q in zip(a, b)])),
            }
        ours = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            for name, model in (("clean", clean), ("trojaned", trojaned)):
                maps, fooling = compute_maps(
                    model, SPEC, CLASS_NAMES, [target], steps=args.steps, seed=0, progress=False
                )
                ours[name] = maps[target]
                row[f"agnostic_fooling_{name}"] = fooling[target]
        a, b = ours["clean"].abs().sum(0).numpy(), ours["trojaned"].abs().sum(0).numpy()
        row["methods"][AGNOSTIC] = {"spearman": spearman(a, b), "ssim": ssim(a, b, (28, 28))}
        row["trigger_overlap"] = {name: trigger_overlap(m, trigger) for name, m in ours.items()}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        log(
            f"twins {arch} {kind}: flip {row['flip_rate']}, "
            + ", ".join(f"{m} {v['spearman']:.2f}" for m, v in row["methods"].items())
            + f", overlap {row['trigger_overlap']}"
        )
        if not figure:
            stamped = trigger.stamp(x[:1])
            figure = {
                "image": x[0],
                "stamped": stamped[0],
                "clean": {m: maps_clean[m][0] for m in METHODS},
                "trojaned": {m: maps_trojaned[m][0] for m in METHODS},
                "ours": ours,
                "label": f"{arch} {kind}",
            }
    return rows, figure


def stamped_concept(test_x, test_y, args) -> tuple[dict, dict]:
    loaded = load_model("fmnist-cnn")
    model = loaded.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        maps, fooling = compute_maps(
            model, loaded.spec, loaded.class_names, list(range(10)), steps=args.steps, seed=0, progress=False
        )
    with torch.no_grad():
        correct = model(test_x).argmax(1) == test_y
    generator = torch.Generator().manual_seed(1)
    index = torch.nonzero(correct)[:, 0]
    index = index[torch.randperm(len(index), generator=generator)[: args.images]]
    x, a_labels = test_x[index], test_y[index]
    b_labels = (a_labels + torch.randint(1, 10, (len(x),), generator=generator)) % 10
    added = torch.stack([maps[int(b)] for b in b_labels])
    stamped = (x + added).clamp(0, 1)
    with torch.no_grad():
        predicted = model(stamped).argmax(1)
    flipped = predicted == b_labels
    obj = x[:, 0] > 0.1
    result = {
        "pairs": len(x),
        "flip_rate": float(flipped.float().mean()),
        "map_rms": float(torch.stack(list(maps.values())).pow(2).mean().sqrt()),
        "object_area_share": float(obj[flipped].float().mean()),
        "agnostic_fooling_fresh": {loaded.class_names[c]: f for c, f in fooling.items()},
        "methods": {},
    }
    xs, ss, aa, bb, om = x[flipped], stamped[flipped], a_labels[flipped], b_labels[flipped], obj[flipped]
    before = attribute(model, loaded.spec, xs, aa)
    after = attribute(model, loaded.spec, ss, bb)
    for method in METHODS:
        magnitude = after[method].abs()
        total = magnitude.flatten(1).sum(1).clamp_min(1e-12)
        on_object = (magnitude * om).flatten(1).sum(1) / total
        result["methods"][method] = {
            "object_share": float(on_object.mean()),
            "pattern_share": float((1 - on_object).mean()),
            "spearman_to_class_a_map": float(
                np.mean([spearman(p, q) for p, q in zip(before[method].abs().numpy(), magnitude.numpy())])
            ),
        }
    log(
        f"stamped: flip {result['flip_rate']:.3f}, "
        + ", ".join(f"{m} object {v['object_share']:.2f}" for m, v in result["methods"].items())
    )
    figure = {
        "image": xs[0],
        "stamped": ss[0],
        "after": {m: after[m][0] for m in METHODS},
        "added": maps[int(bb[0])],
        "a": loaded.class_names[int(aa[0])],
        "b": loaded.class_names[int(bb[0])],
    }
    return result, figure


def sanity(test_x, test_y, twin_clean_images, args) -> dict:
    out = {"parameter_randomisation": {}, "data_randomisation": None}
    classes = (0, 7)  # t-shirt/top, sneaker
    index = torch.cat([torch.nonzero(test_y == c)[: args.sanity_images, 0] for c in classes])
    settings = dict(steps=args.sanity_steps, refine=False, eval_samples=64, progress=False, seed=0)
    for spec_name in ("fmnist-cnn", "fmnist-resnet"):
        loaded = load_model(spec_name)
        started = time.perf_counter()
        scores = parameter_randomisation(
            loaded.model, loaded.spec, loaded.class_names, test_x[index], test_y[index], agnostic_settings=settings
        )
        out["parameter_randomisation"][spec_name] = {"scores": scores, "seconds": time.perf_counter() - started}
        log(
            f"sanity {spec_name}: "
            + ", ".join(f"{m} top {list(s['spearman'].values())[1]:.2f}" for m, s in scores.items())
        )
    if twin_clean_images is not None:
        tx, ty, trained = twin_clean_images
        permuted = ty[torch.randperm(len(ty), generator=torch.Generator().manual_seed(5))]
        random_labels = train("fmnist-cnn", tx, permuted, seed=13, epochs=2)
        out["data_randomisation"] = {
            "arch": "fmnist-cnn",
            "random_label_accuracy": accuracy(random_labels, test_x, test_y),
            "scores": model_similarity(
                trained, random_labels, SPEC, CLASS_NAMES, test_x[index], test_y[index], agnostic_settings=settings
            ),
        }
        log(f"data randomisation: {out['data_randomisation']}")
    return out


def seed_floor(args) -> dict:
    """How similar our maps of the same trained model are across two seeds: the floor below which
    a randomised model's map cannot be told apart from a re-drawn one (SmoothGrad's "original"
    column plays the same part for its noise)."""
    loaded = load_model("fmnist-cnn")
    out = {}
    for steps, refine in ((args.sanity_steps, False), (args.steps, True)):
        maps = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            for seed in (0, 1):
                found, _ = compute_maps(
                    loaded.model,
                    loaded.spec,
                    loaded.class_names,
                    [0, 7],
                    steps=steps,
                    refine=refine,
                    seed=seed,
                    progress=False,
                )
                maps.append(found)
        out[f"{steps} steps{'' if refine else ', no refinement'}"] = {
            loaded.class_names[c]: {
                "spearman": spearman(maps[0][c].abs().sum(0).numpy(), maps[1][c].abs().sum(0).numpy()),
                "ssim": ssim(maps[0][c].abs().sum(0).numpy(), maps[1][c].abs().sum(0).numpy(), (28, 28)),
            }
            for c in (0, 7)
        }
    log(f"seed floor: {out}")
    return out


def _fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [
        f"# Misleading attribution ({results['machine']})",
        "",
        f"Command: `{results['command']}`; {results['date']}, commit {results['commit']}, "
        f"{results['seconds']:.0f} s at {results['threads']} thread(s).",
        "",
    ]
    methods = [*METHODS, AGNOSTIC]
    if "twins" in results:
        lines += [
            "## Twin models",
            "",
            f"Clean test images whose label is not the target: {results['twins'][0]['images']} per pair. "
            "Map similarity between the twins: mean Spearman rank correlation of map magnitudes "
            "(SSIM in brackets), each image explained for its true class; for our map, the target "
            "class's map of each twin. Flip rate: share of those images the trigger sends to the target.",
            "",
            "| twins | clean acc. | flip rate clean / trojaned | "
            + " | ".join(methods)
            + " | our target map on the trigger: clean / trojaned twin |",
            "|---|---|---|" + "---|" * len(methods) + "---|",
        ]
        for row in results["twins"]:
            overlap = row["trigger_overlap"]
            if row["trigger"]["kind"] == "patch":
                cell = (
                    f"energy in patch {_fmt(overlap['clean']['energy_share'])} / "
                    f"**{_fmt(overlap['trojaned']['energy_share'])}** (area {_fmt(overlap['clean']['area_share'])}); "
                    f"top-16 hits {_fmt(overlap['clean']['top_k_hit'])} / **{_fmt(overlap['trojaned']['top_k_hit'])}**"
                )
            else:
                cell = (
                    f"correlation with pattern {_fmt(overlap['clean']['pattern_correlation'])} / "
                    f"**{_fmt(overlap['trojaned']['pattern_correlation'])}**"
                )
            lines.append(
                f"| {row['arch']} {row['trigger']['kind']} (target {row['target']}) | "
                f"{_fmt(row['clean_accuracy'][0], 3)} / {_fmt(row['clean_accuracy'][1], 3)} | "
                f"{_fmt(row['flip_rate'][0], 3)} / {_fmt(row['flip_rate'][1], 3)} | "
                + " | ".join(
                    f"{_fmt(row['methods'][m]['spearman'])} ({_fmt(row['methods'][m]['ssim'])})" for m in methods
                )
                + f" | {cell} |"
            )
        lines.append("")
    if "stamped" in results:
        s = results["stamped"]
        lines += [
            "## Stamped concept (fmnist-cnn)",
            "",
            f"{s['pairs']} test images of class A (classified correctly) plus the input-agnostic map of a "
            f"random other class B (RMS {s['map_rms']:.3f} of the pixel range, clipped to [0, 1]). "
            f"**Flip rate to B: {s['flip_rate']:.3f}.** On the flipped images, each method explains "
            f"the predicted class B: the share of its attribution on the class-A object (pixels above 0.1 "
            f"in the original image, {s['object_area_share']:.2f} of the image) against the added pattern "
            f"elsewhere, and the rank correlation with the same method's map of the unstamped image for A.",
            "",
            "| method | share on the class-A object | share on the added pattern | rank corr. with its class-A map |",
            "|---|---|---|---|",
        ]
        for method, v in s["methods"].items():
            lines.append(
                f"| {method} | {_fmt(v['object_share'])} | {_fmt(v['pattern_share'])} | "
                f"{_fmt(v['spearman_to_class_a_map'])} |"
            )
        lines.append("")
    if "sanity" in results:
        lines += [
            "## Sanity checks: cascading parameter randomisation",
            "",
            "Mean Spearman rank correlation between the map of the trained model and the map once the "
            "layers down to the named one are re-initialised (top first; Quantus MPRT), then the "
            "same with SSIM. Our maps here: "
            f"{results['settings']['sanity_steps']} steps, no refinement; "
            f"{2 * results['settings']['sanity_images']} test images (classes 0 and 7).",
            "",
        ]
        for name, entry in results["sanity"]["parameter_randomisation"].items():
            scores = entry["scores"]
            layers = list(next(iter(scores.values()))["spearman"])
            lines += [
                f"**{name}** ({entry['seconds']:.0f} s)",
                "",
                "| method | " + " | ".join(layers) + " |",
                "|---|" + "---|" * len(layers),
            ]
            for method, s in scores.items():
                lines.append(f"| {method} | " + " | ".join(_fmt(s["spearman"][layer]) for layer in layers) + " |")
            for method, s in scores.items():
                lines.append(f"| {method} (SSIM) | " + " | ".join(_fmt(s["ssim"][layer]) for layer in layers) + " |")
            lines.append("")
        data = results["sanity"].get("data_randomisation")
        if data:
            lines += [
                "## Sanity checks: data randomisation",
                "",
                f"fmnist-cnn trained on true labels against the same architecture, seed and images trained on "
                f"permuted labels (test accuracy {data['random_label_accuracy']:.3f}): mean Spearman (SSIM).",
                "",
                "| " + " | ".join(data["scores"]) + " |",
                "|" + "---|" * len(data["scores"]),
                "| " + " | ".join(f"{_fmt(v['spearman'])} ({_fmt(v['ssim'])})" for v in data["scores"].values()) + " |",
                "",
            ]
    if "seed_floor" in results:
        lines += [
            "## Our maps across seeds (fmnist-cnn)",
            "",
            "Spearman (SSIM) between the maps of the trained model drawn with seed 0 and seed 1: the "
            "similarity a map keeps when nothing about the model changes.",
            "",
            "| our map | " + " | ".join(next(iter(results["seed_floor"].values()))) + " |",
            "|---|" + "---|" * len(next(iter(results["seed_floor"].values()))),
        ]
        for setting, per_class in results["seed_floor"].items():
            lines.append(
                f"| {setting} | "
                + " | ".join(f"{_fmt(v['spearman'])} ({_fmt(v['ssim'])})" for v in per_class.values())
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def save_figure(twin_figure: dict, stamped_figure: dict, path: Path) -> None:
    tiles, labels = [], []

    def grey(picture):
        return picture.expand(3, 28, 28)

    if twin_figure:
        for name in ("clean", "trojaned"):
            tiles.append(grey(twin_figure["image"]))
            labels.append(f"{name} twin")
            tiles += [heatmap(twin_figure[name][m]) for m in METHODS]
            labels += list(METHODS)
            tiles.append(grey(minmax(twin_figure["ours"][name][None])[0]))
            labels.append("ours: target")
    if stamped_figure:
        tiles.append(grey(stamped_figure["stamped"]))
        labels.append(f"{stamped_figure['a']}+{stamped_figure['b']}")
        tiles += [heatmap(stamped_figure["after"][m]) for m in METHODS]
        labels += list(METHODS)
        tiles.append(grey(minmax(stamped_figure["added"][None])[0]))
        labels.append("added map")
    if tiles:
        save_grid(torch.stack(tiles), labels, path, columns=len(METHODS) + 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="twins,stamped,sanity")
    parser.add_argument("--images", type=int, default=500, help="clean test images per twin pair, stamped pairs")
    parser.add_argument("--train-images", type=int, default=20000, help="training images per twin")
    parser.add_argument("--steps", type=int, default=300, help="nudging steps of our maps (library default 600)")
    parser.add_argument("--sanity-steps", type=int, default=60, help="nudging steps of our maps in the sanity test")
    parser.add_argument(
        "--sanity-images", type=int, default=3, help="test images per class (2 classes) in the sanity test"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/misleading_attribution_cpu"))
    parser.add_argument("--figure", default=str(ROOT / "docs/misleading_attribution.png"))
    parser.add_argument("--tables-only", action="store_true", help="rewrite the Markdown from the JSON file")
    args = parser.parse_args()
    if args.tables_only:
        results = json.loads(Path(args.out).with_suffix(".json").read_text())
        Path(args.out).with_suffix(".md").write_text(markdown(results) + "\n")
        print(markdown(results))
        return 0
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip()
    results = {
        "command": "python benchmarks/misleading_attribution.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "threads": args.threads,
        "machine": f"CPU, {platform.processor() or platform.machine()}, torch {torch.__version__}",
        "settings": vars(args),
    }
    twin_figure = stamped_figure = None
    twin_clean = None
    if "twins" in parts:
        results["twins"], twin_figure = twins(train_x, train_y, test_x, test_y, args)
    if "stamped" in parts:
        results["stamped"], stamped_figure = stamped_concept(test_x, test_y, args)
    if "sanity" in parts:
        subset = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[: args.train_images]
        trained = train("fmnist-cnn", train_x[subset], train_y[subset], seed=13)
        twin_clean = (train_x[subset], train_y[subset], trained)
        results["sanity"] = sanity(test_x, test_y, twin_clean, args)
    if "seeds" in parts:
        results["seed_floor"] = seed_floor(args)
    results["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results) + "\n")
    if twin_figure or stamped_figure:
        save_figure(twin_figure, stamped_figure, Path(args.figure))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
