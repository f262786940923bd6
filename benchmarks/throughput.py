"""How close the map loop runs to the model's own speed, side by side in one run.

    PYTHONPATH=src:. python benchmarks/throughput.py --json benchmarks/results/throughput_cpu.json
    PYTHONPATH=src:. python benchmarks/throughput.py --sections efficiency --profile
    bash benchmarks/device_throughput.sh          # the GPU sections, under 5 minutes

Sections (``--sections``, comma-separated; default all that apply to the device):

- ``efficiency``: per-sample gradients per second of the engine's step loop (one
  ``attribute(refine=False, eval_samples=1)`` call, timed whole) divided by those of a bare loop
  of ``model(x)`` forward and backward to the input (parameters frozen), the same K maps x B
  samples per step in the same chunks, the same precision. On fmnist-cnn (10 classes) and on a
  random torchvision ResNet-18 with 10 classes at 3x64x64, batch 64. The two alternate
  ``--repeats`` times and the medians are compared, so load from other processes hits both.
- ``batching``: all classes in one ``attribute`` call against one call per class, the same
  steps, at 10 classes (fmnist-cnn) and 100 (the fmnist-cnn architecture with 100 random outputs);
  on a CPU also the batched call without the engine's CPU pass limit (``CPU_PASS_BYTES``).
- ``memory``: peak memory of 1000 classes of random torchvision ResNet-18 and ResNet-50 at
  3x224x224 (1 step, batch 2, no refinement, 2 evaluation samples, ``memory_cap_mb=4096``), each
  in its own process: peak RSS on the CPU (the child process is limited to ``--memory-limit-gb``
  of data so that it fails instead of exhausting the machine), ``max_memory_allocated`` on a GPU.
- ``early_stopping``: the default fmnist-cnn run (the API's settings: 600 steps, refinement,
  fidelity) with early stopping off and on (``--stop-target``, ``--stop-window``) at each of
  ``--early-seeds``, the two alternating per seed: wall and process CPU seconds, per-sample
  gradients, each map's nudge steps, test fooling on the 10,000 Fashion-MNIST test images and the
  observers' readings of the written PNGs (the adversarially trained judge and the panel of
  benchmarks/observers.py, as in benchmarks/maps.py). Run it with ``OMP_NUM_THREADS=1``: CPU
  seconds are then the figure that other processes on the machine disturb least.
- ``flops`` (GPU only): achieved TFLOP/s of ResNet-50 forward and backward at 224x224 in bf16,
  counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplications and
  convolutions), for the bare loop and the engine, against the card's dense bf16 peak.

A new section is a function ``(args) -> dict`` added to ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from agnostic_saliency import InputAgnosticSaliency, InputSpec
from agnostic_saliency.models.architectures import FmnistCNN
from agnostic_saliency.models.running import channels_last, frozen
from agnostic_saliency.models.spec import autocast_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; the
# first entry whose words all appear in the device's name wins, so specific names come first.
BF16_DENSE_PEAK = [
    (("H200", "NVL"), 835.0),
    (("H200",), 989.0),  # SXM
    (("H100", "NVL"), 835.0),
    (("H100", "PCIe"), 756.0),
    (("H100",), 989.0),  # SXM (HBM3)
    (("GH200",), 989.0),
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("A10",), 125.0),
]


# -- models and machine -------------------------------------------------------------------------
def fmnist_cnn(device, classes: int = 10):
    """The built-in fmnist-cnn (trained weights) for 10 classes; the same architecture with random
    weights for any other count."""
    if classes == 10:
        from agnostic_saliency.api import load

        loaded = load("fmnist-cnn", device=device)
        return loaded.model.eval(), loaded.spec, "fmnist-cnn"
    torch.manual_seed(0)
    return FmnistCNN(num_classes=classes).eval().to(device), InputSpec((1, 28, 28)), f"fmnist-cnn-{classes}-random"


def resnet(name: str, device, classes: int, side: int):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes).eval().to(device)
    spec = InputSpec((3, side, side), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return model, spec, f"{name}-random-{classes}cls-{side}px"


def machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def explainer_for(model, spec, memory_cap_mb: float, compile: bool) -> InputAgnosticSaliency:
    # ``compile`` only when asked: the script also times engines from before the option existed.
    return InputAgnosticSaliency(model, spec, memory_cap_mb=memory_cap_mb, **({"compile": True} if compile else {}))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, function, *arguments):
    sync(device)
    start = time.perf_counter()
    value = function(*arguments)
    sync(device)
    return time.perf_counter() - start, value


# -- the two loops ------------------------------------------------------------------------------
def engine_run(explainer: InputAgnosticSaliency, classes: int, steps: int, batch: int, precision: str, seed=0):
    """One map run of ``classes`` maps, nudging only: (seconds, per-sample gradients)."""
    seconds, result = timed(explainer.device, lambda: explainer.attribute(
        targets=list(range(classes)), steps=steps, batch_size=batch, refine=False, eval_samples=1,
        precision=precision, progress=False, seed=seed))
    return seconds, result.sample_gradients


def engine_passes(explainer: InputAgnosticSaliency, classes: int, batch: int, eval_samples: int = 1) -> list[int]:
    """The inputs of each forward and backward pass of one engine step, as the engine plans them:
    classes streamed in chunks under the memory cap, each chunk's maps x samples split to fit the
    activations' share."""
    per_chunk, activation_bytes = explainer._plan_memory(classes, batch, eval_samples, None)
    passes = []
    for first in range(0, classes, per_chunk):
        maps = min(per_chunk, classes - first)
        passes += [(m.stop - m.start) * (s.stop - s.start) for m, s in explainer._chunks(maps, batch, activation_bytes)]
    return passes


def bare_run(explainer: InputAgnosticSaliency, classes: int, steps: int, batch: int, precision: str):
    """``model(x)`` forward and backward to x, parameters frozen, for ``steps`` steps of the
    engine's own chunks of ``classes`` x ``batch`` inputs: (seconds, per-sample gradients)."""
    model, device = explainer.model, explainer.device
    dtype = autocast_dtype(precision, device)
    chunks = engine_passes(explainer, classes, batch)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(n, *explainer.spec.shape, generator=generator).to(device).requires_grad_(True)
              for n in chunks]
    labels = [torch.randint(0, explainer.num_classes, (n,), generator=generator).to(device) for n in chunks]

    def loop():
        for _ in range(steps):
            for x, y in zip(inputs, labels):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, reduction="sum")
                torch.autograd.grad(loss, x)

    with frozen(model), channels_last(model, enabled=dtype is not None):
        seconds, _ = timed(device, loop)
    return seconds, steps * sum(chunks)


def compare(explainer, classes, steps, batch, precision, repeats) -> dict:
    """Both loops, alternating, after one short warm-up of each; medians of the rates."""
    engine_run(explainer, classes, 1, batch, precision)
    bare_run(explainer, classes, 1, batch, precision)
    engine_rates, bare_rates = [], []
    for _ in range(repeats):
        seconds, count = bare_run(explainer, classes, steps, batch, precision)
        bare_rates.append(count / seconds)
        seconds, count = engine_run(explainer, classes, steps, batch, precision)
        engine_rates.append(count / seconds)
    engine, bare = statistics.median(engine_rates), statistics.median(bare_rates)
    return {"engine_per_s": engine, "bare_per_s": bare, "efficiency": engine / bare,
            "engine_rates": engine_rates, "bare_rates": bare_rates}


def profile_engine(explainer, classes, steps, batch, precision) -> None:
    """The operators where the engine's loop spends its time (``--profile``)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if explainer.device.type == "cuda" else [])
    with profile(activities=activities) as recorded:
        engine_run(explainer, classes, steps, batch, precision)
    key = "self_cuda_time_total" if explainer.device.type == "cuda" else "self_cpu_time_total"
    print(recorded.key_averages().table(sort_by=key, row_limit=25), flush=True)


# -- sections -----------------------------------------------------------------------------------
def efficiency(args) -> dict:
    device = torch.device(args.device)
    cases = [(*fmnist_cnn(device), args.fmnist_steps), (*resnet("resnet18", device, 10, 64), args.resnet_steps)]
    rows = {}
    for model, spec, name, steps in cases:
        explainer = explainer_for(model, spec, args.memory_cap, args.compile)
        row = compare(explainer, 10, steps, args.batch_size, args.precision, args.repeats)
        row.update(classes=10, batch_size=args.batch_size, steps=steps, precision=args.precision,
                   chunks=len(engine_passes(explainer, 10, args.batch_size)), memory_cap_mb=args.memory_cap,
                   compile=args.compile)
        rows[name] = row
        print(f"efficiency {name}: engine {row['engine_per_s']:,.0f} per-sample gradients/s, bare "
              f"{row['bare_per_s']:,.0f}/s, ratio {row['efficiency']:.3f} (10 maps x {args.batch_size} samples, "
              f"{steps} steps, {row['chunks']} chunk(s), {args.precision})", flush=True)
        if args.profile:
            profile_engine(explainer, 10, steps, args.batch_size, args.precision)
    return rows


def per_class_loop(explainer, classes: int, steps: int, args) -> int:
    """One ``attribute`` call per class; the per-sample gradients of all of them."""
    return sum(explainer.attribute(targets=[k], steps=steps, batch_size=args.batch_size, refine=False,
                                   eval_samples=1, precision=args.precision, progress=False, seed=k).sample_gradients
               for k in range(classes))


def batching(args) -> dict:
    device = torch.device(args.device)
    rows = {}
    for classes in (10, 100):
        model, spec, name = fmnist_cnn(device, classes)
        explainer = explainer_for(model, spec, args.memory_cap, args.compile)
        steps = args.batching_steps
        engine_run(explainer, classes, 1, args.batch_size, args.precision)  # warm-up
        batched, unlimited, looped = [], [], []
        for _ in range(args.batching_repeats):
            seconds, count = engine_run(explainer, classes, steps, args.batch_size, args.precision)
            batched.append(seconds)
            if device.type == "cpu":  # the same, with passes as large as the cap allows (no CPU pass limit)
                explainer.CPU_PASS_BYTES = None
                unlimited.append(engine_run(explainer, classes, steps, args.batch_size, args.precision)[0])
                del explainer.CPU_PASS_BYTES  # back to the class's limit
            seconds, looped_count = timed(device, per_class_loop, explainer, classes, steps, args)
            assert looped_count == count, (looped_count, count)  # the same work
            looped.append(seconds)
        row = {"model": name, "classes": classes, "steps": steps, "batch_size": args.batch_size,
               "per_sample_gradients": count, "batched_s": statistics.median(batched),
               "per_class_loop_s": statistics.median(looped), "batched_runs_s": batched, "per_class_runs_s": looped,
               "passes": len(engine_passes(explainer, classes, args.batch_size))}
        row["speedup"] = row["per_class_loop_s"] / row["batched_s"]
        line = (f"batching {classes} classes ({name}): batched {row['batched_s']:.2f} s in {row['passes']} "
                f"pass(es) a step, one call per class {row['per_class_loop_s']:.2f} s, batched {row['speedup']:.2f}x "
                f"faster ({count:,} per-sample gradients each)")
        if unlimited:
            row.update(batched_no_pass_limit_s=statistics.median(unlimited), batched_no_pass_limit_runs_s=unlimited)
            row["speedup_no_pass_limit"] = row["per_class_loop_s"] / row["batched_no_pass_limit_s"]
            line += (f"; without the CPU pass limit {row['batched_no_pass_limit_s']:.2f} s "
                     f"({row['speedup_no_pass_limit']:.2f}x)")
        rows[f"{classes}_classes"] = row
        print(line, flush=True)
    return rows


def early_stopping(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import maps  # benchmarks/maps.py: the observers' reading of the written maps, as there

    from agnostic_saliency.data import load_fashion_mnist
    from agnostic_saliency.method.scale import DEFAULT_SCALING, SCALINGS

    device = torch.device(args.device)
    model, spec, name = fmnist_cnn(device)
    explainer = InputAgnosticSaliency(model, spec)
    judges = {judge: maps.load_observer(judge) for judge in maps.JUDGES}
    test_x, _ = load_fashion_mnist("test")
    test_x = test_x[: 500 if args.quick else None].to(device)
    settings = {"steps": 20, "refine_steps": 10} if args.quick else {}
    rows = []
    for index, seed in enumerate(int(s) for s in args.early_seeds.split(",")):
        modes = (False, True) if index % 2 == 0 else (True, False)  # alternate which runs first
        for early in modes:
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            result = explainer.attribute(targets="all", seed=seed, progress=False, early_stop=early,
                                         stop_target=args.stop_target, stop_window=args.stop_window, **settings)
            sync(device)
            row = {"seed": seed, "early_stop": early, "wall_s": time.perf_counter() - wall,
                   "cpu_s": time.process_time() - cpu, "per_sample_gradients": result.sample_gradients,
                   "nudge_steps": result.nudge_steps, **maps.fidelity(model, result.maps.to(device), test_x)}
            with tempfile.TemporaryDirectory() as folder:
                pictures = maps.as_written(SCALINGS[DEFAULT_SCALING](result.maps.cpu()), Path(folder), "map")
            row.update({k: v for k, v in maps.observe(pictures, judges).items() if not k.endswith("_labels")})
            rows.append(row)
            print(f"early stopping {'on ' if early else 'off'} seed {seed}: wall {row['wall_s']:.0f} s, CPU "
                  f"{row['cpu_s']:.0f} s, {row['per_sample_gradients']:,} gradients, test fooling {row['fool']:.3f} "
                  f"(weakest {row['min']:.3f}), robust {row['robust']}, mlp {row['mlp']}, pool {row['pool']}, "
                  f"gap {row['gap']}", flush=True)
    summary = {}
    for early in (False, True):
        chosen = [row for row in rows if row["early_stop"] == early]
        summary["on" if early else "off"] = {
            column: [row[column] for row in chosen]
            for column in ("wall_s", "cpu_s", "per_sample_gradients", "fool", "min", "robust", "mlp", "pool", "gap")}
    for column in ("wall_s", "cpu_s", "per_sample_gradients"):
        ratios = [on / off for on, off in zip(summary["on"][column], summary["off"][column])]
        summary[f"{column}_ratio_on_off"] = ratios
        print(f"early stopping on / off, {column}: " + ", ".join(f"{r:.3f}" for r in ratios)
              + f" (mean {statistics.mean(ratios):.3f})", flush=True)
    for column in ("fool", "min", "robust", "mlp", "pool", "gap"):
        off, on = summary["off"][column], summary["on"][column]
        print(f"early stopping {column}: off {min(off):g}-{max(off):g}, on {min(on):g}-{max(on):g} "
              f"(min-max over seeds)", flush=True)
    return {"model": name, "stop_target": args.stop_target, "stop_window": args.stop_window,
            "settings": settings or "the API's defaults", "test_images": len(test_x), "runs": rows,
            "summary": summary}


MEMORY_CASES = {"resnet18": ("resnet18", 1000, 224), "resnet50": ("resnet50", 1000, 224)}
QUICK_MEMORY_CASES = {"resnet18": ("resnet18", 20, 64)}


def memory_case(args) -> dict:
    """In the child process: one memory case, its figures as a dict (printed as JSON)."""
    device = torch.device(args.device)
    name, classes, side = (QUICK_MEMORY_CASES if args.quick else MEMORY_CASES)[args.memory_case]
    row: dict = {}
    if args.memory_timeout_s > 0:
        # Past the time limit, report the peak so far and stop: the compute of 1000 classes at
        # 224x224 can take long on a small CPU, while the memory question is answered early.
        def give_up():
            row.update(status=f"stopped after {args.memory_timeout_s:.0f} s: peak so far",
                       peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20)
            if device.type == "cuda":
                row["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            print(json.dumps(row), flush=True)
            os._exit(0)

        watchdog = threading.Timer(args.memory_timeout_s, give_up)
        watchdog.daemon = True
        watchdog.start()
    if device.type == "cpu" and args.memory_limit_gb > 0:
        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    model, spec, label = resnet(name, device, classes, side)
    explainer = InputAgnosticSaliency(model, spec, memory_cap_mb=args.memory_cap_case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model_bytes = torch.cuda.memory_allocated(device)
    row.update(model=label, classes=classes, input=[3, side, side], steps=1, batch_size=2, eval_samples=2,
               memory_cap_mb=args.memory_cap_case, memory_limit_gb=args.memory_limit_gb if device.type == "cpu"
               else None, rss_before_run_mib=before / 2**20, sample_bytes=explainer.sample_bytes,
               classes_per_chunk=explainer._plan_memory(classes, 2, 2, None)[0])
    start = time.perf_counter()
    try:
        explainer.attribute(targets="all", steps=1, batch_size=2, refine=False, eval_samples=2, progress=False)
        row["status"] = "ok"
    except (RuntimeError, MemoryError) as error:
        row["status"] = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    row["seconds"] = time.perf_counter() - start
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20
    if device.type == "cuda":
        row["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["model_allocated_mib"] = model_bytes / 2**20
    return row


def memory(args) -> dict:
    rows = {}
    cases = QUICK_MEMORY_CASES if args.quick else MEMORY_CASES
    chosen = [c.strip() for c in args.memory_cases.split(",") if c.strip()] if args.memory_cases else list(cases)
    for case in chosen:
        command = [sys.executable, __file__, "--device", args.device, "--memory-case", case,
                   "--memory-cap-case", str(args.memory_cap_case), "--memory-limit-gb", str(args.memory_limit_gb),
                   "--memory-timeout-s", str(args.memory_timeout_s)]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"status": f"child exited {done.returncode}: {tail[:300]}"}
        else:
            row = json.loads(lines[-1])
        rows[case] = row
        peak = row.get("peak_allocated_mib", row.get("peak_rss_mib"))
        what = "peak GPU memory allocated" if "peak_allocated_mib" in row else "peak RSS"
        figure = "n/a" if peak is None else f"{peak:,.0f} MiB ({peak / args.memory_cap_case:.1f}x the cap)"
        print(f"memory {case}: {what} {figure} against a cap of {args.memory_cap_case:,.0f} MiB; "
              f"{row.get('status')}", flush=True)
    return rows


def dense_peak(name: str) -> float | None:
    return next((peak for words, peak in BF16_DENSE_PEAK if all(w in name for w in words)), None)


def flops(args) -> dict:
    """Achieved TFLOP/s of ResNet-50 forward and backward at 224x224 in bf16 (GPU only)."""
    device = torch.device(args.device)
    if device.type != "cuda":
        print("flops: skipped (no GPU: the peak compared against is a GPU's bf16 tensor-core peak)", flush=True)
        return {"skipped": "needs a CUDA device"}
    from torch.utils.flop_counter import FlopCounterMode

    model, spec, name = resnet("resnet50", device, 1000, 224)
    explainer = explainer_for(model, spec, args.flops_memory_cap, args.compile)
    # FLOPs of one sample's forward and backward to the input, as the engine runs it (the model
    # with frozen parameters in bf16 autocast): counted on 2 samples, halved.
    x = torch.rand(2, *spec.shape, device=device, requires_grad=True)
    with frozen(model), channels_last(model), FlopCounterMode(display=False) as counter:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = explainer.wrapped(x)
        torch.autograd.grad(logits.float().logsumexp(-1).sum(), x)
    per_sample = counter.get_total_flops() / 2
    classes, batch, steps = args.flops_classes, args.flops_batch, args.flops_steps
    row = compare(explainer, classes, steps, batch, "bf16", args.repeats)
    gpu = torch.cuda.get_device_name(device)
    peak = dense_peak(gpu)
    row.update(model=name, gpu=gpu, classes=classes, batch_size=batch, steps=steps, flops_per_sample=per_sample,
               engine_tflops=row["engine_per_s"] * per_sample / 1e12, bare_tflops=row["bare_per_s"] * per_sample / 1e12,
               dense_bf16_peak_tflops=peak, compile=args.compile)
    share = (lambda t: f" = {t / peak:.1%} of the {peak:.0f} TFLOP/s dense bf16 peak") if peak else (lambda t: "")
    print(f"flops {name} bf16 on {gpu}: {per_sample / 1e9:.1f} GFLOP per sample (forward + backward to the input); "
          f"bare {row['bare_tflops']:.0f} TFLOP/s{share(row['bare_tflops'])}; engine {row['engine_tflops']:.0f} "
          f"TFLOP/s{share(row['engine_tflops'])}; engine/bare {row['efficiency']:.3f}", flush=True)
    if args.profile:
        profile_engine(explainer, classes, 2, batch, "bf16")
    return row


SECTIONS = {"efficiency": efficiency, "batching": batching, "early_stopping": early_stopping, "memory": memory,
            "flops": flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", help="efficiency and batching: fp32, bf16 or fp16 (CUDA)")
    parser.add_argument("--compile", action="store_true", help="the engine compiles the model (efficiency, flops)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--memory-cap", type=float, default=2048, help="MiB, efficiency and batching (the default)")
    parser.add_argument("--fmnist-steps", type=int, help="efficiency steps (default 20 on a CPU, 100 on a GPU)")
    parser.add_argument("--resnet-steps", type=int, help="efficiency steps (default 2 on a CPU, 50 on a GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batching-steps", type=int, default=10)
    parser.add_argument("--batching-repeats", type=int, default=2)
    parser.add_argument("--early-seeds", default="0,1,2", help="early_stopping: the seeds")
    parser.add_argument("--stop-target", type=float, default=0.9, help="early_stopping: the stop target")
    parser.add_argument("--stop-window", type=int, default=50, help="early_stopping: the stop window")
    parser.add_argument("--memory-cap-case", type=float, default=4096, help="MiB, the memory section's cap")
    parser.add_argument("--memory-limit-gb", type=float, default=14.0,
                        help="CPU: the memory section's child may hold at most this much data (0: no limit)")
    parser.add_argument("--memory-cases", help=f"some of {', '.join(MEMORY_CASES)} (default all)")
    parser.add_argument("--memory-timeout-s", type=float, default=0,
                        help="stop a memory case after this long and report its peak so far (0: never)")
    parser.add_argument("--flops-classes", type=int, default=16)
    parser.add_argument("--flops-batch", type=int, default=64)
    parser.add_argument("--flops-steps", type=int, default=10)
    parser.add_argument("--flops-memory-cap", type=float, default=65536)
    parser.add_argument("--profile", action="store_true", help="print the engine's operators by time")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks that every section runs")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)  # the memory section's child process
    parser.add_argument("--json", help="write every figure, the machine and the command here")
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args)), flush=True)
        return
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.fmnist_steps = args.fmnist_steps or (100 if gpu else 20)
    args.resnet_steps = args.resnet_steps or (50 if gpu else 2)
    if args.quick:
        args.fmnist_steps, args.resnet_steps, args.repeats = 2, 1, 1
        args.batching_steps, args.batching_repeats, args.flops_steps = 1, 1, 2
    names = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    report = {"machine": machine(device), "command": " ".join(["python", *sys.argv]), "sections": {}}
    print(f"machine: {report['machine']}", flush=True)
    for name in names:
        report["sections"][name] = SECTIONS[name](args)
        if args.json:  # after every section: a run cut short keeps what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
