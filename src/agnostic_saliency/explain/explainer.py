"""``explain``: input-specific maps (Captum) and the input-agnostic map of the predicted class,
side by side, per image; and the output folder that shows them.

    from agnostic_saliency import load_model
    from agnostic_saliency.explain import explain_images
    from agnostic_saliency.output import write_explain_folder

    loaded = load_model("fmnist-cnn")
    result = explain_images(loaded.model, loaded.spec, loaded.class_names, images)
    write_explain_folder(result, "runs/explain", model_name="fmnist-cnn")
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..method.scale import DEFAULT_SCALING, SCALINGS
from ..models.running import frozen
from ..models.spec import InputSpec, NormalizedModel
from . import methods as captum_methods
from .agnostic import compute_maps, map_run_display, read_map_run


@dataclass
class ExplainResult:
    """Everything ``explain`` found, as plain tensors and lists.

    Attributes
    ----------
    images : (N, C, H, W) the explained images in pixel space.
    predicted, confidence : per image the predicted class and its softmax probability.
    attributions : method name -> (N, H, W) input-specific maps for the predicted class.
    agnostic : class index -> (C, H, W) signed input-agnostic map (the predicted classes only).
    agnostic_source : ``"computed"`` or the folder of the ``map`` run the maps were read from.
    agnostic_fooling : class index -> fooling rate on fresh samples (computed maps only).
    display : how the input-agnostic maps are shown (:data:`agnostic_saliency.method.scale.SCALINGS`),
        as ``map`` shows them: the map run's ``display`` setting, or that of the computed maps
        (default ``positive``).
    value_range : the images' pixel range (the spec's), in which their PNGs are written.
    class_names, layer, settings, seconds : the rest of what ``explain.json`` reports.
    """

    images: torch.Tensor
    predicted: list[int]
    confidence: list[float]
    attributions: dict[str, torch.Tensor]
    agnostic: dict[int, torch.Tensor]
    agnostic_source: str
    class_names: list[str]
    layer: str | None = None
    agnostic_fooling: dict[int, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    display: str = DEFAULT_SCALING
    value_range: tuple[float, float] = (0.0, 1.0)


@torch.no_grad()
def predict(model, spec: InputSpec, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and their probabilities, model in eval mode for the call only."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    wrapped = NormalizedModel(model, spec).to(device)
    labels, probs = [], []
    with frozen(model):
        for start in range(0, len(images), batch_size):
            p = wrapped(images[start:start + batch_size].to(device).float()).softmax(1)
            top = p.max(1)
            labels.append(top.indices.cpu())
            probs.append(top.values.cpu())
    return torch.cat(labels), torch.cat(probs)


def explain_images(
    model,
    spec: InputSpec,
    class_names: Sequence[str],
    images: torch.Tensor,
    methods: Sequence[str] = captum_methods.METHODS,
    layer: str | None = None,
    maps_dir: str | os.PathLike | None = None,
    steps: int = 600,
    seed: int = 0,
    progress: bool = True,
    method_settings: dict | None = None,
    **map_settings,
) -> ExplainResult:
    """Explain the predicted class of each image, input-specifically and input-agnostically.

    Parameters
    ----------
    model, spec, class_names : the classifier, its input spec and its class names (as from
        :func:`agnostic_saliency.load_model`).
    images : (N, C, H, W) in the spec's pixel range.
    methods : Captum methods to run (default all of
        :data:`agnostic_saliency.explain.methods.METHODS`).
    layer : Grad-CAM's layer by module name (default: the last ``Conv2d``).
    maps_dir : the folder of an earlier ``map`` run to read the input-agnostic maps from; it must
        hold a single-class map for every predicted class. Without it the maps of the predicted
        classes are computed (``steps``, ``seed`` and ``map_settings`` go to
        :meth:`InputAgnosticSaliency.attribute`). The maps are shown as ``map`` shows them: with
        the run's ``display`` setting, or ``map_settings["display"]`` (default ``positive``), which
        also overrides the run's.
    method_settings : keyword arguments of :func:`agnostic_saliency.explain.methods.attribute`
        (``ig_steps``, ``smoothgrad_samples``, ``smoothgrad_noise``, ``batch_size``).
    """
    started = time.perf_counter()
    images = torch.as_tensor(images).float()
    if images.dim() == 3:
        images = images[None]
    if len(images) == 0:
        raise InputError("explain needs at least one image")
    if tuple(images.shape[1:]) != tuple(spec.shape):
        raise InputError(f"images are {tuple(images.shape[1:])}, the model takes {tuple(spec.shape)}")
    display = map_settings.get("display")
    if display is not None and display not in SCALINGS:
        raise InputError(f"unknown display {display!r}; use {', '.join(SCALINGS)}")
    predicted, confidence = predict(model, spec, images)
    attributions = captum_methods.attribute(model, spec, images, predicted, methods=methods, layer=layer,
                                            **(method_settings or {}))
    wanted = sorted(set(predicted.tolist()))
    fooling: dict[int, float] = {}
    if maps_dir is not None:
        available = read_map_run(maps_dir, spec, len(class_names))
        missing = [c for c in wanted if c not in available]
        if missing:
            names = ", ".join(f"{c} ({class_names[c]})" for c in missing)
            raise InputError(f"the map run in {maps_dir} has no map of the predicted class {names}")
        agnostic, source = {c: available[c] for c in wanted}, str(maps_dir)
        display = display or map_run_display(maps_dir)
    else:
        agnostic, fooling = compute_maps(model, spec, list(class_names), wanted, steps=steps, seed=seed,
                                         progress=progress, **map_settings)
        source = "computed"
    conv = captum_methods.resolve_layer(model, layer) if "grad-cam" in attributions else None
    return ExplainResult(
        images=images.cpu(), predicted=predicted.tolist(), confidence=confidence.tolist(),
        attributions=attributions, agnostic=agnostic, agnostic_source=source, class_names=list(class_names),
        layer=conv[0] if conv else None, agnostic_fooling=fooling,
        settings={"methods": list(attributions), **({} if maps_dir is not None else {
            "steps": steps, "seed": seed,
            **{k: v for k, v in map_settings.items() if isinstance(v, (int, float, str, bool))}})},
        seconds=time.perf_counter() - started, display=display or DEFAULT_SCALING,
        value_range=tuple(spec.value_range),
    )
