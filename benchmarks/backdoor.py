"""The scan against Neural Cleanse on the backdoor population, side by side on one machine.

    python scripts/make_population.py                      # once: builds artifacts/population/
    python benchmarks/backdoor.py --split dev --methods ours,nc,nc_original \
        --json benchmarks/results/scan_default_vs_nc_cpu_seed0_population-dev.json

For every model both methods run in turn (same machine, same threads): our scan data-free,
Neural Cleanse with 2,000 clean test images (what it needs). Printed per method: detection
ROC-AUC (model-level score: the largest anomaly index), target-label accuracy (the true target
is the top-scoring class), the true target flagged, false flags on clean models, mean Jaccard of
the recovered vs. true trigger mask (patch triggers; masks binarised at 0.5), the same with the
true trigger at the place where it works that best matches the recovered one (``placed``: some
models take their trigger at several places, see :func:`placed_jaccard`), the recovered
target trigger's attack success rate on clean test images of other classes (over every trojaned
model, and over those whose target the method flagged: a flagged class's trigger is the one a
user gets), and seconds per model, with the ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's testbed/

import argparse
import json
import time

import numpy as np
import torch
from safetensors.torch import load_file
from trigger_placement import FLIP  # the bar at which a place counts as working

from agnostic_saliency.backdoor.neural_cleanse import ORIGINAL_SETTINGS, neural_cleanse
from agnostic_saliency.backdoor.scan import scan
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.metrics.detection import roc_auc
from agnostic_saliency.models import InputSpec
from testbed.population import population_models
from testbed.triggers import Trigger, attack_success_rate

ROOT = Path(__file__).resolve().parents[1]


# Neural Cleanse as run here: at the reduced default budget, and at the original example script's
# settings (an epoch of 1,000 images, up to 1,000 epochs, early stop after 25 epochs without gain).
NC_VARIANTS = {"nc": ("Neural Cleanse", {}), "nc_original": ("NC (original)", ORIGINAL_SETTINGS)}


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that wall times measure it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def jaccard(recovered: torch.Tensor, true: torch.Tensor) -> float:
    a, b = recovered > 0.5, true > 0.5
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else float("nan")


def placed_jaccard(model, recovered: torch.Tensor, true: Trigger, images, labels, target: int) -> tuple[float, list]:
    """The recovered mask's best Jaccard with the true trigger moved to any place where it still
    works (attack success at least ``FLIP``, the scan's flip bar, on ``images``), and that shift
    (rows, columns).

    Why: some trojaned models take their trigger at many places (an all-convolutional net with
    global pooling flips on its top-edge checkerboard every 4 px along the edge); a data-free scan
    sees only the model, so it cannot tell the trained place from the others, and the plain
    Jaccard with the trained place then measures luck. Places are tried best overlap first, so
    few are measured."""
    overlaps = [(jaccard(recovered, true.moved(*shift).mask), shift) for shift in true.offsets()]
    for overlap, shift in sorted(overlaps, key=lambda pair: -pair[0]):
        if overlap <= 0:
            break
        if attack_success_rate(model, true.moved(*shift), images, labels, target) >= FLIP:
            return overlap, list(shift)
    return 0.0, None


def seed_key(seed: int) -> str:
    """Where a row keeps our scan's run at this seed."""
    return "ours" if seed == 0 else f"ours_seed{seed}"


def model_row(population: Path, entry: dict) -> tuple[dict, Trigger | None]:
    """A model's result row before any method ran, and its true trigger (None if clean)."""
    true_trigger = None
    if entry["trojaned"]:
        tensors = load_file(str(population / entry["trigger"]["file"]))
        true_trigger = Trigger(tensors["mask"], tensors["pattern"])
    row = {
        "name": entry["name"],
        "split": entry["split"],
        "arch": entry["arch"],
        "trojaned": entry["trojaned"],
        "target": entry["target"],
        "kind": (entry["trigger"] or {}).get("kind"),
    }
    return row, true_trigger


def top_class(anomaly: list[float], eligible: list[bool]) -> int:
    """The most anomalous class of those the method may flag (all, if it may flag none)."""
    ranked = [a if ok else -np.inf for a, ok in zip(anomaly, eligible)] if any(eligible) else anomaly
    return int(np.argmax(ranked))


def summarise(rows, method):
    trojaned = [r for r in rows if r["trojaned"]]
    clean = [r for r in rows if not r["trojaned"]]
    patch = [r[method]["jaccard"] for r in trojaned if r["kind"] == "patch"]
    placed = [r[method].get("jaccard_placed") for r in trojaned if r["kind"] == "patch"]
    return {
        "roc_auc": roc_auc([r[method]["score"] for r in trojaned], [r[method]["score"] for r in clean]),
        "target_accuracy": float(np.mean([r[method]["top_class"] == r["target"] for r in trojaned]))
        if trojaned
        else float("nan"),
        "target_flagged": float(np.mean([r["target"] in r[method]["flagged"] for r in trojaned]))
        if trojaned
        else float("nan"),
        "false_flag_models": sum(bool(r[method]["flagged"]) for r in clean),
        "clean_models": len(clean),
        "jaccard_patch": float(np.mean(patch)) if patch else float("nan"),
        # None in rows written before the placed Jaccard existed
        "jaccard_placed": float(np.mean(placed)) if placed and None not in placed else float("nan"),
        "trigger_asr": float(np.mean([r[method]["asr"] for r in trojaned])) if trojaned else float("nan"),
        # Only a flagged class has a recovered trigger (the scan's triggers.safetensors): this is
        # the success rate of the triggers a user gets; the column above also counts missed targets.
        "trigger_asr_flagged": float(np.mean(found))
        if (found := [r[method]["asr"] for r in trojaned if r["target"] in r[method]["flagged"]])
        else float("nan"),
        "seconds_per_model": float(np.mean([r[method]["seconds"] for r in rows])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=Path, default=ROOT / "artifacts" / "population")
    parser.add_argument("--split", default="all", choices=("dev", "holdout", "all"))
    parser.add_argument("--only", help="comma-separated substrings of model names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument(
        "--methods",
        default="ours,nc",
        help="which methods to run: ours, nc (Neural Cleanse at its reduced default budget), "
        "nc_original (at the original example script's settings; slow); default ours,nc",
    )
    parser.add_argument("--reuse", help="a previous --json whose rows fill in the methods not run now")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run our scan with N seeds (from --first-seed) and report each seed's figures and their mean and spread",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first of the seeds (default 0); runs are stored as ours (seed 0) and ours_seed<N>",
    )
    parser.add_argument(
        "--nc-seed",
        type=int,
        default=0,
        help="Neural Cleanse's seed (its initial masks and batch order; default 0, as in the earlier result files)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both methods run")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="the precision both methods run at (default fp32; see the scan's --precision)",
    )
    parser.add_argument(
        "--scan-images",
        action="store_true",
        help="give our scan Neural Cleanse's 2,000 images, unlabeled, as its distribution",
    )
    parser.add_argument(
        "--scan",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of our scan (a keyword of agnostic_saliency.scan, the value read as JSON), "
        "e.g. --scan far_batches=true --scan batch_size=16; repeatable",
    )
    args = parser.parse_args()
    command = "python " + " ".join(sys.argv)
    scan_settings = {}
    for setting in args.scan:
        key, _, value = setting.partition("=")
        scan_settings[key] = json.loads(value)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    test_x, test_y = load_fashion_mnist("test")
    clean_images = test_x[:2000]  # Neural Cleanse's clean data
    eval_x, eval_y = test_x[2000:], test_y[2000:]  # for the recovered triggers' success rate
    place_x, place_y = eval_x[:500], eval_y[:500]  # where the true trigger is tried at other places
    spec = InputSpec((1, 28, 28))
    methods = args.methods.split(",")
    previous = {}
    if args.reuse:
        previous = {row["name"]: row for row in json.loads(Path(args.reuse).read_text())["models"]}
    rows = []
    for entry, model in population_models(args.population, args.split, args.only):
        model.eval().to(args.device)
        row, true_trigger = model_row(args.population, entry)
        runs = []
        if "ours" in methods:
            for seed in seeds:
                synchronize(args.device)
                start = time.perf_counter()
                ours = scan(
                    model,
                    spec,
                    progress=False,
                    seed=seed,
                    precision=args.precision,
                    **scan_settings,
                    **({"images": clean_images.to(args.device), "distribution": "images"} if args.scan_images else {}),
                )
                synchronize(args.device)
                runs.append(
                    (
                        seed_key(seed),
                        time.perf_counter() - start,
                        ours.flagged,
                        [c["anomaly_index"] for c in ours.classes],
                        ours.region_masks,
                        ours.patterns,
                        ours.classes,
                        ours.score,
                        [c["compact"] or c["faint_blend"] for c in ours.classes],
                    )
                )
        for variant, (_, settings) in NC_VARIANTS.items():
            if variant not in methods:
                continue
            synchronize(args.device)
            start = time.perf_counter()
            nc = neural_cleanse(
                model,
                clean_images.to(args.device),
                progress=False,
                precision=args.precision,
                seed=args.nc_seed,
                **settings,
            )
            synchronize(args.device)
            ai = list(map(float, nc.anomaly_index))
            runs.append(
                (
                    variant,
                    time.perf_counter() - start,
                    nc.flagged,
                    ai,
                    nc.masks.cpu(),
                    nc.patterns.cpu(),
                    None,
                    max(ai),
                    [True] * len(ai),
                )
            )
        for key, value in previous.get(entry["name"], {}).items():
            method = "ours" if key.startswith("ours") else key  # ours at any seed (ours_seed<N>)
            if method in ("ours", *NC_VARIANTS) and method not in methods:
                row[key] = value
        for method, seconds, flagged, ai, masks, patterns, per_class, score, eligible in runs:
            # The top class is the most anomalous of the classes the method may flag (for the
            # scan: those whose trigger fits the box or works as a faint blend).
            result = {
                "seconds": seconds,
                "flagged": [int(k) for k in flagged],
                "score": float(score),
                "top_class": top_class(ai, eligible),
                "anomaly_index": ai,
            }
            if per_class is not None:  # every per-class statistic, for studying other statistics offline
                result["classes"] = per_class
            if entry["trojaned"]:
                t = entry["target"]
                if row["kind"] == "patch":
                    result["jaccard"] = jaccard(masks[t], true_trigger.mask)
                    result["jaccard_placed"], result["place"] = placed_jaccard(
                        model, masks[t], true_trigger, place_x, place_y, t
                    )
                    result["mask_pixels"] = (masks[t] > 0.5).flatten().nonzero()[:, 0].tolist()
                else:
                    result["jaccard"] = None
                result["asr"] = attack_success_rate(model, Trigger(masks[t], patterns[t]), eval_x, eval_y, t)
            row[method] = result
        rows.append(row)
        print(
            f"{entry['name']:<30} target {entry['target']!s:>4}  "
            + "  ".join(
                f"{m} {row[m]['flagged']!s:<10} {row[m]['seconds']:5.1f}s"
                for m in (seed_key(args.first_seed), *NC_VARIANTS)
                if m in row
            ),
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # keep what is done if the run is interrupted
            Path(args.json).write_text(json.dumps({"command": command, "models": rows}, indent=1))
    # "ours" in the table is the first seed's run
    keys = {"ours": seed_key(args.first_seed), **{variant: variant for variant in NC_VARIANTS}}
    table = {method: summarise(rows, key) for method, key in keys.items() if all(key in r for r in rows)}
    if args.seeds > 1 and "ours" in methods:
        per_seed = [summarise(rows, seed_key(seed)) for seed in seeds]
        table["ours_seeds"] = {
            "per_seed": per_seed,
            **{
                f"{name}_{stat}": float(getattr(np, stat)([s[name] for s in per_seed]))
                for name in per_seed[0]
                for stat in ("mean", "std")
            },
        }
        print(
            f"our scan over seeds {seeds[0]}..{seeds[-1]} (mean ± sd): "
            + ", ".join(
                f"{name} {table['ours_seeds'][name + '_mean']:.3f} ± {table['ours_seeds'][name + '_std']:.3f}"
                for name in (
                    "roc_auc",
                    "target_accuracy",
                    "target_flagged",
                    "false_flag_models",
                    "jaccard_patch",
                    "jaccard_placed",
                    "trigger_asr",
                    "trigger_asr_flagged",
                    "seconds_per_model",
                )
            )
        )
    reused = [m for m in ("ours", *NC_VARIANTS) if m not in methods and args.reuse and m in table]
    print(
        f"models: {len(rows)} ({sum(r['trojaned'] for r in rows)} trojaned), split {args.split}, "
        f"{args.threads} CPU thread(s), device {args.device}, precision {args.precision}"
        + (f"; {', '.join(reused)} reused from {args.reuse}" if reused else "")
    )
    print(
        f"{'method':<16} {'ROC-AUC':>7} {'target acc':>10} {'flagged':>8} {'false flags':>11} {'Jaccard':>8} "
        f"{'placed':>6} {'trig. ASR':>9} {'(flagged)':>9} {'s/model':>8}"
    )
    for method, label in (
        ("ours", "scan + images" if args.scan_images else "input-agnostic"),
        *((variant, label) for variant, (label, _) in NC_VARIANTS.items()),
    ):
        if method not in table:
            continue
        s = table[method]
        print(
            f"{label:<16} {s['roc_auc']:>7.3f} {s['target_accuracy']:>10.2f} {s['target_flagged']:>8.2f} "
            f"{s['false_flag_models']:>5}/{s['clean_models']:<5} {s['jaccard_patch']:>8.2f} "
            f"{s['jaccard_placed']:>6.2f} {s['trigger_asr']:>9.2f} {s['trigger_asr_flagged']:>9.2f} "
            f"{s['seconds_per_model']:>8.1f}"
        )
    ratios = {}
    for variant, (label, _) in NC_VARIANTS.items():
        if "ours" in table and variant in table:
            ratios[variant] = table[variant]["seconds_per_model"] / table["ours"]["seconds_per_model"]
            print(f"speed-up of the scan over {label}: {ratios[variant]:.1f}x")
    ratio = ratios.get("nc")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"command": command, "summary": table, "speedup": ratio, "speedups": ratios, "models": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
