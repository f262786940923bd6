"""The scan's output folder: scan.json, triggers.safetensors, class signatures, recovered
triggers, the anomaly bar chart and a self-contained report.html, written through a staging
folder."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from .. import __version__
from ..backdoor.result import BackdoorResult
from ..render.charts import save_bar_chart
from ..render.html import embedded_png, render_report
from ..render.images import save_grid
from ..render.output import staged_output, write_json


def signature_pictures(result: BackdoorResult, low: float, high: float) -> torch.Tensor:
    """What each class's signature stamps: the pattern where the mask is, black elsewhere,
    scaled to [0, 1] for display."""
    unit = (result.patterns - low) / (high - low)
    return (result.masks[:, None] * unit).clamp(0, 1)


def write_scan_folder(
    result: BackdoorResult, summary: dict, out: str | os.PathLike, low: float = 0.0, high: float = 1.0
) -> None:
    names = [row["name"] for row in result.classes]
    with staged_output(out) as stage:
        write_json(summary, stage / "scan.json")
        tensors = {}
        for k, (mask, pattern) in result.triggers.items():
            tensors[f"mask_{k}"] = mask.float().clone()
            tensors[f"pattern_{k}"] = pattern.float().clone()
        tensors["class_masks"] = result.masks.clone()
        tensors["class_patterns"] = result.patterns.clone()
        save_file(tensors, str(stage / "triggers.safetensors"))
        captions = [
            f"AI {row['anomaly_index']:.1f}" + ("" if row["compact"] else " blend" if row["faint_blend"] else " wide")
            for row in result.classes
        ]
        save_grid(signature_pictures(result, low, high), names, stage / "class_maps.png", captions=captions)
        for k, (mask, pattern) in result.triggers.items():
            unit = ((pattern - low) / (high - low)).clamp(0, 1)
            pictures = torch.stack([mask[None].expand_as(unit), unit, mask[None] * unit])
            save_grid(pictures, ["mask", "pattern", "stamp"], stage / f"trigger_{k}.png", columns=3)
        save_bar_chart(
            [row["anomaly_index"] for row in result.classes],
            names,
            stage / "anomaly_index.png",
            title="MAD anomaly index per class (red: flagged, i.e. anomalous, and a compact patch or a faint blend)",
            ylabel="anomaly index",
            threshold=result.settings["threshold"],
            highlight=result.flagged,
        )
        triggers = [
            {
                "index": k,
                "name": names[k],
                "kind": result.classes[k]["trigger_kind"],
                "strength": result.classes[k]["trigger_strength"],
                "pixels": int((mask > 0.5).sum()),
                "asr": result.trigger_asr.get(k),
                "asr_images": result.trigger_asr_images.get(k),
                "picture": embedded_png(stage / f"trigger_{k}.png"),
            }
            for k, (mask, _) in result.triggers.items()
        ]
        render_report(
            "scan.html.j2",
            stage / "report.html",
            title=f"Backdoor scan of {summary['model']}",
            version=__version__,
            summary=summary,
            flagged_names=[names[k] for k in result.flagged],
            triggers=triggers,
            pictures={
                "anomaly": embedded_png(stage / "anomaly_index.png"),
                "classes": embedded_png(stage / "class_maps.png"),
            },
        )
