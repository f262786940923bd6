"""The population scan (`scan-many`) with 1 and with 2 Ray workers, side by side in one run.

    python scripts/make_population.py                 # once: builds artifacts/population/
    python benchmarks/population.py --workers 1,2 \
        --reference benchmarks/results/scan_default_vs_nc_cpu_seed0_population-dev.json \
        --reference benchmarks/results/scan_default_vs_nc_cpu_seed0_population-holdout.json \
        --json benchmarks/results/population_ray_workers_cpu_seed0.json

Each worker count runs in a fresh Python process that starts a local Ray instance with that
many CPUs (``ray.init(num_cpus=N)``) and scans every model of the population's manifest with
the default scan at ``--seed``, one Ray task per model (one CPU, so one torch thread, each).
The wall time counts from the first task submitted to the table written, so it includes Ray's
worker start-up but not ``ray.init``. Printed: wall time per worker count, models per minute,
the speed-up over the first count, and the detection figures of each run's table.

``--executor local`` adds a run without Ray (this process's executor, one torch thread), the
plain ``scan-many``. With ``--reference`` (result files of ``benchmarks/backdoor.py`` at the same
seed), every run's per-model scores and flagged classes are compared with that benchmark's and
its ROC-AUC is printed beside theirs: the same scan, reached through ``scan-many``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(population: Path, out: Path, workers: int, seed: int, executor: str) -> dict:
    """One scan-many run in this process; returns its table with the wall time."""
    import torch

    from agnostic_saliency.executors import LocalExecutor, RayExecutor
    from agnostic_saliency.population import read_population, scan_population

    models = read_population(population / "manifest.json")
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        chosen = RayExecutor()
    else:
        torch.set_num_threads(1)  # as one Ray task has
        chosen = LocalExecutor()
    start = time.perf_counter()
    table = scan_population(models, out, chosen, progress=False, seed=seed)
    table["wall_seconds"] = time.perf_counter() - start
    return table


def compare(table: dict, reference: dict[str, dict]) -> dict:
    """Per-model agreement with benchmarks/backdoor.py's rows of the same models."""
    from agnostic_saliency.metrics.detection import roc_auc

    shared = [row for row in table["models"] if row["model"] in reference]
    scores = [(row["score"], reference[row["model"]]["ours"]["score"]) for row in shared]
    flags = [sorted(row["flagged"]) == sorted(reference[row["model"]]["ours"]["flagged"]) for row in shared]
    trojaned = [reference[row["model"]] for row in shared if reference[row["model"]]["trojaned"]]
    clean = [reference[row["model"]] for row in shared if not reference[row["model"]]["trojaned"]]
    return {
        "models_compared": len(shared),
        "same_flagged": sum(flags),
        "largest_score_difference": max((abs(a - b) for a, b in scores), default=None),
        "reference_roc_auc": roc_auc([r["ours"]["score"] for r in trojaned], [r["ours"]["score"] for r in clean])
        if trojaned and clean
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=Path, default=ROOT / "artifacts" / "population")
    parser.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts (default 1,2)")
    parser.add_argument("--executor", action="append", default=[], choices=("local",),
                        help="also run scan-many without Ray (repeatable flag; 'local' only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", action="append", default=[], help="a benchmarks/backdoor.py result file")
    parser.add_argument("--out", type=Path, help="keep the scan folders here (default: a temporary folder)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--one", nargs=3, metavar=("EXECUTOR", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # the child process of one configuration
        executor, workers, out = args.one
        print(json.dumps(run_one(args.population, Path(out), int(workers), args.seed, executor)))
        return
    if not (args.population / "manifest.json").is_file():
        sys.exit(f"population.py: no {args.population / 'manifest.json'}; run python scripts/make_population.py")
    reference = {}
    for path in args.reference:
        reference.update({row["name"]: row for row in json.loads(Path(path).read_text())["models"]})
    configs = [("ray", int(n)) for n in args.workers.split(",")] + [("local", 1) for _ in args.executor]
    base = args.out or Path(tempfile.mkdtemp(prefix="population-bench-"))
    runs = []
    for executor, workers in configs:
        out = base / f"{executor}-{workers}"
        if out.exists() and any(out.iterdir()):
            sys.exit(f"population.py: {out} is not empty; a finished model would be skipped and the time would lie")
        command = [sys.executable, __file__, "--population", str(args.population), "--seed", str(args.seed),
                   "--one", executor, str(workers), str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        table = json.loads(done.stdout.strip().splitlines()[-1])
        run = {
            "executor": executor,
            "workers": workers,
            "wall_seconds": table["wall_seconds"],
            "models": len(table["models"]),
            "errors": table["errors"],
            "summary": table["summary"],
            "rows": table["models"],
        }
        if reference:
            run["reference"] = compare(table, reference)
        runs.append(run)
        print(
            f"{executor} x{workers}: {run['wall_seconds']:.0f} s for {run['models']} models "
            f"({60 * run['models'] / run['wall_seconds']:.2f} models/min), ROC-AUC {table['summary']['roc_auc']}"
            + (
                f" (benchmarks/backdoor.py: {run['reference']['reference_roc_auc']}, same flags on "
                f"{run['reference']['same_flagged']}/{run['reference']['models_compared']} models, largest score "
                f"difference {run['reference']['largest_score_difference']:.2g})"
                if reference
                else ""
            ),
            flush=True,
        )
    first = runs[0]["wall_seconds"]
    for run in runs:
        run["speedup_over_first"] = first / run["wall_seconds"]
    ray_runs = [r for r in runs if r["executor"] == "ray"]
    if len(ray_runs) > 1:
        print(
            "speed-up: "
            + ", ".join(f"{r['workers']} workers {r['speedup_over_first']:.2f}x" for r in ray_runs)
            + f" over {ray_runs[0]['workers']} (on {os.cpu_count()} CPUs)"
        )
    if args.json:
        record = {"command": " ".join(["python", "benchmarks/population.py", *sys.argv[1:]]), "cpus": os.cpu_count(),
                  "runs": runs}
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
