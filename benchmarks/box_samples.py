"""On which samples should the scan's box test run? The true trigger's own flip share, and the
verdict with the box test moved to other samples.

    OMP_NUM_THREADS=1 python benchmarks/box_samples.py --population artifacts/population-fresh4 --seed 0

The scan's box test (:func:`agnostic_saliency.backdoor.regions.smallest_box`) asks a class's box
to flip ``required`` (0.8) of the class's far held-out exemplars: the half of the nudged pool the
model finds least like the class. Per model, after the scan's first stage (one draw, at
``--seed``), this prints

- for a trojaned model with a local trigger, the share of samples the *true* trigger sends to the
  target: the far exemplars the box test uses, every held-out exemplar the model puts elsewhere,
  and fresh raw samples of the scan's distribution the model puts elsewhere; where the true
  trigger flips fewer far exemplars than the bar, no box of the trigger's size can pass;
- for each way of running the box test (``VARIANTS``), every fully fitted class's smallest box
  (every size up to the trigger bound at the region's densest spots, as the scan's every-size
  look) and the verdict the scan's own rule gives on the table with those boxes.

Nothing here changes the scan or chooses a setting; it measures why the scan's boxes are the size
they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agnostic_saliency.backdoor.config import ScanConfig  # noqa: E402
from agnostic_saliency.backdoor.evidence import gather_evidence  # noqa: E402
from agnostic_saliency.backdoor.regions import smallest_box  # noqa: E402
from agnostic_saliency.backdoor.scan import _probe  # noqa: E402
from agnostic_saliency.backdoor.stamps import attack_success  # noqa: E402
from agnostic_saliency.backdoor.verdict import largest_box, verdict  # noqa: E402
from agnostic_saliency.models import InputSpec  # noqa: E402
from agnostic_saliency.models.running import frozen  # noqa: E402
from agnostic_saliency.models.spec import NormalizedModel  # noqa: E402
from testbed.population import population_models  # noqa: E402

# name -> (samples, required): "far" is the scan's (its far held-out exemplars), "raw" fresh samples
# of the scan's distribution that the model puts in another class
VARIANTS = {"far 0.8": ("far", 0.8), "far 0.6": ("far", 0.6), "raw 0.8": ("raw", 0.8), "raw 0.9": ("raw", 0.9)}


def elsewhere(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-class scores whose lowest quantile (0) is exactly "the model puts the sample
    in another class": one-hot predictions, for :func:`~agnostic_saliency.backdoor.pool.far_samples`."""
    return torch.nn.functional.one_hot(probabilities.argmax(1), probabilities.shape[1]).float()


def true_trigger_shares(model, mask, pattern, target: int, far, held_out, raw) -> dict:
    """The true trigger's attack success on each sample set (samples already on ``target`` left
    out; None where none is left)."""
    sets = (("far", far), ("held_out", held_out), ("raw", raw))
    return {name: attack_success(model, mask, pattern, samples, target) for name, samples in sets}


def model_row(entry: dict, model, population: Path, seed: int, raw_samples: int) -> dict:
    spec, config = InputSpec((1, 28, 28)), ScanConfig.from_settings(progress=False)
    device = torch.device("cpu")
    wrapped = NormalizedModel(model, spec)
    with frozen(model):
        probe = _probe(wrapped, spec, config, device, 10, seed, None)
        evidence = gather_evidence(probe)
        scan_verdict = verdict(evidence.table, config)
        pool, target = evidence.pool, entry["target"]
        raw = probe.source.sample(raw_samples, torch.Generator().manual_seed(seed + 99), device)
        raw_scores = elsewhere(wrapped(raw).softmax(1))
        row = {"name": entry["name"], "arch": entry["arch"], "target": target, "scan": list(scan_verdict.flagged)}
        trigger = entry.get("trigger") or {}
        if trigger.get("kind") in ("patch", "sign"):
            tensors = load_file(str(population / trigger["file"]))
            row["true_trigger_flips"] = true_trigger_shares(
                wrapped, tensors["mask"], tensors["pattern"], target,
                pool.held_out[pool.held_far[:, target]], pool.held_out, raw,
            )  # fmt: skip
        classes = [k for k in range(10) if evidence.table.full_fit[k]]
        bound = largest_box(config.box.max_trigger_area, probe.image_shape)
        for name, (kind, required) in VARIANTS.items():
            far = kind == "far"
            samples, scores = (pool.held_out, pool.held_probabilities) if far else (raw, raw_scores)
            quantile = config.fit.quantile if far else 0.0
            found = smallest_box(
                wrapped, [evidence.hard[k] for k in classes], evidence.patterns[classes], classes, samples, scores,
                required=required, quantile=quantile, placements=config.box.box_placements, every_side_up_to=bound,
            )  # fmt: skip
            boxes = list(evidence.table.box_pixels)
            for k, pixels in zip(classes, found):
                boxes[k] = pixels
            judged = verdict(dataclasses.replace(evidence.table, box_pixels=boxes), config)
            row[name] = {"flagged": list(judged.flagged), "boxes": boxes}
    return row


def flagged_by(row: dict, name: str) -> list[int]:
    """The classes a row's scan (``name`` "scan") or box-test variant flagged."""
    return row[name] if name == "scan" else row[name]["flagged"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=Path, default=Path("artifacts/population-fresh4"))
    parser.add_argument("--split", default="all")
    parser.add_argument("--seed", type=int, default=0, help="the scan's seed (its first draw only)")
    parser.add_argument("--raw-samples", type=int, default=512, help="fresh samples of the distribution")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for entry, model in population_models(args.population, args.split):
        row = model_row(entry, model.eval(), args.population, args.seed, args.raw_samples)
        rows.append(row)
        flips = row.get("true_trigger_flips")
        truth = " ".join(f"{k} {v:.2f}" for k, v in flips.items() if v is not None) if flips else "-"
        target = row["target"]
        boxes = "  ".join(
            f"{name}: {row[name]['flagged']!s} box {row[name]['boxes'][target] if target is not None else '-'}"
            f" (least {min(row[name]['boxes'])})"
            for name in VARIANTS
        )
        print(f"{row['name']:32s} target {target!s:>4s}  scan {row['scan']!s:8s} truth flips [{truth}]  {boxes}")
    print("\nper box test: targets flagged / trojaned, clean models flagged / clean")
    trojaned = [r for r in rows if r["target"] is not None]
    clean = [r for r in rows if r["target"] is None]
    for name in ("scan", *VARIANTS):
        hits = sum(r["target"] in flagged_by(r, name) for r in trojaned)
        false = sum(bool(flagged_by(r, name)) for r in clean)
        print(f"  {name:8s} {hits}/{len(trojaned)}  {false}/{len(clean)}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
