"""The last stage: the output folder of a map run (tensors, PNGs, grid, JSON summary, HTML report)."""

from __future__ import annotations

import os
import re

from safetensors.torch import save_file

from .. import __version__
from ..render.html import embedded_png, render_report
from ..render.images import save_grid, save_png
from ..render.output import staged_output, write_json
from ..result import SaliencyResult


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "class"


def map_summary(result: SaliencyResult, model_name: str, class_names: list[str], recognisability=None,
                extra: dict | None = None) -> dict:
    """The JSON summary: settings, timing, and per-target fidelity (final and unrefined)."""
    config = result.config
    classes = result.per_class(class_names)
    if recognisability is not None:
        for k, row in enumerate(classes):
            if recognisability.judge_label is not None:
                row["judge_label"] = recognisability.judge_label[k]
                row["judge_confidence"] = recognisability.judge_confidence[k]
                row["judge_reads_concept"] = recognisability.judge_reads_concept[k]
    summary = {
        "model": model_name,
        "input_shape": config["input_spec"]["shape"],
        "input_spec": config["input_spec"],
        "distribution": config["distribution"],
        "norm": config["norm"],
        "budget": config["budget"],
        "steps": config["steps"],
        "batch_size": config["batch_size"],
        "seed": config["seed"],
        "seconds": result.seconds,
        "sample_gradients": result.sample_gradients,
        "settings": config,
        "classes": classes,
    }
    if extra:
        summary.update(extra)
    return summary


def write_map_folder(result: SaliencyResult, summary: dict, out: str | os.PathLike) -> None:
    """maps.safetensors (K, C, H, W) signed pixel-space maps, one PNG per target, grid.png with
    names, summary.json and a self-contained report.html; staged so that a failure leaves
    nothing half-written."""
    with staged_output(out) as stage:
        # without refinement both names may hold the same tensor, which safetensors refuses: only
        # then a copy (at 1000 maps of 3x224x224 a copy is 0.6 GB)
        unrefined = result.unrefined_maps
        if unrefined.untyped_storage().data_ptr() == result.maps.untyped_storage().data_ptr():
            unrefined = unrefined.clone()
        save_file({"maps": result.maps.contiguous(), "unrefined_maps": unrefined.contiguous()},
                  str(stage / "maps.safetensors"))
        # the displayed maps span the model's pixel range, e.g. [0, 255]: the writers map it to 8 bits
        value_range = tuple(result.config.get("input_spec", {}).get("value_range", (0.0, 1.0)))
        height = result.displayed.shape[-2]
        upscale = max(1, 112 // height)
        pngs = []
        for k, name in enumerate(result.names):
            pngs.append(stage / f"map_{k:03d}_{safe_filename(name)}.png")
            save_png(result.displayed[k], pngs[-1], upscale, value_range)
        captions = [f"fool {row['fooling_rate']:.2f}" for row in summary["classes"]]
        save_grid(result.displayed, result.names, stage / "grid.png", captions=captions, value_range=value_range)
        write_json(summary, stage / "summary.json")
        rows = summary["classes"]
        render_report("maps.html.j2", stage / "report.html", title=f"Input-agnostic maps of {summary['model']}",
                      version=__version__, summary=summary, pictures={"grid": embedded_png(stage / "grid.png")},
                      thumbnails=[embedded_png(png) for png in pngs],
                      has_real=any("real_fooling_rate" in row for row in rows),
                      has_judge=any("judge_label" in row for row in rows))
