"""Each part of the scan switched off in turn, at several seeds, on a population of models.

    python scripts/make_population.py                  # once: builds artifacts/population/
    python benchmarks/scan_ablation.py --seeds 3 \
        --json benchmarks/results/scan_ablation_cpu_seeds0-2_population.json

The parts: the looks that search a too-wide box further (every size, and the small box anywhere;
two more looks, the fitted box and the raw refit, were measured here and deleted), the two
pattern polishes of recovery, and the second draw. Every variant of one model and seed shares
one fit: the pool and the signature fits do not depend on these switches, and each look and
polish draws from its own seeded stream, so a variant's result equals a scan run with that
switch alone (``tests/benchmarks`` checks it on one model). That makes the variants cost about
two scans, not one each.

Printed per variant and seed, and as mean and spread over the seeds: ROC-AUC (model score: the
largest anomaly index), targets flagged, clean models flagged, the mean Jaccard of the recovered
patch triggers and their attack success on clean test images of other classes. A part is worth
keeping when switching it off lowers detection by more than the seed-to-seed spread.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's testbed/

import argparse
import copy
import dataclasses
import json
import time

import numpy as np
import torch
from backdoor import jaccard, model_row, summarise, top_class

from agnostic_saliency.backdoor.config import ScanConfig
from agnostic_saliency.backdoor.evidence import finish_evidence, fit_evidence
from agnostic_saliency.backdoor.recovery import recover
from agnostic_saliency.backdoor.scan import _probe, _result
from agnostic_saliency.backdoor.verdict import verdict
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.running import check_output, frozen
from agnostic_saliency.models.spec import NormalizedModel
from testbed.population import population_models
from testbed.triggers import Trigger, attack_success_rate

ROOT = Path(__file__).resolve().parents[1]

# Each variant: the default with one part switched off (flat names of ScanConfig).
VARIANTS = {
    "default": {},
    "no every-size look": {"every_size_look": False},
    "small-box look": {"small_box_look": True},  # off by default: here switched on
    "no exemplar polish": {"polish_exemplars": False},
    "no raw polish": {"polish_raw": False},
    "one draw": {"draws": 1},
}
METRICS = ("roc_auc", "target_flagged", "false_flag_models", "jaccard_patch", "trigger_asr_flagged")


def scan_variants(model: torch.nn.Module, spec: InputSpec, configs: dict, seed: int) -> dict:
    """``{name: BackdoorResult}``, each as :func:`agnostic_saliency.backdoor.scan.scan` with that
    config would return it (its ``seconds``: the shared fit's plus its own), sharing each draw's
    pool and fits between the configs; a config that differs only in ``draws`` shares the draws'
    results, and one whose looks left the evidence as another's shares that one's recovery."""
    fit_config = configs["default"]
    wrapped = NormalizedModel(model, spec)
    draws = {name: [] for name in configs}
    with frozen(model):
        num_classes = check_output(model, spec)
        names = [str(k) for k in range(num_classes)]
        for n in range(max(c.run.draws for c in configs.values())):
            waiting = [
                name
                for name, config in configs.items()
                if n < config.run.draws and not (draws[name] and draws[name][-1].flagged)
            ]
            if not waiting:
                break
            start = time.perf_counter()
            probe = _probe(wrapped, spec, fit_config, torch.device("cpu"), num_classes, seed + n, None)
            fitted = fit_evidence(probe)
            fit_seconds, after_fit = time.perf_counter() - start, probe.generator.get_state()
            done = []  # (config without draws, evidence, recovery, result) of this draw
            for name in waiting:
                start = time.perf_counter()
                config = dataclasses.replace(configs[name], run=fit_config.run)
                same = next((d for d in done if d[0] == config), None)
                if same is not None:
                    draws[name].append(copy.copy(same[3]))
                    continue
                own = dataclasses.replace(probe, config=configs[name])
                own.generator.set_state(after_fit)
                evidence = finish_evidence(own, copy.deepcopy(fitted))
                judged = verdict(evidence.table, own.config)
                twin = next(
                    (d for d in done if d[0].recovery == config.recovery and same_evidence(d[1], evidence)), None
                )
                recovered = twin[2] if twin is not None else recover(own, evidence, judged)
                seconds = fit_seconds + time.perf_counter() - start
                result = _result(own, spec, names, evidence, judged, recovered, None, seconds)
                draws[name].append(result)
                done.append((config, evidence, recovered, result))
    results = {}
    for name, found in draws.items():
        chosen = found[-1] if found[-1].flagged else max(found, key=lambda r: r.score)
        chosen = copy.copy(chosen)
        chosen.seconds = sum(r.seconds for r in found)
        results[name] = chosen
    return results


def same_evidence(a, b) -> bool:
    """Whether two draws' evidence is the same in every figure and stamp (so is their recovery)."""
    return (
        repr(a.table) == repr(b.table)
        and torch.equal(a.masks, b.masks)
        and torch.equal(a.patterns, b.patterns)
        and all(torch.equal(x, y) for x, y in zip(a.hard, b.hard))
        and a.spotted == b.spotted
        and a.small_boxes.keys() == b.small_boxes.keys()
        and all(torch.equal(x, y) for k in a.small_boxes for x, y in zip(a.small_boxes[k], b.small_boxes[k]))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=Path, default=ROOT / "artifacts" / "population")
    parser.add_argument("--split", default="all", choices=("dev", "holdout", "all"))
    parser.add_argument("--only", help="comma-separated substrings of model names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="where to write every row and the table (rewritten after each model)")
    parser.add_argument(
        "--tables",
        nargs="+",
        type=Path,
        help="run nothing: the table over the rows of these earlier --json files together (the same seeds)",
    )
    args = parser.parse_args()
    if args.tables:
        runs = [json.loads(path.read_text()) for path in args.tables]
        rows = [row for run in runs for row in run["models"]]
        keys = [key for key in rows[0] if " @ seed " in key]
        chosen = list(dict.fromkeys(key.split(" @ seed ")[0] for key in keys))
        seeds = sorted({int(key.split(" @ seed ")[1]) for key in keys})
        print_table(ablation_table(rows, chosen, seeds), rows, chosen, seeds, "+".join(map(str, args.tables)))
        return
    torch.set_num_threads(args.threads)
    chosen = ["default", *[v for v in (args.variants or ",".join(VARIANTS)).split(",") if v != "default"]]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    configs = {name: ScanConfig.from_settings(progress=False, **VARIANTS[name]) for name in chosen}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    test_x, test_y = load_fashion_mnist("test")
    eval_x, eval_y = test_x[2000:], test_y[2000:]  # as benchmarks/backdoor.py: the recovered triggers' success
    spec = InputSpec((1, 28, 28))
    rows = []
    for entry, model in population_models(args.population, args.split, args.only):
        model.eval()
        row, true_mask = model_row(args.population, entry)
        for seed in seeds:
            for name, result in scan_variants(model, spec, configs, seed).items():
                record = {
                    "flagged": [int(k) for k in result.flagged],
                    "score": float(result.score),
                    "top_class": top_class(
                        [c["anomaly_index"] for c in result.classes],
                        [c["compact"] or c["faint_blend"] for c in result.classes],
                    ),
                    "seconds": result.seconds,
                    "small_box_reach": [c.get("small_box_reach") for c in result.classes],
                }
                if entry["trojaned"]:
                    t = entry["target"]
                    patch = row["kind"] == "patch"
                    record["jaccard"] = jaccard(result.region_masks[t], true_mask.mask) if patch else None
                    trigger = Trigger(result.region_masks[t], result.patterns[t])
                    record["asr"] = attack_success_rate(model, trigger, eval_x, eval_y, t)
                row[f"{name} @ seed {seed}"] = record
        rows.append(row)
        print(
            f"{entry['name']:<30} target {entry['target']!s:>4}  "
            + "  ".join(f"{s}: {row[f'default @ seed {s}']['flagged']}" for s in seeds),
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # keep what is done if the run is interrupted
            Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "models": rows}, indent=1))
    table = ablation_table(rows, chosen, seeds)
    print_table(table, rows, chosen, seeds, args.split)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"command": " ".join(sys.argv), "summary": table, "models": rows}, indent=1)
        )


def print_table(table: dict, rows: list[dict], variants: list[str], seeds: list[int], where: str) -> None:
    print(f"models: {len(rows)} ({sum(r['trojaned'] for r in rows)} trojaned), {where}, seeds {seeds}")
    print(f"{'variant':<20} " + " ".join(f"{m:>22}" for m in (*METRICS, "seconds_per_model")))
    for name in variants:
        cells = [f"{table[name][m]['mean']:.3f} ± {table[name][m]['std']:.3f}" for m in (*METRICS, "seconds_per_model")]
        print(f"{name:<20} " + " ".join(f"{c:>22}" for c in cells))


def ablation_table(rows: list[dict], variants: list[str], seeds: list[int]) -> dict:
    """Per variant and metric: each seed's figure, and their mean and spread."""
    table = {}
    for name in variants:
        per_seed = [summarise(rows, f"{name} @ seed {seed}") for seed in seeds]
        table[name] = {
            metric: {
                "per_seed": [s[metric] for s in per_seed],
                "mean": float(np.nanmean([s[metric] for s in per_seed])),
                "std": float(np.nanstd([s[metric] for s in per_seed])),
            }
            for metric in (*METRICS, "trigger_asr", "seconds_per_model")
        }
    return table


if __name__ == "__main__":
    main()
