"""Whole runs, from a notebook or the command line: load a model, compute its maps or scan it,
and write the output folder. The command line is a thin layer over these functions.

    >>> from agnostic_saliency import api
    >>> loaded = api.load("fmnist-cnn")
    >>> summary = api.map_to_folder(loaded, "runs/fmnist", targets="all", seed=0)
    >>> report = api.scan_to_folder(loaded, "runs/fmnist-scan")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch

from .errors import InputError
from .method.distributions import DEFAULT_DISTRIBUTION
from .models import LoadedModel, load_model
from .render.output import claimed_output_dir

DEFAULT_BUDGET = {"l2": 0.25, "linf": 0.1}  # RMS (l2) or peak (linf), as a fraction of the pixel range


def resolve_device(choice: str | torch.device | None) -> torch.device:
    """``None``: CUDA where available, else the CPU; otherwise the named device, if it exists."""
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise InputError(f"unknown device {choice!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {choice} requested but CUDA is not available")
    return device


def load(
    model: str,
    *,
    weights: str | os.PathLike | None = None,
    input_shape: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    value_range: tuple[float, float] | None = None,
    class_names: list[str] | None = None,
    random_weights: bool = False,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """:func:`agnostic_saliency.models.load_model`, then moved to ``device`` (default: CUDA
    where available)."""
    if value_range is not None and len(value_range) != 2:
        raise InputError("the value range needs two numbers LOW,HIGH")
    loaded = load_model(model, weights=weights, input_shape=input_shape, mean=mean, std=std,
                        value_range=value_range, class_names=class_names, random_weights=random_weights)
    loaded.model.to(resolve_device(device))
    return loaded


def map_to_folder(
    loaded: LoadedModel,
    out: str | os.PathLike,
    *,
    targets: str | int | Sequence = "all",
    distribution: str = DEFAULT_DISTRIBUTION,
    images: str | os.PathLike | None = None,
    held_out: str | os.PathLike | None = None,
    norm: str = "l2",
    budget: float | None = None,
    judge: str | None = None,
    judge_weights: str | os.PathLike | None = None,
    judge_random_weights: bool = False,
    memory_cap_mb: float = 2048,
    progress: bool = True,
    **settings,
) -> dict:
    """Compute the maps of ``targets`` and write ``out``: ``maps.safetensors``, one PNG per map,
    ``grid.png``, ``summary.json`` and ``report.html``. Returns the summary.

    ``images`` is a folder of unlabeled images (for the ``images`` distribution), ``held_out`` a
    folder of real images on which fidelity is also measured, ``judge`` an independent model
    spec of the same task that reads the displayed maps. ``budget`` defaults to
    :data:`DEFAULT_BUDGET` for the norm. Every other keyword (``steps``, ``batch_size``,
    ``seed``, ``precision``, ...) goes to :meth:`InputAgnosticSaliency.attribute`.
    """
    with claimed_output_dir(out):  # fail before any work if the folder cannot be written
        return _map(loaded, out, targets, distribution, images, held_out, norm, budget, judge, judge_weights,
                    judge_random_weights, memory_cap_mb, progress, settings)


def _map(loaded, out, targets, distribution, images, held_out, norm, budget, judge, judge_weights,
         judge_random_weights, memory_cap_mb, progress, settings) -> dict:
    from .data.images import load_image_folder
    from .method.engine import InputAgnosticSaliency
    from .metrics.recognisability import measure_recognisability
    from .models.spec import NormalizedModel
    from .output import map_summary, write_map_folder

    if judge_weights and not judge:
        raise InputError("judge weights need a judge model")
    pool = real = None
    skipped = 0
    if images:
        folder = load_image_folder(images, loaded.spec.shape)
        pool, skipped = folder.images, folder.skipped
    elif "images" in str(distribution).split("+"):
        raise InputError("the images distribution needs a folder of images (--images DIR)")
    if held_out:
        folder = load_image_folder(held_out, loaded.spec.shape)
        real, skipped = folder.images, skipped + folder.skipped
    if budget is None:
        if norm not in DEFAULT_BUDGET:
            raise InputError(f"unknown norm {norm!r}: l2 or linf")
        budget = DEFAULT_BUDGET[norm]
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names, memory_cap_mb=memory_cap_mb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        result = explainer.attribute(targets=targets, distribution=distribution, norm=norm, budget=budget,
                                     real_images=real, images=pool, progress=progress, **settings)
    recognisability = None
    if judge:
        reader = load_model(judge, weights=judge_weights, input_shape=loaded.spec.shape,
                            random_weights=judge_random_weights)
        if len(reader.class_names) != explainer.num_classes:
            raise InputError(f"the judge has {len(reader.class_names)} classes, the model {explainer.num_classes}")
        recognisability = measure_recognisability(
            result.maps, result.displayed, result.concepts, judge=NormalizedModel(reader.model, reader.spec).eval())
    summary = map_summary(result, loaded.name, loaded.class_names, recognisability,
                          extra={"unreadable_images_skipped": skipped, "weights": loaded.weights})
    write_map_folder(result, summary, out)
    return summary


def scan_to_folder(
    loaded: LoadedModel,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    distribution: str = "shapes",
    **settings,
) -> dict:
    """Scan every class of the model for a backdoor and write ``out``: ``scan.json``,
    ``triggers.safetensors``, the class signatures, recovered triggers, the anomaly chart and
    ``report.html``. Returns scan.json's content.

    ``images`` is an optional folder of unlabeled images mixed into the samples (the scan is
    data-free without it). Every other keyword goes to :func:`agnostic_saliency.backdoor.scan.scan`.
    """
    with claimed_output_dir(out):
        from .backdoor.scan import scan
        from .data.images import load_image_folder
        from .output import write_scan_folder

        pool, skipped = None, 0
        if images:
            folder = load_image_folder(images, loaded.spec.shape)
            pool, skipped = folder.images, folder.skipped
            if distribution == "shapes":
                distribution = "shapes+images"
        result = scan(loaded.model, loaded.spec, loaded.class_names, distribution=distribution, images=pool,
                      **settings)
        summary = {"model": loaded.name, "weights": loaded.weights, "input_shape": list(loaded.spec.shape),
                   **result.to_dict(), "unreadable_images_skipped": skipped}
        write_scan_folder(result, summary, out, *loaded.spec.value_range)
        return summary
