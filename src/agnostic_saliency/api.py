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

from .durable.folders import claimed_run_folder
from .errors import InputError
from .models import LoadedModel, load_model

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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {choice} requested but there are {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise InputError(f"unsupported device {choice!r}; use cpu or cuda[:N]")
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
    distribution: str | None = None,
    images: str | os.PathLike | None = None,
    held_out: str | os.PathLike | None = None,
    norm: str = "l2",
    budget: float | None = None,
    judge: str | None = None,
    judge_weights: str | os.PathLike | None = None,
    judge_random_weights: bool = False,
    memory_cap_mb: float = 2048,
    compile: bool = False,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
    classes_per_task: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int = 50,
    command: list[str] | None = None,
    call: dict | None = None,
    **settings,
) -> dict:
    """Compute the maps of ``targets`` and write ``out``: ``maps.safetensors``, one PNG per map,
    ``grid.png``, ``summary.json`` and ``report.html``. Returns the summary.

    ``images`` is a folder of unlabeled images (for the ``images`` distribution), ``held_out`` a
    folder of real images on which fidelity is also measured, ``judge`` an independent model
    spec of the same task that reads the displayed maps. ``distribution`` defaults to the
    preset's (``preset="readable"``, see :data:`~agnostic_saliency.method.settings.PRESETS`) or
    :data:`~agnostic_saliency.method.distributions.DEFAULT_DISTRIBUTION`. ``budget`` defaults to
    :data:`DEFAULT_BUDGET` for the norm. ``executor="ray"`` (with a cluster ``address``, or a
    local instance) computes chunks of ``classes_per_task`` concepts as Ray tasks (default 1 per
    task); with ``classes_per_task`` set, the local executor computes the same chunks in turn
    and gives the same maps (see :mod:`agnostic_saliency.distributed`). ``compile`` runs the
    nudge's forward and backward passes through ``torch.compile`` (see
    :class:`InputAgnosticSaliency`). Every other keyword
    (``steps``, ``batch_size``, ``seed``, ``precision``, ...) goes to
    :meth:`InputAgnosticSaliency.attribute`.

    The folder and checkpoints (docs/resume.md): an existing folder with files is refused unless
    ``overwrite`` or ``resume``; the loop's state is saved in ``out/.checkpoint/`` every
    ``checkpoint_every`` steps (0: only on SIGINT/SIGTERM), and ``resume`` continues from it (not
    for runs in class chunks, whose tasks may run anywhere). ``summary.json`` records the
    provenance, with ``command`` (the command line, if any) and ``call`` (the settings; default:
    this call's arguments).
    """
    chunked = executor != "local" or classes_per_task is not None
    if chunked and resume:
        raise InputError("--resume is not available for maps computed in class chunks (--executor ray or "
                         "--classes-per-task)")
    arguments = {"targets": targets, "distribution": distribution, "images": images, "held_out": held_out,
                 "norm": norm, "budget": budget, "judge": judge, "judge_weights": judge_weights,
                 "memory_cap_mb": memory_cap_mb, "compile": compile, "overwrite": overwrite, "resume": resume,
                 "checkpoint_every": checkpoint_every, "executor": executor, "address": address,
                 "classes_per_task": classes_per_task, **settings}
    provenance = _provenance(loaded, command, call if call is not None else arguments)
    # fail before any work if the folder cannot be written, or holds a result not to be replaced
    with claimed_run_folder(out, overwrite, resume) as saves:
        if not chunked:
            settings = dict(settings, checkpoint=_checkpoint(saves / "map.safetensors", checkpoint_every, resume))
        summary = _map(loaded, out, targets, distribution, images, held_out, norm, budget, judge, judge_weights,
                       judge_random_weights, (memory_cap_mb, compile), progress, (executor, address, classes_per_task),
                       settings, provenance)
        return summary


def _checkpoint(path, every: int, resume: bool):
    from .durable.checkpoint import Checkpoint

    if every < 0:
        raise InputError(f"the checkpoint interval cannot be negative, got {every}")
    # 0: no periodic saves, but Ctrl-C and SIGTERM still save before the run stops.
    return Checkpoint(path, every=every or 2**62, resume=resume)


def _provenance(loaded: LoadedModel, command, call):
    from .durable.provenance import Provenance

    parameter = next(loaded.model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return Provenance(loaded.name, weights=loaded.weights, command=command, settings=call, device=str(device),
                      random_weights=bool((call or {}).get("random_weights")))


def _map(loaded, out, targets, distribution, images, held_out, norm, budget, judge, judge_weights,
         judge_random_weights, engine, progress, chunking, settings, provenance=None) -> dict:
    from .data.images import load_image_folder
    from .distributed import attribute_in_chunks
    from .executors import make_executor
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
    executor_name, address, classes_per_task = chunking
    memory_cap_mb, compile = engine
    runner = make_executor(executor_name, address)
    whole = executor_name == "local" and classes_per_task is None
    # In chunks, each task compiles its own explainer; this one only answers questions.
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names, memory_cap_mb=memory_cap_mb,
                                      compile=compile and whole)
    settings = dict(settings, norm=norm, budget=budget, real_images=real, images=pool)
    if distribution is not None:  # else the preset's or the default
        settings["distribution"] = distribution
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        if whole:
            result = explainer.attribute(targets=targets, progress=progress, **settings)
        else:
            result = attribute_in_chunks(loaded, targets, runner, classes_per_task or 1,
                                         memory_cap_mb=memory_cap_mb, compile=compile, progress=progress,
                                         **settings)
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
    if provenance is not None:
        resumed = settings["checkpoint"].resumed_from if settings.get("checkpoint") is not None else None
        summary["provenance"] = provenance.finish(
            None if resumed is None else {"stage": resumed["stage"], "step": resumed["step"]})
    write_map_folder(result, summary, out)
    return summary


def scan_to_folder(
    loaded: LoadedModel,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    distribution: str = "shapes",
    executor: str = "local",
    address: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    command: list[str] | None = None,
    call: dict | None = None,
    **settings,
) -> dict:
    """Scan every class of the model for a backdoor and write ``out``: ``scan.json``,
    ``triggers.safetensors``, the class signatures, recovered triggers, the anomaly chart and
    ``report.html``. Returns scan.json's content.

    ``images`` is an optional folder of unlabeled images mixed into the samples (the scan is
    data-free without it). ``executor="ray"`` runs the scan as one Ray task (on a GPU where the
    cluster has one). Every other keyword goes to :func:`agnostic_saliency.backdoor.scan.scan`.

    The folder and checkpoints (docs/resume.md): an existing folder with files is refused unless
    ``overwrite`` or ``resume``; each finished draw is saved in ``out/.checkpoint/``, and
    ``resume`` takes the saved draws (a Ray task saves them where it runs: on a shared folder,
    the same). ``scan.json`` records the provenance (``command``, ``call`` as for
    :func:`map_to_folder`).
    """
    arguments = {"images": images, "distribution": distribution, "overwrite": overwrite, "resume": resume,
                 "executor": executor, "address": address, **settings}
    provenance = _provenance(loaded, command, call if call is not None else arguments)
    with claimed_run_folder(out, overwrite, resume) as saves:
        from .data.images import load_image_folder
        from .durable.checkpoint import Checkpoint
        from .executors import make_executor
        from .output import write_scan_folder

        pool, skipped = None, 0
        if images:
            folder = load_image_folder(images, loaded.spec.shape)
            pool, skipped = folder.images, folder.skipped
            if distribution == "shapes":
                distribution = "shapes+images"
        # Draw by draw: each finished draw is saved, and resume takes the saved ones.
        checkpoint = Checkpoint(saves, resume=resume)
        runner = make_executor(executor, address)
        item = (loaded, dict(settings, distribution=distribution, images=pool, checkpoint=checkpoint))
        gpus = runner.gpus_per_task() if runner.name == "ray" else 0
        ((_, result),) = runner.run(_scan_task, [item], gpus=gpus)
        summary = {"model": loaded.name, "weights": loaded.weights, "input_shape": list(loaded.spec.shape),
                   **result.to_dict(), "unreadable_images_skipped": skipped}
        resumed = checkpoint.resumed_from
        summary["provenance"] = provenance.finish(None if resumed is None else {"draw": resumed["draw"]})
        write_scan_folder(result, summary, out, *loaded.spec.value_range)
        return summary


def _scan_task(loaded: LoadedModel, settings: dict):
    """The scan of one model, as an executor's task (on a GPU where the task has one)."""
    from .backdoor.scan import scan
    from .executors import move_to_assigned_gpu

    move_to_assigned_gpu(loaded.model)
    return scan(loaded.model, loaded.spec, loaded.class_names, **settings)


def explain_to_folder(
    loaded: LoadedModel,
    out: str | os.PathLike,
    *,
    images: Sequence[str | os.PathLike],
    maps: str | os.PathLike | None = None,
    methods: Sequence[str] | None = None,
    layer: str | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    **settings,
) -> dict:
    """Explain each image's predicted class with the Captum methods and the input-agnostic map,
    and write ``out``: the PNGs, ``panels.png``, ``explain.json`` and ``report.html``. Returns
    the summary.

    ``images`` are image files; ``maps`` the folder of an earlier ``map`` run to read the
    input-agnostic maps from (default: compute them, with ``seed`` and ``settings`` such as
    ``steps`` going to :meth:`InputAgnosticSaliency.attribute`); ``methods`` any of
    :data:`agnostic_saliency.explain.METHODS` (default all); ``layer`` Grad-CAM's layer (default
    the last ``Conv2d``). An existing, non-empty ``out`` is refused unless ``overwrite``.
    """
    from .data.images import load_image_files
    from .explain import METHODS, explain_images
    from .output import write_explain_folder

    with claimed_run_folder(out, overwrite):
        pictures = load_image_files(list(images), loaded.spec.shape)
        result = explain_images(loaded.model, loaded.spec, loaded.class_names, pictures,
                                methods=list(methods) if methods else METHODS, layer=layer, maps_dir=maps,
                                seed=seed, progress=progress, **settings)
        return write_explain_folder(result, out, loaded.name, image_names=[str(p) for p in images])
