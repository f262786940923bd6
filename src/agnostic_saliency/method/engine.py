"""The loop: sample -> nudge -> integrate -> project, for all concepts at once, then scale,
refine and measure.

Reference: N. Akhtar and M. A. A. K. Jalwana, "Rethinking Interpretation: Input-Agnostic
Saliency Mapping of Deep Visual Classifiers", AAAI 2023 (arXiv:2303.17836).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, fields, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from ..concepts import chunk_seed, concept_matrix
from ..durable.checkpoint import MapRun, model_digest, tensor_digest, tool_versions
from ..errors import InputError
from ..metrics.fidelity import Fidelity, measure_fidelity
from ..models.running import channels_last, check_output, estimate_sample_bytes, frozen
from ..models.spec import InputSpec, NormalizedModel, autocast_dtype
from ..result import SaliencyResult, concatenate
from . import refine as refine_stage
from .distributions import make_distribution
from .integrate import MomentIntegrator, frequency_precondition, with_total_variation
from .nudge import input_gradients, transform_maps
from .project import budget_radius, project
from .scale import DEFAULT_SCALING, SCALINGS
from .settings import GROUPS, Evaluation, Nudging, Refinement, Sampling, preset_settings, with_overrides
from .settings import check as check_settings
from .stopping import EarlyStop

Target = int | str | Sequence[int | str]
PROGRESS_EVERY = 10  # steps between readings of the progress bar's hit rate


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class InputAgnosticSaliency:
    """Input-agnostic saliency maps of an image classifier (Akhtar & Jalwana, AAAI 2023).

    One shared map rho_k per concept k solves ``min E_{x~D} -log P(k | clip(x + rho_k))``
    subject to ``||rho_k|| <= budget``: each iteration draws i.i.d. samples from an unrestricted
    distribution D, nudges them toward the concept, integrates the gradient with moment
    estimates and projects onto the budget. All concepts share one batched loop.

    Parameters
    ----------
    model : any ``nn.Module`` mapping a (N, C, H, W) batch to (N, classes) logits. It is used
        as given (device and dtype flow from its parameters) and returned unchanged.
    spec : the input spec: shape, pixel range and the normalisation the model expects; maps are
        computed in pixel space and normalised on the way into the model.
    class_names : names for the model's classes (target lookup and reports).
    device : where to compute; default: the device of the model's first parameter.
    memory_cap_mb : upper bound for the activations of one forward+backward chunk; concepts
        and samples are split into chunks to respect it (default 2048 MiB).
    compile : run the nudge's forward and backward passes through ``torch.compile`` (default
        False). The first step pays the compilation; the maps agree with an uncompiled run's up
        to float rounding (fused kernels sum in another order), not bit for bit. Fidelity is
        measured with the uncompiled model.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        memory_cap_mb: float = 2048,
        compile: bool = False,
    ):
        self.model = model
        self.spec = spec
        parameter = next(model.parameters(), None)
        self.device = (
            torch.device(device)
            if device is not None
            else (parameter.device if parameter is not None else torch.device("cpu"))
        )
        if parameter is not None and parameter.device != self.device:
            raise InputError(f"the model is on {parameter.device}, not on the requested device {self.device}")
        self.wrapped = NormalizedModel(model, spec).to(self.device)
        if memory_cap_mb <= 0:
            raise InputError("the memory cap must be positive")
        self.memory_cap_bytes = int(memory_cap_mb * 2**20)
        with frozen(model):
            self.num_classes = check_output(model, spec)
            self.sample_bytes = estimate_sample_bytes(self.wrapped, spec, self.device)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise InputError(f"{len(names)} class names for a model with {self.num_classes} classes")
        self.class_names = names
        self.compiled = bool(compile)
        self.nudged = self._compile(self.wrapped) if compile else self.wrapped

    @staticmethod
    def _compile(wrapped: nn.Module) -> nn.Module:
        """``torch.compile`` of the wrapped model; compilation itself happens on the first step."""
        if not hasattr(torch, "compile"):
            raise InputError(f"compiling needs torch.compile, which torch {torch.__version__} lacks")
        try:
            return torch.compile(wrapped)
        except Exception as error:  # e.g. a Python version Dynamo does not support yet
            raise InputError(f"torch.compile is not available here: {_first_line(error)}") from None

    # -- targets ---------------------------------------------------------------------------
    def _class_index(self, item: int | str) -> int:
        if isinstance(item, int) or (isinstance(item, str) and item.strip().lstrip("-").isdigit()):
            index = int(item)
            if not 0 <= index < self.num_classes:
                raise InputError(f"class index {index} is out of range (the model has {self.num_classes} classes)")
            return index
        lowered = [n.lower() for n in self.class_names]
        if str(item).strip().lower() not in lowered:
            raise InputError(f"unknown class name {item!r}")
        return lowered.index(str(item).strip().lower())

    def resolve_targets(self, targets: Target | Sequence[Target] | None = "all") -> list[list[int]]:
        """Concepts as lists of class indices. ``"all"``: one concept per class; an int or name: one
        class; ``"a+b"`` or a nested list: a set of classes forming one concept."""
        if targets is None or (isinstance(targets, str) and targets.strip().lower() == "all"):
            return [[k] for k in range(self.num_classes)]
        if isinstance(targets, (int, str)):
            targets = (
                [part for part in str(targets).split(",") if part.strip()] if isinstance(targets, str) else [targets]
            )
        concepts = []
        for item in targets:
            members = (
                item.split("+") if isinstance(item, str) else (item if isinstance(item, (list, tuple)) else [item])
            )
            concept = sorted({self._class_index(m) for m in members})
            if not concept:
                raise InputError("an empty target")
            concepts.append(concept)
        if not concepts:
            raise InputError("no targets given")
        return concepts

    def _concept_name(self, concept: list[int]) -> str:
        return "+".join(self.class_names[c] for c in concept)

    # -- the loop --------------------------------------------------------------------------
    # On a CPU, one forward and backward pass holds at most this much activation memory, however
    # large the cap: a sample costs the same at 640 inputs a pass as at 64, but passes of thousands
    # of inputs (what a large cap allows at 100 classes) ran about 1.6x slower per sample
    # (fmnist-cnn, 1 thread; docs/throughput.md). None: no such limit.
    CPU_PASS_BYTES: int | None = 512 * 2**20

    def _chunks(self, num_maps: int, batch_size: int, activation_bytes: int) -> list[tuple[slice, slice]]:
        """(maps, samples) slices whose forward+backward fits in ``activation_bytes``."""
        if self.device.type == "cpu" and self.CPU_PASS_BYTES is not None:
            activation_bytes = min(activation_bytes, self.CPU_PASS_BYTES)
        per_chunk = max(1, activation_bytes // max(self.sample_bytes, 1))
        if per_chunk >= batch_size:
            maps_per_chunk = max(1, per_chunk // batch_size)
            return [
                (slice(k, min(k + maps_per_chunk, num_maps)), slice(0, batch_size))
                for k in range(0, num_maps, maps_per_chunk)
            ]
        return [
            (slice(k, k + 1), slice(s, min(s + per_chunk, batch_size)))
            for k in range(num_maps)
            for s in range(0, batch_size, per_chunk)
        ]

    def _gradient(self, maps, samples, concepts, transform, normalize, diversity, generator, mixed, activation_bytes):
        """d loss / d maps, chunked under the memory cap, and the (K, B) hits.

        The maps are randomly transformed (``transform`` = (max_shift, max_scale, max_rotation)),
        per-sample input gradients are averaged (optionally normalised), then pulled back
        through the transform to the maps. ``mixed``: the autocast dtype, or None for fp32.
        """
        low, high = self.spec.value_range
        batch_size = samples.shape[0]
        leaf = maps.detach().requires_grad_(True)
        with torch.enable_grad():
            moved = transform_maps(leaf, *transform, generator)
        placed = moved.detach()
        summed = torch.zeros_like(placed)
        hits = torch.zeros(maps.shape[0], batch_size, dtype=torch.bool, device=maps.device)
        autocast = torch.autocast(self.device.type, dtype=mixed) if mixed is not None else contextlib.nullcontext()
        for map_slice, sample_slice in self._chunks(maps.shape[0], batch_size, activation_bytes):
            with autocast, self._compile_errors():
                part, chunk_hits = input_gradients(
                    self.nudged,
                    samples[sample_slice],
                    placed[map_slice],
                    concepts[map_slice],
                    low,
                    high,
                    normalize,
                    diversity,
                    generator if any(diversity) else None,
                )
            summed[map_slice] += part.to(summed.dtype)
            hits[map_slice, sample_slice] = chunk_hits
        (gradient,) = torch.autograd.grad(moved, leaf, summed / batch_size)
        return gradient.detach(), hits

    @contextlib.contextmanager
    def _compile_errors(self):
        """A one-line InputError when torch.compile fails on the model (on its first call)."""
        if not self.compiled:
            yield
            return
        try:
            yield
        except torch._dynamo.exc.TorchDynamoException as error:
            # Dynamo wraps the backend's error ("backend='inductor' raised:"): name the cause.
            cause: BaseException = error
            for _ in range(8):
                cause = getattr(cause, "inner_exception", None) or cause.__cause__ or cause
            raise InputError(f"torch.compile failed on this model (run it without compiling): "
                             f"{type(cause).__name__}: {_first_line(cause)}") from None

    def _nudge(
        self,
        maps,
        steps,
        distribution,
        concepts,
        batch_size,
        integrator,
        norm,
        radius,
        transform,
        normalize,
        diversity,
        generator,
        mixed,
        activation_bytes,
        frequency_decay=0.0,
        tv_weight=0.0,
        smooth_sigma=0.0,
        bar=None,
        offset=None,
        detail_radius=None,
        first_step=0,
        on_step=None,
        stopper=None,
    ):
        """``steps`` iterations of sample -> nudge -> integrate -> project. Returns the maps and
        the number of per-sample gradients evaluated. With ``offset`` the model sees
        ``offset + maps`` while only ``maps`` moves: it is kept inside ``detail_radius`` and
        such that ``offset + maps`` stays inside ``radius``. A resumed loop starts at
        ``first_step``; ``on_step(step, maps, integrator, count, stopper)`` is called after each
        step (the checkpoint hook). With a ``stopper`` (:class:`~.stopping.EarlyStop`) only its
        moving maps are nudged; the loop ends when none is left."""
        count = 0
        for step in range(first_step, steps):
            if stopper is not None and stopper.finished:
                if bar is not None:
                    bar.update(steps - step)  # every map stopped: the rest of the stage is skipped
                break
            index = None if stopper is None else stopper.active
            samples = distribution.sample(batch_size, generator, self.device).to(maps.dtype)
            seen = maps if offset is None else offset + maps
            wanted = concepts
            if index is not None:
                seen, wanted = seen[index], concepts[index]
            gradient, hits = self._gradient(
                seen, samples, wanted, transform, normalize, diversity, generator, mixed, activation_bytes
            )
            count += gradient.shape[0] * batch_size
            gradient = with_total_variation(gradient, seen, tv_weight)
            gradient = frequency_precondition(gradient, frequency_decay)
            if smooth_sigma > 0:
                gradient = refine_stage.gaussian_blur(gradient, smooth_sigma)
            moved = (maps if index is None else maps[index]) + integrator.step(gradient, self.spec.span, index)
            if offset is None:
                moved = project(moved, norm, radius)
            else:
                moved = project(offset + project(moved, norm, detail_radius), norm, radius) - offset
            maps = moved if index is None else maps.index_copy(0, index, moved)
            if stopper is not None:
                stopper.update(step + 1, hits)
            if bar is not None:
                bar.update(1)
                # Reading the hit rate makes the host wait for the device: every few steps only.
                if not bar.disable and ((step + 1) % PROGRESS_EVERY == 0 or step + 1 == steps):
                    bar.set_postfix(hit=f"{hits.float().mean().item():.2f}", refresh=False)
            if on_step is not None:
                on_step(step + 1, maps, integrator, count, stopper)
        return maps, count

    def attribute(
        self,
        targets: Target | Sequence[Target] | None = "all",
        sampling: Sampling = Sampling(),
        nudging: Nudging = Nudging(),
        refinement: Refinement = Refinement(),
        evaluation: Evaluation = Evaluation(),
        *,
        real_images: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        init_maps: torch.Tensor | None = None,
        seed: int = 0,
        progress: bool = True,
        checkpoint=None,
        preset: str | None = None,
        **overrides,
    ) -> SaliencyResult:
        """Compute one map per target concept.

        Parameters
        ----------
        targets : ``"all"`` (default), a class index or name, ``"a+b"`` for a set, or a list.
        sampling, nudging, refinement, evaluation : the settings of each stage
            (:mod:`agnostic_saliency.method.settings`, where every default and its reason live).
        real_images : optional held-out real images (N, C, H, W) in pixel space for fidelity.
        images : unlabeled images for the ``images`` distribution.
        init_maps : (K, C, H, W) maps in pixel space to start from instead of zeros (``steps=0``
            only refines and measures given maps).
        seed : seeds every random draw; same seed, same machine, same maps.
        progress : show a progress bar.
        checkpoint : a :class:`~agnostic_saliency.durable.checkpoint.Checkpoint`: save the loop's
            state every ``checkpoint.every`` steps (and on SIGINT/SIGTERM), and with
            ``checkpoint.resume`` continue from a saved state; the result equals an uninterrupted
            run's (bit-identical on the CPU). Default None: no checkpoints.
        preset : ``"faithful"`` (the defaults) or ``"readable"``
            (:data:`~agnostic_saliency.method.settings.PRESETS`): settings applied before ``overrides``.
        **overrides : any field of the four groups by name (``steps=100``, ``distribution="uniform"``,
            ``precision="bf16"``), or ``refine``, ``refine_steps``, ``refine_sigma``,
            ``refine_tolerance``, ``refine_mode``, ``shape_share``, ``refine_frequency_decay``, ``eval_samples``.

        Notes
        -----
        Distributions: ``"dark2+uniform+shapes"`` (the default: a third each of noise dimmed by a
        per-sample factor ``U(0,1)**2``, noise of random brightness, and random ellipses and
        rectangles on a dark background), ``"uniform"``, ``"uniform-flat"``, ``"dark"``,
        ``"dark2"``, ``"dark3"``, ``"gaussian"``, ``"shapes"``, ``"images"`` (needs ``images``),
        any ``+`` mixture, a :class:`Distribution` or a callable ``fn(n, generator)``. The budget
        is a fraction of the pixel range: RMS for ``l2``, the largest value for ``linf``.
        Refinement ``"shape"`` keeps the map's Gaussian low-pass at ``shape_share`` of the l2
        budget and re-nudges only the detail in the rest; ``"blur"`` blurs the whole map and
        re-nudges it with blurred gradients. Fidelity is always measured in fp32.
        """
        start = time.perf_counter()
        groups = with_overrides(
            {"sampling": sampling, "nudging": nudging, "refinement": refinement, "evaluation": evaluation},
            {**preset_settings(preset), **overrides},
        )
        check_settings(*(groups[name] for name in GROUPS))
        concepts_list = self.resolve_targets(targets)
        if real_images is not None and tuple(real_images.shape[1:]) != tuple(self.spec.shape):
            raise InputError(
                f"real images must be (N, {','.join(map(str, self.spec.shape))}), got {tuple(real_images.shape)}"
            )
        if init_maps is not None and tuple(init_maps.shape) != (len(concepts_list), *self.spec.shape):
            raise InputError(
                f"init_maps must be ({len(concepts_list)}, {','.join(map(str, self.spec.shape))}), "
                f"got {tuple(init_maps.shape)}"
            )
        per_chunk, activation_bytes = self._plan_memory(
            len(concepts_list), groups["sampling"].batch_size, groups["evaluation"].samples, real_images
        )
        run = dict(real_images=real_images, images=images, progress=progress, activation_bytes=activation_bytes)
        if per_chunk >= len(concepts_list):
            result = self._attribute(concepts_list, groups, seed, init_maps, checkpoint, **run)
            result.seconds = time.perf_counter() - start
            return result
        return self._stream(concepts_list, per_chunk, groups, seed, init_maps, checkpoint, start, run)

    # -- memory ----------------------------------------------------------------------------
    # Copies of one map the loop holds at once: the map, its two moments, the transformed map, its
    # gradient both ways, the step's temporaries, and in refinement the shape, detail, unrefined map.
    STATE_COPIES = 12
    # What the result keeps of each map: the final and the unrefined maps, and the displayed picture.
    RESULT_COPIES = 3

    def _plan_memory(self, num_maps: int, batch_size: int, eval_samples: int, real_images) -> tuple[int, int]:
        """(maps per chunk, bytes for activations) under the memory cap, which covers the result,
        the samples, every map's state (map, moments, temporaries) and the activations. Where
        the maps' state would take more than half of what is left, the concepts stream through
        in chunks of classes that each run to the end, and only their results stay."""
        map_bytes = self.spec.numel * 4
        real = 0 if real_images is None else len(real_images)
        fixed = (self.RESULT_COPIES * num_maps + eval_samples + batch_size + real) * map_bytes
        free = self.memory_cap_bytes - fixed
        state = self.STATE_COPIES * map_bytes
        if free < state + self.sample_bytes:
            need = (fixed + state + self.sample_bytes) / 2**20
            raise InputError(
                f"the memory cap of {self.memory_cap_bytes / 2**20:.0f} MiB cannot hold {num_maps} maps of shape "
                f"{','.join(map(str, self.spec.shape))} (at least {need:.1f} MiB)"
            )
        usable = free - self.sample_bytes  # one sample's activations at least
        per_chunk = num_maps if num_maps * state <= usable // 2 else max(1, usable // 2 // state)
        return per_chunk, free - per_chunk * state

    def _stream(self, concepts_list, per_chunk, groups, seed, init_maps, checkpoint, start, run) -> SaliencyResult:
        """The concepts in chunks of ``per_chunk``, one after the other, each at its own seed
        (:func:`~agnostic_saliency.concepts.chunk_seed`, as a Ray task of that chunk would have) and
        with its own checkpoint file; the results are written into one set of tensors as each
        chunk ends, so no second copy of every map is made."""
        shape = (len(concepts_list), *self.spec.shape)
        tensors = {name: torch.empty(shape) for name in ("maps", "unrefined_maps", "displayed")}
        empty = torch.empty(0)
        parts = []
        for number, first in enumerate(range(0, len(concepts_list), per_chunk)):
            rows = slice(first, min(first + per_chunk, len(concepts_list)))
            chunk = concepts_list[rows]
            part_checkpoint = None if checkpoint is None else checkpoint.part(number)
            part = self._attribute(
                chunk, groups, chunk_seed(seed, chunk), None if init_maps is None else init_maps[rows],
                part_checkpoint, description=f"classes {rows.start + 1}-{rows.stop} of {len(concepts_list)}", **run
            )
            if part_checkpoint is not None and checkpoint.resumed_from is None:
                checkpoint.resumed_from = part_checkpoint.resumed_from
            for name, tensor in tensors.items():
                tensor[rows] = getattr(part, name)
            parts.append(replace(part, maps=empty, unrefined_maps=empty, displayed=empty))
        config = {
            **parts[0].config,
            "seed": seed,
            "classes_per_chunk": per_chunk,
            "chunk_seeds": [part.config["seed"] for part in parts],
        }
        return concatenate(parts, config=config, seconds=time.perf_counter() - start, tensors=tensors)

    def _attribute(
        self,
        concepts_list,
        groups,
        seed,
        init_maps,
        checkpoint,
        *,
        real_images,
        images,
        progress,
        activation_bytes,
        description="nudging",
    ) -> SaliencyResult:
        """The maps of ``concepts_list`` in one batched loop (see :meth:`attribute`)."""
        sampling, nudging, refinement, evaluation = (groups[name] for name in GROUPS)
        source = make_distribution(sampling.distribution, self.spec, images)
        autocast = autocast_dtype(nudging.precision, self.device)
        norm = nudging.norm
        radius = budget_radius(norm, nudging.budget, self.spec.span, self.spec.numel)
        concepts = concept_matrix(concepts_list, self.num_classes, self.device)
        generator = torch.Generator().manual_seed(seed)
        dtype = next(self.model.parameters(), torch.zeros(())).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        if init_maps is None:
            maps = torch.zeros(len(concepts_list), *self.spec.shape, device=self.device, dtype=dtype)
        else:
            maps = project(init_maps.detach().to(self.device, dtype), norm, radius)
        common = dict(
            distribution=source,
            concepts=concepts,
            batch_size=sampling.batch_size,
            norm=norm,
            radius=radius,
            transform=(nudging.max_shift, nudging.max_scale, nudging.max_rotation),
            normalize=nudging.normalize_samples,
            frequency_decay=nudging.frequency_decay,
            tv_weight=nudging.tv_weight,
            diversity=(nudging.diversity_scale, nudging.diversity_shift),
            generator=generator,
            mixed=autocast,
            activation_bytes=activation_bytes,
        )
        refining = refinement.enabled and refinement.steps > 0
        total = nudging.steps + (refinement.steps if refining else 0)
        run = (
            None
            if checkpoint is None
            else MapRun(
                checkpoint,
                self._identity(concepts_list, source, groups, seed, real_images, images, init_maps),
                generator,
            )
        )
        saved = run.restore() if run is not None else None
        integrator, first_step, nudge_base = MomentIntegrator(nudging.step_size), 0, 0
        stopper = EarlyStop(len(concepts_list), nudging.stop_target, nudging.stop_window, self.device,
                            enabled=nudging.early_stop)
        if saved is not None:
            maps, nudge_base = saved["maps"].to(self.device, dtype), saved["nudge_count"]
            if saved["stopping"]:
                stopper.load_state_dict(saved["stopping"])
            if saved["stage"] == "nudge":
                integrator.load_state_dict(self._placed(saved["integrator"], dtype))
                first_step = saved["step"]
            else:
                first_step = nudging.steps
        resumed_refinement = saved if saved is not None and saved["stage"] == "refine" else None
        chunk = min(4096, max(1, activation_bytes // max(self.sample_bytes, 1)))  # fidelity's forward passes
        with (
            frozen(self.model),
            channels_last(self.model, enabled=autocast is not None),
            checkpoint.guard() if checkpoint is not None else contextlib.nullcontext(),
            tqdm(total=total, disable=not progress, desc=description, unit="step") as bar,
        ):
            bar.update(first_step)
            maps, count = self._nudge(
                maps,
                nudging.steps,
                integrator=integrator,
                bar=bar,
                smooth_sigma=nudging.smoothing,
                first_step=first_step,
                on_step=run.hook("nudge", nudge_base) if run is not None else None,
                stopper=stopper if nudging.early_stop else None,
                **common,
            )
            count += nudge_base
            fresh = source.sample(
                evaluation.samples, torch.Generator().manual_seed(seed + evaluation.seed_offset), self.device
            ).to(dtype)
            real = real_images.to(self.device, dtype) if real_images is not None else None
            before = self.fidelity(maps, concepts_list, fresh, real, evaluation.display, chunk)
            final_maps, accepted, after = maps, [False] * len(maps), before
            if refining:
                bar.set_description("refining")
                on_step = (
                    None
                    if run is None
                    else run.hook(
                        "refine",
                        resumed_refinement["refine_count"] if resumed_refinement else 0,
                        maps,
                        count,
                        stopper.state_dict() if nudging.early_stop else None,
                    )
                )
                candidate, extra = self._refine(
                    maps, refinement, nudging, common, bar, resumed_refinement, on_step, dtype
                )
                count += extra
                trial = self.fidelity(candidate, concepts_list, fresh, real, evaluation.display, chunk)
                accepted = refine_stage.accept_refinement(before.fooling_rate, trial.fooling_rate, refinement.tolerance)
                if trial.real_fooling_rate is not None:
                    real_ok = refine_stage.accept_refinement(
                        before.real_fooling_rate, trial.real_fooling_rate, refinement.tolerance
                    )
                    accepted = [a and b for a, b in zip(accepted, real_ok)]
                keep = torch.tensor(accepted, device=self.device).view(-1, 1, 1, 1)
                final_maps = torch.where(keep, candidate, maps)
                del candidate
                after = self.fidelity(final_maps, concepts_list, fresh, real, evaluation.display, chunk)
        config = {
            "distribution": source.describe(),
            **{k: v for k, v in asdict(nudging).items()},
            "radius": radius,
            "batch_size": sampling.batch_size,
            "refine": refinement.enabled,
            "refine_steps": refinement.steps if refinement.enabled else 0,
            "refine_sigma": refinement.sigma,
            "refine_tolerance": refinement.tolerance,
            "refine_mode": refinement.mode,
            "shape_share": refinement.shape_share,
            "refine_frequency_decay": refinement.frequency_decay,
            "eval_samples": evaluation.samples,
            "display": evaluation.display,
            "seed": seed,
            "device": str(self.device),
            "input_spec": self.spec.to_dict(),
            "real_images": 0 if real_images is None else int(len(real_images)),
        }
        if bool((maps.flatten(1).abs().amax(1) == 0).any()):
            # A map that never moved: every input gradient was zero, so the model's output does not
            # depend on its input there; its fooling rate then only says which label ties win.
            warnings.warn(
                "some maps are zero: the model's output does not change with its input (for example a "
                "classifier head initialised to zero, as torchvision's ViT has with random weights)",
                stacklevel=3,
            )
        low, high = self.spec.value_range
        return SaliencyResult(
            maps=final_maps.detach().float().cpu(),
            unrefined_maps=maps.detach().float().cpu(),
            displayed=SCALINGS[evaluation.display](final_maps, low, high).detach().float().cpu(),
            concepts=concepts_list,
            names=[self._concept_name(c) for c in concepts_list],
            fidelity=after,
            fidelity_unrefined=before,
            refined=list(accepted),
            config=config,
            sample_gradients=count,
            nudge_steps=stopper.steps_taken(nudging.steps),
        )

    def _refine(
        self,
        maps,
        refinement: Refinement,
        nudging: Nudging,
        common: dict,
        bar,
        resumed=None,
        on_step=None,
        dtype=torch.float32,
    ):
        """A refined candidate for every map and the sample gradients it cost; the caller keeps
        it per map only where fidelity holds. ``resumed``: a checkpoint's refinement state (its
        step, moving tensor and moments) to continue from; ``on_step``: the checkpoint hook."""
        norm, radius = common["norm"], common["radius"]
        integrator = MomentIntegrator(nudging.step_size / 2)
        first_step, done = 0, 0
        if resumed is not None:
            integrator.load_state_dict(self._placed(resumed["integrator"], dtype))
            first_step, done = resumed["step"], resumed["refine_count"]
            bar.update(first_step)
        # The refinement's gradients have their own preconditioning (none by default: the detail is
        # what wins back fidelity after a smooth nudge).
        common = dict(common, frequency_decay=refinement.frequency_decay)
        loop = dict(integrator=integrator, bar=bar, first_step=first_step, on_step=on_step, **common)
        if refinement.mode == "shape" and norm == "l2":
            # Keep the map's low-frequency shape at a fixed share of the budget and re-nudge only
            # the detail in the rest: the display stays dominated by the shape.
            shape, detail_radius = refine_stage.split_shape(maps, refinement.sigma, radius, refinement.shape_share)
            detail = project(maps - refine_stage.gaussian_blur(maps, refinement.sigma), norm, detail_radius)
            if resumed is not None:
                detail = resumed["moving"].to(self.device, dtype)
            detail, count = self._nudge(detail, refinement.steps, offset=shape, detail_radius=detail_radius, **loop)
            return project(shape + detail, norm, radius), count + done  # only rounding: _nudge kept it inside
        start = project(refine_stage.gaussian_blur(maps, refinement.sigma), norm, radius)
        if resumed is not None:
            start = resumed["moving"].to(self.device, dtype)
        candidate, count = self._nudge(start, refinement.steps, smooth_sigma=refinement.sigma, **loop)
        return candidate, count + done

    def _placed(self, state: dict, dtype: torch.dtype) -> dict:
        """A saved integrator state (CPU tensors) on this run's device and dtype."""
        return {
            key: value.to(self.device, dtype) if isinstance(value, torch.Tensor) else value
            for key, value in state.items()
        }

    def _identity(self, concepts, source, groups, seed, real_images, images, init_maps) -> dict:
        """What a checkpoint must share with the run resuming it: every setting that changes the
        numbers, the model's state, the images given, and the versions."""
        settings = {name: {f.name: getattr(group, f.name) for f in fields(group)} for name, group in groups.items()}
        settings["sampling"]["distribution"] = source.describe()  # a callable's repr names an address
        settings.update(
            concepts=concepts,
            seed=seed,
            input_spec=self.spec.to_dict(),
            device=str(self.device),
            memory_cap_bytes=self.memory_cap_bytes,
            real_images=tensor_digest(real_images),
            images=tensor_digest(images),
            init_maps=tensor_digest(init_maps),
        )
        if self.compiled:  # compiled kernels round differently: not bit-identical to a plain run
            settings["compile"] = True
        return {"kind": "map", "settings": settings, "model": model_digest(self.model), "versions": tool_versions()}

    def fidelity(
        self,
        maps: torch.Tensor,
        concepts: list[list[int]],
        samples: torch.Tensor,
        real_images: torch.Tensor | None = None,
        display: str = DEFAULT_SCALING,
        chunk: int = 4096,
    ) -> Fidelity:
        """Fidelity of ``maps`` (K, C, H, W, pixel space) for ``concepts`` (lists of class indices):
        fooling rate and confidence on ``samples`` (and on ``real_images``), and what the model
        reads in each displayed map alone (scaled by ``display``, see
        :mod:`agnostic_saliency.method.scale`). Always in fp32, ``chunk`` inputs per forward pass."""
        low, high = self.spec.value_range
        matrix = concept_matrix(concepts, self.num_classes, self.device)
        with frozen(self.model):
            return measure_fidelity(
                self.wrapped,
                maps,
                SCALINGS[display](maps, low, high),
                matrix,
                samples.to(self.device),
                low,
                high,
                None if real_images is None else real_images.to(self.device),
                chunk,
            )
