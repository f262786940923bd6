"""Re-score the scan's stored per-class statistics with other model-level rules, offline.

    python benchmarks/rescore.py benchmarks/results/scan_onedraw_cpu_seeds0-3_population-dev.json [more.json ...]

Reads the per-class statistics that ``benchmarks/backdoor.py`` stores for every run of our scan
(``ours``, ``ours_seed1``, ...; several files are joined by model name) and prints, per rule and
per run, the detection figures: ROC-AUC, target = top class, target flagged and clean models
flagged (MAD anomaly index, low side, threshold 2). Rules:

- ``size``: the scan's statistic, sqrt(mask L1 x region pixels);
- ``l1`` and ``region``: either factor alone;
- ``mean-of-seeds``: each class's log size averaged over every run of the model (what a scan that
  repeated its fit and pooled the repeats would see; it needs two runs or more).

These first rules ignore the shape tests. The ``shaped`` lines apply them as the scan does (a
class may be flagged only if it is compact or a faint blend; the score is the largest index among
those classes) and compare two ways of sizing a class:

- ``shaped size``: every class by its signature size (the default until commit 6b6d9f6);
- ``shaped box``: a compact class by sqrt(mask L1 x box pixels), its own MAD index over the
  classes, any other by its signature size (the default since commit 6b6d9f6).

No model is run: this only studies which statistic separates trojaned from clean models.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backdoor import roc_auc  # noqa: E402

from agnostic_saliency.backdoor.signatures import faint_blends, stamp_size  # noqa: E402
from agnostic_saliency.metrics.anomaly import flag_anomalies  # noqa: E402

RULES = {
    "size": lambda c: stamp_size(c["mask_l1"], c["region_pixels"]),
    "l1": lambda c: max(c["mask_l1"], 1e-6),
    "region": lambda c: c["region_pixels"],
}


def figures(models: list[dict], values: dict[str, list[float]]) -> str:
    """Detection figures for one log-statistic vector per model (name -> 10 values)."""
    positive, negative, top, flagged_target, clean_flagged = [], [], 0, 0, 0
    for model in models:
        index, flagged = flag_anomalies(values[model["name"]], 2.0, side="low")
        index = [float(a) for a in index]
        if model["target"] is None:
            negative.append(max(index))
            clean_flagged += bool(flagged)
        else:
            positive.append(max(index))
            top += max(range(len(index)), key=index.__getitem__) == model["target"]
            flagged_target += model["target"] in flagged
    trojaned = len(positive)
    return (
        f"ROC-AUC {roc_auc(positive, negative):.3f}  target = top {top}/{trojaned}  "
        f"target flagged {flagged_target}/{trojaned}  clean flagged {clean_flagged}/{len(negative)}"
    )


def shaped_figures(models: list[dict], run: str, box_for_compact: bool) -> str:
    """Detection figures with the scan's shape tests (box and faint blend, at their defaults)."""
    positive, negative, top, flagged_target, clean_flagged = [], [], 0, 0, 0
    for model in models:
        classes = model[run]["classes"]
        compact = [c["compact"] for c in classes]
        faint = faint_blends([c["blend_strength"] for c in classes], compact, 0.14, 0.5)
        by_size, _ = flag_anomalies([math.log(RULES["size"](c)) for c in classes], 2.0, side="low")
        by_box, _ = flag_anomalies(
            [math.log(stamp_size(c["mask_l1"], c["box_pixels"])) for c in classes], 2.0, side="low"
        )
        index = [float(by_box[k] if box_for_compact and compact[k] else by_size[k]) for k in range(len(classes))]
        eligible = [compact[k] or faint[k] for k in range(len(classes))]
        flagged = [k for k in range(len(classes)) if eligible[k] and index[k] > 2.0]
        score = max([0.0] + [index[k] for k in range(len(classes)) if eligible[k]])
        ranked = [index[k] if eligible[k] else -math.inf for k in range(len(classes))] if any(eligible) else index
        if model["target"] is None:
            negative.append(score)
            clean_flagged += bool(flagged)
        else:
            positive.append(score)
            top += max(range(len(ranked)), key=ranked.__getitem__) == model["target"]
            flagged_target += model["target"] in flagged
    trojaned = len(positive)
    return (
        f"ROC-AUC {roc_auc(positive, negative):.3f}  target = top {top}/{trojaned}  "
        f"target flagged {flagged_target}/{trojaned}  clean flagged {clean_flagged}/{len(negative)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    models: dict[str, dict] = {}
    for path in args.results:
        for row in json.loads(path.read_text())["models"]:
            models.setdefault(row["name"], dict(row)).update(
                {key: value for key, value in row.items() if key.startswith("ours")}
            )
    rows = list(models.values())
    runs = sorted({key for row in rows for key in row if key.startswith("ours") and "classes" in row[key]})
    runs = [run for run in runs if all(run in row for row in rows)]
    if not runs:
        raise SystemExit("error: no run of our scan with per-class statistics is in every model's row")
    print(f"{len(rows)} models ({sum(r['target'] is not None for r in rows)} trojaned), runs: {', '.join(runs)}")
    for rule, statistic in RULES.items():
        for run in runs:
            values = {r["name"]: [math.log(statistic(c)) for c in r[run]["classes"]] for r in rows}
            print(f"{rule:<14} {run:<12} {figures(rows, values)}")
    for run in runs:
        if all("box_pixels" in r[run]["classes"][0] and "blend_strength" in r[run]["classes"][0] for r in rows):
            for name, box_for_compact in (("shaped size", False), ("shaped box", True)):
                print(f"{name:<14} {run:<12} {shaped_figures(rows, run, box_for_compact)}")
    if len(runs) > 1:
        values = {
            r["name"]: [
                statistics.fmean(math.log(RULES["size"](r[run]["classes"][k])) for run in runs)
                for k in range(len(r[runs[0]]["classes"]))
            ]
            for r in rows
        }
        print(f"{'mean-of-seeds':<14} {'+'.join(runs):<12} {figures(rows, values)}")
        # Seed-to-seed noise of each statistic on the classes that are not a target: the RMS over
        # runs 0 and 1 of the difference of logs, divided by sqrt(2) to give the noise of one run.
        for rule, statistic in RULES.items():
            differences = [
                math.log(statistic(r[runs[0]]["classes"][k])) - math.log(statistic(r[runs[1]]["classes"][k]))
                for r in rows
                for k in range(len(r[runs[0]]["classes"]))
                if k != r["target"]
            ]
            noise = math.sqrt(statistics.fmean(d * d for d in differences) / 2)
            print(
                f"noise {rule:<8} {runs[0]} vs {runs[1]}: {noise:.3f} (log units, one run, {len(differences)} classes)"
            )


if __name__ == "__main__":
    main()
