"""The input-agnostic side of ``explain``: a map per class, read from an earlier ``map`` run's
folder or computed here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import InputError
from ..method.scale import DEFAULT_SCALING, SCALINGS
from ..models.spec import InputSpec


def read_map_run(run_dir: str | os.PathLike, spec: InputSpec, num_classes: int) -> dict[int, torch.Tensor]:
    """The single-class maps of a ``map`` run, by class index.

    Parameters
    ----------
    run_dir : a folder written by ``agnostic-saliency map`` (``maps.safetensors`` and
        ``summary.json``).
    spec, num_classes : the model being explained; the run must have been made for the same
        input shape, and its class indices must exist in the model.

    Returns
    -------
    dict from class index to the signed (C, H, W) map in pixel space. Maps of class sets
    (``"shirt+coat"``) are left out: they explain no single predicted class.
    """
    root = Path(run_dir)
    tensors, summary = root / "maps.safetensors", root / "summary.json"
    if not tensors.is_file() or not summary.is_file():
        raise InputError(f"{root} is not the folder of a map run (needs maps.safetensors and summary.json)")
    try:
        maps = load_file(str(tensors))["maps"]
        classes = json.loads(summary.read_text(encoding="utf-8"))["classes"]
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot read the map run in {root}: {error}") from None
    if maps.dim() != 4 or tuple(maps.shape[1:]) != tuple(spec.shape) or len(maps) != len(classes):
        raise InputError(f"the maps in {root} are {tuple(maps.shape)}, not one ({', '.join(map(str, spec.shape))}) "
                         f"map per class of summary.json: made for another model?")
    found = {}
    for row, picture in zip(classes, maps):
        index = row.get("index") if isinstance(row, dict) else None
        if isinstance(index, int):
            if not 0 <= index < num_classes:
                raise InputError(f"the map run in {root} has class {index}, the model only {num_classes} classes")
            found[index] = picture.float()
    return found


def map_run_display(run_dir: str | os.PathLike) -> str:
    """How the ``map`` run in ``run_dir`` displayed its maps (its ``display`` setting), so that
    ``explain`` shows them the same way; :data:`DEFAULT_SCALING` where the run does not say."""
    try:
        settings = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_SCALING
    display = settings.get("display") if isinstance(settings, dict) else None
    return display if display in SCALINGS else DEFAULT_SCALING


def compute_maps(model, spec: InputSpec, class_names: list[str], classes: list[int], **settings
                 ) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """Input-agnostic maps of ``classes`` computed with :class:`InputAgnosticSaliency`.

    ``settings`` are passed to ``attribute`` as keyword arguments (``steps``, ``seed``,
    ``progress``, ...). Returns the maps by class index and each map's fooling rate on fresh
    samples.
    """
    from ..method.engine import InputAgnosticSaliency

    classes = sorted(set(classes))
    explainer = InputAgnosticSaliency(model, spec, class_names)
    result = explainer.attribute(targets=classes, **settings)
    maps = {c: result.maps[k].detach().float().cpu() for k, c in enumerate(classes)}
    fooling = {c: float(result.fidelity.fooling_rate[k]) for k, c in enumerate(classes)}
    return maps, fooling
