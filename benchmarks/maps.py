"""Can a person read the maps? Fidelity and the observers' readings, before and after refinement.

    OMP_NUM_THREADS=1 python benchmarks/maps.py --model fmnist-cnn --seeds 0,1,2 --json maps.json
    OMP_NUM_THREADS=1 python benchmarks/maps.py --model unseen-mobile --seeds 0,1,2
    OMP_NUM_THREADS=1 python benchmarks/maps.py --model fmnist-cnn --seeds 0 --steps 200 --refine-steps 50 \\
        --set refine_sigma=2 --label sigma2        # a variant, at reduced steps while exploring

For each seed it computes the ten class maps at the API's defaults (or as changed by ``--set``),
writes the displayed maps as PNGs exactly as the tool does (before refinement: the unrefined map
scaled the same way), reads the PNGs back, and reports per stage (``raw`` = before refinement,
``final`` = after):

- ``fool``: mean test fooling rate, the share of the 10,000 Fashion-MNIST test images the model
  assigns to each class once its map is added (clipped); ``min``: the weakest class;
- ``rms``: the largest map RMS as a fraction of the pixel range;
Each display named by ``--displays`` is read from the same maps (PNG written, read back):

- ``robust``: how many of the ten PNGs the adversarially trained judge reads as their class;
- ``mlp``, ``pool``, ``gap``: the same for each ordinary judge of the panel; ``all``: how many
  PNGs every judge (robust and panel) reads as their class;
- ``low``: the mean share of a PNG's energy (mean removed) below 0.125 cycles per pixel
  (periods longer than 8 pixels).

Then the mean over seeds, with the smallest and largest seed beside the judges' counts.
The observers are in benchmarks/observers.py (weights by scripts/train_judges.py); none of them
is used by the method. Yardstick lines give the judges' accuracy on the real test images.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from observers import PANEL, load_observer, low_frequency_share, read_png, readings  # noqa: E402

from agnostic_saliency import InputAgnosticSaliency, load_model  # noqa: E402
from agnostic_saliency.concepts import concept_matrix  # noqa: E402
from agnostic_saliency.data import load_fashion_mnist  # noqa: E402
from agnostic_saliency.method.scale import DEFAULT_SCALING, SCALINGS  # noqa: E402
from agnostic_saliency.metrics.fidelity import fooling_statistics  # noqa: E402
from agnostic_saliency.render.images import save_png  # noqa: E402

JUDGES = ("robust", *PANEL)
SHORT = {"robust": "robust", "panel-mlp": "mlp", "panel-pool": "pool", "panel-gap": "gap"}


def as_written(displayed: torch.Tensor, folder: Path, prefix: str) -> torch.Tensor:
    """The displayed maps after a round trip through PNG files written as the tool writes them
    (8-bit grey, enlarged 4x with nearest pixels)."""
    pictures = []
    for k, picture in enumerate(displayed):
        path = folder / f"{prefix}_{k:03d}.png"
        save_png(picture, path, upscale=max(1, 112 // displayed.shape[-2]))
        pictures.append(read_png(path, displayed.shape[-1]))
    return torch.stack(pictures)


@torch.no_grad()
def fidelity(model, maps, test_x) -> dict:
    """Test fooling of each class map on the real test images, and the largest RMS."""
    matrix = concept_matrix([[k] for k in range(len(maps))], 10, maps.device)
    fooling, _ = fooling_statistics(model, maps, test_x, matrix, 0.0, 1.0)
    return {"fool": sum(fooling) / len(fooling), "min": min(fooling), "per_class_fool": fooling,
            "rms": float(maps.flatten(1).pow(2).mean(1).sqrt().max())}


def observe(pictures, judges) -> dict:
    """Each judge's reading of the ten pictures, how many every judge reads, the spectral figure."""
    row, every = {}, [True] * len(pictures)
    for name, judge in judges.items():
        labels = readings(judge, pictures)
        reads = [label == k for k, label in enumerate(labels)]
        every = [a and b for a, b in zip(every, reads)]
        row[SHORT[name]] = sum(reads)
        row[f"{SHORT[name]}_labels"] = labels
    row["all"] = sum(every)
    row["low"] = sum(low_frequency_share(pictures)) / len(pictures)
    return row


def parse_settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn",
                        help="a built-in model, unseen-mobile or unseen-residual (benchmarks/judges)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, help="nudging steps (default: the API's)")
    parser.add_argument("--refine-steps", type=int, help="refinement steps (default: the API's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other attribute() settings")
    parser.add_argument("--label", default="default")
    parser.add_argument("--pictures", help="folder for before/after grids per seed")
    parser.add_argument("--json", help="append the figures to this JSON-lines file")
    parser.add_argument("--maps-dir", help="keep each seed's maps here and reuse them when present "
                        "(so the observers can be changed without recomputing)")
    parser.add_argument("--displays", help="comma-separated displays to read the maps in "
                        f"({', '.join(SCALINGS)}; default: the one the settings use)")
    parser.add_argument("--test-images", type=int, default=10000, help="test images for fooling (default all)")
    parser.add_argument("--compute-only", action="store_true", help="only compute and keep the maps (--maps-dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = load_model("fmnist-cnn", input_shape=(1, 28, 28))
    if args.model.startswith("unseen-"):
        model, spec, names = load_observer(args.model), reference.spec, reference.class_names
    else:
        loaded = load_model(args.model, input_shape=(1, 28, 28))
        model, spec, names = loaded.model.eval(), loaded.spec, loaded.class_names
    judges = {} if args.compute_only else {name: load_observer(name) for name in JUDGES}
    test_x, test_y = load_fashion_mnist("test")
    test_x, test_y = test_x[: args.test_images], test_y[: args.test_images]
    settings = parse_settings(args.set)
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.refine_steps is not None:
        settings["refine_steps"] = args.refine_steps
    displays = (args.displays or settings.get("display", DEFAULT_SCALING)).split(",")
    explainer = InputAgnosticSaliency(model, spec, names)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        kept = Path(args.maps_dir) / f"{args.model}_{args.label}_seed{seed}.safetensors" if args.maps_dir else None
        if kept is not None and kept.exists():
            stored, meta = load_file(str(kept)), safe_open(str(kept), "pt").metadata()
            unrefined, maps = stored["unrefined_maps"], stored["maps"]
            seconds, refined = float(meta["seconds"]), int(meta["refined"])
        else:
            start = time.perf_counter()
            result = explainer.attribute(targets="all", seed=seed, progress=False, **settings)
            seconds = time.perf_counter() - start
            unrefined, maps, refined = result.unrefined_maps, result.maps, sum(result.refined)
            if kept is not None:
                kept.parent.mkdir(parents=True, exist_ok=True)
                save_file({"unrefined_maps": unrefined.contiguous(), "maps": maps.clone().contiguous()}, str(kept),
                          metadata={"seconds": str(seconds), "refined": str(refined), "settings": json.dumps(settings)})
        print(f"seed {seed} done in {seconds:.0f} s", file=sys.stderr, flush=True)
        if args.compute_only:
            continue
        # The display is recomputed from the kept maps, as the engine computes it, so that displays
        # can be compared on the same maps; both stages are scaled the same way.
        run = {"seed": seed, "seconds": seconds, "refined": refined}
        for stage, stage_maps in (("raw", unrefined), ("final", maps)):
            run[stage] = fidelity(model, stage_maps, test_x)
            for display in displays:
                with tempfile.TemporaryDirectory() as tmp:
                    pictures = as_written(SCALINGS[display](stage_maps), Path(tmp), stage)
                run[stage][display] = observe(pictures, judges)
                if args.pictures:
                    from agnostic_saliency.render.images import save_grid

                    folder = Path(args.pictures)
                    folder.mkdir(parents=True, exist_ok=True)
                    robust = run[stage][display]["robust_labels"]
                    labels = [f"{n[:9]} R{names[robust[k]][:5]}" for k, n in enumerate(names)]
                    save_grid(pictures, labels, folder / f"{args.model}_{args.label}_{display}_seed{seed}_{stage}.png")
        runs.append(run)
    if args.compute_only:
        return
    columns = ("fool", "min", "rms", "robust", "mlp", "pool", "gap", "all", "low")
    for display in displays:
        print(f"model {args.model}, {args.label}: {json.dumps(settings)}, display {display}, seeds {args.seeds}")
        print(f"{'stage':<6} {'seed':>4} " + " ".join(f"{c:>6}" for c in columns))
        for stage in ("raw", "final"):
            rows = [{**run[stage], **run[stage][display]} for run in runs]
            for run, row in zip(runs, rows):
                print(f"{stage:<6} {run['seed']:>4} " + " ".join(
                    f"{row[c]:>6.3f}" if isinstance(row[c], float) else f"{row[c]:>6}" for c in columns))
            mean = {c: sum(row[c] for row in rows) / len(rows) for c in columns}
            print(f"{stage:<6} {'mean':>4} " + " ".join(f"{mean[c]:>6.3f}" for c in columns))
            print(f"{stage:<6} {'span':>4} " + " ".join(
                f"{min(row[c] for row in rows):>3g}-{max(row[c] for row in rows):<2g}"
                if c in SHORT.values() or c == "all" else f"{'':>6}" for c in columns))
    with torch.no_grad():
        yard = {SHORT[n]: float((judge(test_x).argmax(1) == test_y).float().mean()) for n, judge in judges.items()}
    print("yardstick, judges' accuracy on the real test images: " + ", ".join(f"{k} {v:.3f}" for k, v in yard.items()))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"model": args.model, "label": args.label, "settings": settings, "runs": runs,
                                "judges_test_accuracy": yard}) + "\n")


if __name__ == "__main__":
    main()
