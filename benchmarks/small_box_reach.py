"""What can a small box do for each class? A candidate piece of evidence that does not lean on the
signature's hard region.

    OMP_NUM_THREADS=1 python benchmarks/small_box_reach.py --population artifacts/population-fresh4 --seed 0

The scan measures how large a box on a class's hard region must be to flip 0.8 of the class's far
exemplars. On a batch-norm, global-pooling net the hard region can be a lattice of single pixels
away from the trigger, and the true trigger itself flips only about half of the far exemplars
(``benchmarks/box_samples.py``), so the target's box grows past the bound and the target is
missed. This asks the converse, for every class: the most far exemplars that one ``--side`` x
``--side`` box can flip, its pattern fitted inside it (the scan's tanh-space Adam fit, from mid
grey), over a grid of places every ``--stride`` pixels. A backdoor's target should reach far more
than any clean class. The pool is the scan's own (its first stage's exemplars at ``--seed``).
This measure, on ``fresh4``, set the threshold of the scan's small-box look
(:func:`agnostic_saliency.backdoor.looks.small_box_reach`), which fits every box for 10 steps and
only the 12 best for the full 30, on three classes a model; this one fits every box in full, for
every class, as it did when the threshold was set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agnostic_saliency.backdoor.config import ScanConfig  # noqa: E402
from agnostic_saliency.backdoor.fitting import draw_pool  # noqa: E402
from agnostic_saliency.backdoor.patterns import fit_patterns  # noqa: E402
from agnostic_saliency.backdoor.regions import grid_boxes  # noqa: E402
from agnostic_saliency.backdoor.scan import _probe  # noqa: E402
from agnostic_saliency.backdoor.stamps import stamped_share  # noqa: E402
from agnostic_saliency.models import InputSpec  # noqa: E402
from agnostic_saliency.models.running import frozen  # noqa: E402
from agnostic_saliency.models.spec import NormalizedModel  # noqa: E402
from testbed.population import population_models  # noqa: E402


def small_box_reach(model, pool, k: int, boxes: torch.Tensor, low: float, high: float, steps: int, seed: int):
    """The largest share of class ``k``'s far held-out exemplars (those not already on ``k``) that
    one of ``boxes``, with a pattern fitted inside it on the far fit exemplars, sends to ``k``;
    and that box's index."""
    fit = pool.fit[pool.fit_far[:, k]]
    tests = pool.held_out[pool.held_far[:, k]]
    with torch.no_grad():
        tests = tests[model(tests).argmax(1) != k]
    start = torch.full(pool.fit.shape[1:], (low + high) / 2)
    patterns, _ = fit_patterns(
        model, boxes, start, fit, k, low, high, steps=steps, batch_size=8, generator=torch.Generator().manual_seed(seed)
    )
    shares = [stamped_share(model, box, pattern, tests, k) for box, pattern in zip(boxes, patterns)]
    best = max(range(len(shares)), key=shares.__getitem__)
    return shares[best], best


def grown_reach(model, pool, k: int, box: torch.Tensor, sides, low, high, steps: int, seed: int) -> dict:
    """Per side of ``sides``: the largest reach (as :func:`small_box_reach`) of a square of that
    side that holds ``box``, at every such place. A trigger the small box covers in part should be
    reached in full by a box a little larger; a class that is merely easy to reach, only a little more."""
    rows, cols = box.nonzero()[:, 0], box.nonzero()[:, 1]
    top, left, side = int(rows.min()), int(cols.min()), int(rows.max() - rows.min()) + 1
    height, width = box.shape
    grown = {}
    for size in sides:
        places = [
            (r, c)
            for r in range(max(0, top + side - size), min(top, height - size) + 1)
            for c in range(max(0, left + side - size), min(left, width - size) + 1)
        ]
        masks = torch.zeros(len(places), height, width)
        for row, (r, c) in enumerate(places):
            masks[row, r : r + size, c : c + size] = 1
        grown[size] = small_box_reach(model, pool, k, masks, low, high, steps, seed)[0] if places else None
    return grown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=Path, default=Path("artifacts/population-fresh4"))
    parser.add_argument("--split", default="all")
    parser.add_argument("--only", help="only models whose name holds one of these comma-separated parts")
    parser.add_argument("--seed", type=int, default=0, help="the scan's seed (its pool)")
    parser.add_argument("--side", type=int, default=4, help="the box's side in pixels (default 4)")
    parser.add_argument("--stride", type=int, default=2, help="places every STRIDE pixels (default 2)")
    parser.add_argument("--steps", type=int, default=30, help="pattern fit steps per box (default 30)")
    parser.add_argument("--classes", help="comma-separated classes to measure (default all)")
    parser.add_argument("--grow", help="comma-separated larger sides: each class's best box grown to them")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    classes = [int(k) for k in args.classes.split(",")] if args.classes else list(range(10))
    sides = [int(s) for s in args.grow.split(",")] if args.grow else []
    spec, config = InputSpec((1, 28, 28)), ScanConfig.from_settings(progress=False)
    boxes = grid_boxes(28, 28, args.side, args.stride)
    rows = []
    for entry, model in population_models(args.population, args.split, args.only):
        start = time.perf_counter()
        model.eval()
        wrapped = NormalizedModel(model, spec)
        with frozen(model):
            probe = _probe(wrapped, spec, config, torch.device("cpu"), 10, args.seed, None)
            pool, _ = draw_pool(probe)
            reach = [
                small_box_reach(wrapped, pool, k, boxes, probe.low, probe.high, args.steps, k)
                if k in classes
                else (float("nan"), -1)
                for k in range(10)
            ]
            grown = {
                k: grown_reach(wrapped, pool, k, boxes[reach[k][1]], sides, probe.low, probe.high, args.steps, k)
                for k in classes
                if sides
            }
        target = entry["target"]
        row = {
            "name": entry["name"],
            "arch": entry["arch"],
            "target": target,
            "kind": (entry["trigger"] or {}).get("kind"),
            "reach": [share for share, _ in reach],
            "box": [int(index) for _, index in reach],
            "grown": {str(k): {str(size): share for size, share in g.items()} for k, g in grown.items()},
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        text = " ".join(f"{'*' if k == target else ' '}{share:.2f}" for k, (share, _) in enumerate(reach))
        print(f"{entry['name']:32s} target {target!s:>4s} {text}  ({row['seconds']:.0f} s)", flush=True)
        for k, g in grown.items():
            shown = "  ".join(f"side {size} {share:.2f}" for size, share in g.items() if share is not None)
            print(f"    class {k}: {shown}")
    clean = [max(x for x in r["reach"] if x == x) for r in rows if r["target"] is None]
    targets = [(r["name"], r["reach"][r["target"]]) for r in rows if r["target"] is not None]
    print(f"\nclean models' largest reach: {max(clean, default=float('nan')):.2f}")
    for name, share in targets:
        print(f"  {name:32s} target's reach {share:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
