"""Does a trojaned model care where its trigger is? The true trigger moved to every place.

    OMP_NUM_THREADS=1 python benchmarks/trigger_placement.py --population artifacts/population-fresh

For each trojaned model with a local trigger (a patch, sign or line), the true trigger's mask and
pattern are rolled together to every offset that keeps them inside the image (every second one
in each direction by default, ``--stride``), and stamped on the first 500 test images of the other
classes; the figure is the attack success at each place. Reported per model: the success at the
trained place, the share of places where it is at least 0.8 (the scan's flip bar), and the median
over places. A model that flips at most places has no trained place to find: a data-free scan
sees only what the model encodes, so the overlap (Jaccard) of a recovered trigger with the
trained place measures the model there, not the scan. Nothing here reads a scan's output or
chooses a setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agnostic_saliency.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from testbed.population import population_models  # noqa: E402
from testbed.triggers import Trigger, attack_success_rate  # noqa: E402

FLIP = 0.8  # the flip rate the scan asks of a trigger (FitConfig.required)


def placement_success(model, mask, pattern, images, labels, target, stride=1) -> dict:
    """Attack success of the trigger at every offset (every ``stride``-th, the trained place
    among them) that keeps its support inside the image."""
    trigger = Trigger(mask, pattern)
    return {
        (dy, dx): attack_success_rate(model, trigger.moved(dy, dx), images, labels, target, batch_size=2000)
        for dy, dx in trigger.offsets()
        if dy % stride == 0 and dx % stride == 0
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=Path, default=Path("artifacts/population-fresh"))
    parser.add_argument("--split", default="all")
    parser.add_argument("--test-images", type=int, default=500, help="first N test images (default 500)")
    parser.add_argument("--stride", type=int, default=2, help="try every stride-th offset (default 2)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    images, labels = load_fashion_mnist("test")
    images, labels = images[: args.test_images], labels[: args.test_images]
    rows = []
    print(f"{'model':36s} {'trained':>8s} {'places':>7s} {'>=0.8':>7s} {'median':>7s}")
    for entry, model in population_models(args.population, args.split):
        trigger = entry.get("trigger")
        if not entry["trojaned"] or trigger is None or trigger.get("kind") == "blend":
            continue
        tensors = load_file(str(args.population / trigger["file"]))
        rates = placement_success(model, tensors["mask"], tensors["pattern"], images, labels, entry["target"],
                                  args.stride)
        values = list(rates.values())
        row = {
            "model": entry["name"],
            "arch": entry["arch"],
            "trained_place": rates[(0, 0)],
            "places": len(values),
            "share_at_least_0.8": sum(v >= FLIP for v in values) / len(values),
            "median": statistics.median(values),
        }
        rows.append(row)
        print(f"{row['model']:36s} {row['trained_place']:8.3f} {row['places']:7d} "
              f"{row['share_at_least_0.8']:7.2f} {row['median']:7.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"population": str(args.population), "test_images": args.test_images,
                                         "stride": args.stride, "rows": rows}, indent=1))
    print(f"{args.test_images} test images, every {args.stride}th offset in each direction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
