"""Does the shortlist's cheap pass keep the true target? Every trojaned model of the backdoor
population (optionally the clean ones too) gets one draw of the scan with a forced small
shortlist, and the true target's rank in the cheap pass's ordering is recorded, with whether the
draw still flags it.

    python scripts/make_population.py                      # once: builds artifacts/population/
    python benchmarks/shortlist_recall.py --shortlist 3 \\
        --json benchmarks/results/scan_shortlist3_recall_cpu_seed0_population.json

By default each draw stops once the shortlist is picked (exemplars and the cheap pass: what the
pick depends on), so the verdict is not measured; ``--full`` runs whole draws, and records
whether each still flags the target.

The population's models have 10 classes, where the default shortlist keeps every class; forcing
3 of 10 (plus the 5 reference classes that also get the full fit) asks the cheap pass to put the
target in its top 3, which a model of hundreds of classes asks of its top max(10, sqrt(K)).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's testbed/

import argparse
import json
import time

import torch

import agnostic_saliency.backdoor.evidence as evidence_module
from agnostic_saliency.backdoor.scan import scan_once
from agnostic_saliency.models import InputSpec
from testbed.population import population_models

ROOT = Path(__file__).resolve().parents[1]


class Picked(Exception):
    """Raised by the watched pick to end a draw once the shortlist is known."""

    def __init__(self, anomaly, shortlisted, reference):
        super().__init__("picked")
        self.anomaly, self.shortlisted, self.reference = anomaly, shortlisted, reference


def stop_at_the_pick():
    """Make the scan's shortlist pick end the draw, carrying the cheap pass's ranking."""
    real = evidence_module.pick_classes

    def pick(anomaly, size, references):
        shortlisted, reference = real(anomaly, size, references)
        raise Picked(list(anomaly), shortlisted, reference)

    evidence_module.pick_classes = pick


def summarise(rows: list[dict], args) -> dict:
    trojaned = [r for r in rows if r["trojaned"]]
    clean = [r for r in rows if not r["trojaned"]]
    return {
        "shortlist": args.shortlist,
        "seed": args.seed,
        "models": [r["name"] for r in rows],
        "trojaned_models": len(trojaned),
        "target_in_shortlist": sum(r["target_shortlisted"] for r in trojaned),
        "target_ranks": sorted(r["target_rank"] for r in trojaned),
        "target_flagged": sum(r["target_flagged"] for r in trojaned) if args.full else None,
        "clean_models": len(clean),
        "clean_models_flagged": sum(bool(r["flagged"]) for r in clean) if args.full else None,
        "whole_draws": args.full,
        "seconds_per_model": sum(r["seconds"] for r in rows) / max(len(rows), 1),
        "threads": args.threads,
        "torch": torch.__version__,
    }


def save(args, rows: list[dict], summary: dict) -> None:
    if args.json:
        document = {"command": "python " + " ".join(sys.argv), "summary": summary, "models": rows}
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=Path, default=ROOT / "artifacts" / "population")
    parser.add_argument("--split", default="all", choices=("dev", "holdout", "all"))
    parser.add_argument("--only", help="comma-separated substrings of model names")
    parser.add_argument("--shortlist", type=int, default=3, help="classes the cheap pass keeps (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean", action="store_true", help="scan the clean models too (false flags)")
    parser.add_argument("--full", action="store_true", help="run whole draws (the verdict too)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = InputSpec((1, 28, 28))
    if not args.full:
        stop_at_the_pick()
    rows = []
    for entry, model in population_models(args.population, args.split, args.only):
        if not entry["trojaned"] and not args.clean:
            continue
        start = time.perf_counter()
        result = None
        try:
            result = scan_once(model, spec, shortlist=args.shortlist, seed=args.seed, progress=False)
            cheap = [row["cheap_anomaly"] for row in result.classes]
            shortlisted, reference = result.settings["shortlisted"], result.settings["reference_classes"]
        except Picked as picked:
            cheap, shortlisted, reference = picked.anomaly, picked.shortlisted, picked.reference
        seconds = time.perf_counter() - start
        flagged = None if result is None else result.flagged
        ranking = sorted(range(len(cheap)), key=lambda k: (-cheap[k], k))
        target = entry["target"]
        row = {
            "name": entry["name"],
            "split": entry["split"],
            "arch": entry["arch"],
            "trojaned": entry["trojaned"],
            "target": target,
            "kind": (entry["trigger"] or {}).get("kind"),
            "shortlisted": shortlisted,
            "reference_classes": reference,
            "cheap_anomaly": cheap,
            "target_rank": None if target is None else ranking.index(target) + 1,
            "target_shortlisted": None if target is None else target in shortlisted,
            "flagged": flagged,
            "target_flagged": None if target is None or flagged is None else target in flagged,
            "anomaly_index": None if result is None else [row["anomaly_index"] for row in result.classes],
            "seconds": seconds,
        }
        rows.append(row)
        print(
            f"{entry['name']:<28} target {target!s:>4}  rank {row['target_rank']!s:>4}  "
            f"shortlist {shortlisted}  flagged {flagged}  {seconds:5.1f}s",
            file=sys.stderr,
            flush=True,
        )
        save(args, rows, summarise(rows, args))  # keep what is done if the run is interrupted
    summary = summarise(rows, args)
    print(json.dumps(summary, indent=1))
    save(args, rows, summary)


if __name__ == "__main__":
    main()
