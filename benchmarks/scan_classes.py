"""The scan's seconds per class at 10, 100 and 1000 classes, with the shortlist at its default and
off, side by side in one run.

    python benchmarks/scan_classes.py --json benchmarks/results/scan_classes_cpu.json

Each model is an architecture of ``ARCHITECTURES`` (default ``fmnist-cnn``) built with
``num_classes=K`` and random weights (torch seed 0), input 1x28x28, scanned for one draw
(``draws=1``: such a model is clean, so a second draw would double both columns alike) at the
scan's default settings otherwise. The shortlist off runs only at ``--off-classes`` (default 10
and 100): at 1000 classes it would take about an hour at one thread, so its figure there is a
straight-line extrapolation of the measured ones, printed and stored as such, never as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from agnostic_saliency.backdoor.scan import scan
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import ARCHITECTURES


def classes_list(text: str) -> list[int]:
    return [int(k) for k in text.split(",") if k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fmnist-cnn", choices=sorted(ARCHITECTURES))
    parser.add_argument("--classes", type=classes_list, default=[10, 100, 1000], help="default 10,100,1000")
    parser.add_argument(
        "--off-classes", type=classes_list, default=[10, 100], help="where the shortlist off runs too (default 10,100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the weights' and the scan's seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scan",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the scan (a keyword of agnostic_saliency.scan, the value read as JSON); repeatable",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = {key: json.loads(value) for key, _, value in (s.partition("=") for s in args.scan)}
    torch.set_num_threads(args.threads)
    spec = InputSpec((1, 28, 28))
    command = "python " + " ".join(sys.argv)
    environment = {
        "scan_settings": settings,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    runs = []

    def save(extra=None):
        if args.json:
            document = {"command": command, "environment": environment, "runs": runs, **(extra or {})}
            Path(args.json).write_text(json.dumps(document, indent=1) + "\n")

    for num_classes in args.classes:
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            model = ARCHITECTURES[args.arch](num_classes=num_classes).eval()
        for mode, shortlist in (("on", None), ("off", 0)):
            if mode == "off" and num_classes not in args.off_classes:
                continue
            start = time.perf_counter()
            result = scan(model, spec, **{"draws": 1, **settings}, seed=args.seed, shortlist=shortlist, progress=False)
            seconds = time.perf_counter() - start
            run = {
                "classes": num_classes,
                "shortlist": mode,
                "seconds": seconds,
                "seconds_per_class": seconds / num_classes,
                "full_fit_classes": sum(row["full_fit"] for row in result.classes),
                "sample_gradients": result.sample_gradients,
                "flagged": result.flagged,
            }
            runs.append(run)
            print(
                f"{num_classes:>5} classes, shortlist {mode:<3}: {seconds:8.1f} s, "
                f"{run['seconds_per_class']:.3f} s per class, {run['full_fit_classes']} classes fully fitted",
                file=sys.stderr,
                flush=True,
            )
            save()
    per_class = {(r["classes"], r["shortlist"]): r["seconds_per_class"] for r in runs}
    ratios = {}
    smallest = min(args.classes)
    for num_classes in args.classes:
        on = per_class.get((num_classes, "on"))
        off = per_class.get((num_classes, "off"))
        if on is not None and off is not None:
            ratios[f"on_over_off_at_{num_classes}"] = on / off
        if on is not None and (smallest, "on") in per_class and num_classes != smallest:
            ratios[f"per_class_on_{num_classes}_over_{smallest}"] = on / per_class[(smallest, "on")]
    extrapolated = {}
    measured_off = sorted((r["classes"], r["seconds"]) for r in runs if r["shortlist"] == "off")
    if len(measured_off) >= 2:
        (k0, s0), (k1, s1) = measured_off[0], measured_off[-1]
        slope = (s1 - s0) / (k1 - k0)
        for num_classes in args.classes:
            if (num_classes, "off") not in per_class and (num_classes, "on") in per_class:
                seconds = s0 + slope * (num_classes - k0)
                extrapolated[f"off_seconds_at_{num_classes}"] = seconds
                extrapolated[f"on_over_off_at_{num_classes}"] = per_class[(num_classes, "on")] / (seconds / num_classes)
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    for name, value in extrapolated.items():
        print(f"{name} (extrapolated from the measured shortlist-off runs, not measured): {value:.3f}")
    save({"ratios": ratios, "extrapolated_not_measured": extrapolated})


if __name__ == "__main__":
    main()
