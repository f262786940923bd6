"""ImageNet-size models end to end: the ``map`` command on 224x224 torchvision and timm models.

    OMP_NUM_THREADS=1 PYTHONPATH=src:. python benchmarks/large_models.py \\
        --json benchmarks/results/large_models_224_cpu.json
    python benchmarks/large_models.py --models torchvision:resnet50 --classes 8 --steps 5

Each model runs as a user would run it, ``agnostic-saliency map --model SPEC --random-weights``
(no weights can be downloaded here; the architecture, its normalisation and its 1000 outputs are
what matter for cost and memory), in its own child process, with a few steps of a few classes,
refinement on, under ``--memory-cap``. Per model it reports the normalisation the tool took from
the model (torchvision's weight metadata, timm's pretrained config), the exit status, wall
seconds, the child's peak RSS against the cap, the files written, and per class the map's RMS
against the budget and the fooling rate on fresh samples. A few steps cannot make a random
1000-class network read a map as its class; the fooling rates show that the run measured them,
not that the maps are good.
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

MODELS = ("torchvision:resnet50", "torchvision:vit_b_16", "torchvision:convnext_tiny", "timm:efficientnet_b0")
WRITTEN = ("maps.safetensors", "grid.png", "summary.json", "report.html")


def run_model(spec: str, args, folder: Path) -> dict:
    """One ``map`` run in a child process: its figures, peak RSS from the child's own rusage."""
    out = folder / spec.replace(":", "_")
    command = [sys.executable, "-c", "import sys; from agnostic_saliency.cli import main; sys.exit(main())", "map",
               "--model", spec, "--random-weights",
               "--target", ",".join(str(k) for k in range(args.classes)), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--refine-steps", str(args.refine_steps),
               "--eval-samples", str(args.eval_samples), "--memory-cap", str(args.memory_cap),
               "--seed", str(args.seed), "--quiet", "--out", str(out)]
    start = time.perf_counter()
    # stderr goes to a file, not a pipe: a pipe nobody reads until the child ends can fill and hang it
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read()
    row = {"model": spec, "command": " ".join(["agnostic-saliency", *command[3:]]), "exit": child.returncode,
           "seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "memory_cap_mb": args.memory_cap}
    if child.returncode != 0:
        row["error"] = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        return row
    summary = json.loads((out / "summary.json").read_text())
    row.update(input_spec=summary["input_spec"], budget=summary["budget"], norm=summary["norm"],
               written=[name for name in WRITTEN if (out / name).is_file()],
               classes=[{"index": c["index"], "rms": c["rms"], "fooling_rate": c["fooling_rate"],
                         "refined": c["refined"], "nudge_steps": c["nudge_steps"]} for c in summary["classes"]])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model specs")
    parser.add_argument("--classes", type=int, default=4, help="classes 0..N-1 of the 1000")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--refine-steps", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--memory-cap", type=float, default=4096, help="MiB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows, the settings and the machine here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
            row = run_model(spec, args, Path(folder))
            rows.append(row)
            if row["exit"] != 0:
                print(f"{spec}: exit {row['exit']} after {row['seconds']:.0f} s: {row['error']}", flush=True)
                continue
            spec_in = row["input_spec"]
            rms = max(c["rms"] for c in row["classes"])
            fooling = ", ".join(f"{c['fooling_rate']:.2f}" for c in row["classes"])
            print(f"{spec}: {row['seconds']:.0f} s, peak RSS {row['peak_rss_mib']:,.0f} MiB "
                  f"({row['peak_rss_mib'] / args.memory_cap:.2f}x the {args.memory_cap:,.0f} MiB cap); input "
                  f"{spec_in['shape']}, mean {spec_in['mean']}, std {spec_in['std']}; largest map RMS {rms:.3f} "
                  f"(budget {row['budget']}); fooling on fresh samples {fooling}; wrote {', '.join(row['written'])}",
                  flush=True)
    if args.json:
        import torch

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "settings": vars(args), "rows": rows,
            "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}}, indent=1) + "\n")
    if any(row["exit"] != 0 for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
