"""The output folder of ``explain``: per image its PNG, each input-specific map and the
input-agnostic map of the predicted class; ``panels.png``; ``explain.json``; ``report.html``."""

from __future__ import annotations

import os

import matplotlib
import torch

from .. import __version__
from ..explain.explainer import ExplainResult
from ..method.scale import SCALINGS
from ..render.html import embedded_png, render_report
from ..render.images import save_grid, save_png
from ..render.output import staged_output, write_json

LABELS = {"gradient": "gradient", "integrated-gradients": "integrated gradients", "smoothgrad": "SmoothGrad",
          "grad-cam": "Grad-CAM"}


def heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """(H, W) attribution -> (3, H, W) RGB in [0, 1]: its magnitude, scaled to its own peak, in
    the perceptually uniform ``inferno`` colour map."""
    magnitude = attribution.abs()
    magnitude = magnitude / magnitude.max().clamp_min(1e-12)
    rgb = matplotlib.colormaps["inferno"](magnitude.numpy())[..., :3]
    return torch.from_numpy(rgb).permute(2, 0, 1).float()


def _rgb(picture: torch.Tensor) -> torch.Tensor:
    return picture.expand(3, *picture.shape[1:]) if picture.shape[0] == 1 else picture[:3]


def explain_summary(result: ExplainResult, model_name: str, files: list[dict] | None = None) -> dict:
    """The JSON summary of an explain run."""
    names = result.class_names
    rows = []
    for i, (label, confidence) in enumerate(zip(result.predicted, result.confidence)):
        row = {"index": i, "predicted": label, "predicted_name": names[label], "confidence": confidence,
               "agnostic_fooling_rate": result.agnostic_fooling.get(label)}
        if files:
            row.update(files[i])
        rows.append(row)
    return {
        "model": model_name,
        "input_shape": list(result.images.shape[1:]),
        "methods": list(result.attributions),
        "grad_cam_layer": result.layer,
        "agnostic_maps": result.agnostic_source,
        "agnostic_display": result.display,
        "settings": result.settings,
        "seconds": result.seconds,
        "images": rows,
    }


def write_explain_folder(result: ExplainResult, out: str | os.PathLike, model_name: str,
                         image_names: list[str] | None = None) -> dict:
    """Write the folder (staged: an error leaves nothing half-written); returns the summary.

    Files: ``image_XXX.png``, ``image_XXX_<method>.png`` (magnitude heat maps),
    ``image_XXX_agnostic.png`` (the input-agnostic map of the predicted class, displayed as ``map``
    displays it: ``result.display``, by default ``positive``),
    ``panels.png`` (one row per image), ``explain.json`` and a self-contained ``report.html``.
    """
    height = result.images.shape[-2]
    upscale = max(1, 112 // height)
    methods = list(result.attributions)
    with staged_output(out) as stage:
        files, tiles, labels = [], [], []
        for i, label in enumerate(result.predicted):
            stem = f"image_{i:03d}"
            entry = {"image": f"{stem}.png", "maps": {}, "agnostic": f"{stem}_agnostic.png"}
            if image_names:
                entry["source"] = image_names[i]
            low, high = result.value_range
            save_png(result.images[i], stage / entry["image"], upscale, value_range=(low, high))
            tiles.append(_rgb((result.images[i] - low) / (high - low)))  # the grid's pictures are in [0, 1]
            labels.append(f"{result.class_names[label]} {result.confidence[i]:.2f}")
            for method in methods:
                picture = heatmap(result.attributions[method][i])
                entry["maps"][method] = f"{stem}_{method}.png"
                save_png(picture, stage / entry["maps"][method], upscale)
                tiles.append(picture)
                labels.append(LABELS[method])
            shown = SCALINGS[result.display](result.agnostic[label][None])[0]
            save_png(shown, stage / entry["agnostic"], upscale)
            tiles.append(_rgb(shown))
            labels.append("agnostic")
            files.append(entry)
        save_grid(torch.stack(tiles), labels, stage / "panels.png", columns=len(methods) + 2)
        summary = explain_summary(result, model_name, files)
        write_json(summary, stage / "explain.json")
        panels = []
        for row in summary["images"]:
            pictures = [("image", embedded_png(stage / row["image"]))]
            pictures += [(LABELS[m], embedded_png(stage / row["maps"][m])) for m in methods]
            pictures.append((f"input-agnostic: {row['predicted_name']}", embedded_png(stage / row["agnostic"])))
            panels.append({"row": row, "pictures": pictures})
        render_report("explain.html.j2", stage / "report.html", title=f"Explanations of {model_name}",
                      version=__version__, summary=summary, panels=panels)
    return summary
