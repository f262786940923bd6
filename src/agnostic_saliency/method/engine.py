"""The loop: sample -> nudge -> integrate -> project, for all concepts at once, then scale,
refine and measure.

Reference: N. Akhtar and M. A. A. K. Jalwana, "Rethinking Interpretation: Input-Agnostic
Saliency Mapping of Deep Visual Classifiers", AAAI 2023 (arXiv:2303.17836).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..metrics.fidelity import measure_fidelity
from ..models.spec import InputSpec, NormalizedModel, autocast_dtype
from ..result import SaliencyResult
from . import refine as refine_stage
from .distributions import DEFAULT_DISTRIBUTION, Distribution, make_distribution
from .integrate import MomentIntegrator, frequency_precondition
from .nudge import concept_matrix, input_gradients, transform_maps
from .project import budget_radius, project
from .scale import DEFAULT_SCALING, SCALINGS

Target = int | str | Sequence[int | str]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while explaining; the caller's model comes back
    exactly as it was given (train/eval flags of every module, requires_grad of every
    parameter), even on error."""
    modes = {module: module.training for module in model.modules()}
    flags = {parameter: parameter.requires_grad for parameter in model.parameters()}
    try:
        model.eval()
        for parameter in flags:
            parameter.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """The model's 4-D weights in channels-last layout while it runs, given back in the layout they
    had, even on error. Same values: only the memory order changes. With bf16 autocast on a CPU
    with AMX it made the scan of the population's LeNet 1.7 times faster, with bit-identical
    statistics (docs/experiments.md, mixed precision, session 6)."""
    originals = []
    if enabled:
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() != 4:
                continue
            # Copy into a fresh channels-last tensor and compare strides: for a one-channel weight
            # .contiguous(channels_last) is a no-op, yet the kernels choose by the strides.
            reordered = torch.empty_like(tensor.data, memory_format=torch.channels_last).copy_(tensor.data)
            if reordered.stride() != tensor.stride():
                originals.append((tensor, tensor.data))
                tensor.data = reordered
    try:
        yield model
    finally:
        for tensor, original in originals:
            tensor.data = original  # the very storage the caller gave


def estimate_sample_bytes(model: nn.Module, spec: InputSpec, device: torch.device) -> int:
    """Bytes one sample costs in a forward+backward pass: the sum of every leaf module's output
    (kept for backward), doubled for its gradient, plus the input. Hooks are always removed."""
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return 2 * total[0] + 3 * 4 * spec.numel


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
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        memory_cap_mb: float = 2048,
    ):
        self.model = model
        self.spec = spec
        parameter = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (
            parameter.device if parameter is not None else torch.device("cpu"))
        if parameter is not None and parameter.device != self.device:
            raise InputError(f"the model is on {parameter.device}, not on the requested device {self.device}")
        self.wrapped = NormalizedModel(model, spec).to(self.device)
        if memory_cap_mb <= 0:
            raise InputError("the memory cap must be positive")
        self.memory_cap_bytes = int(memory_cap_mb * 2**20)
        with frozen(model):
            from ..models.loading import check_output

            self.num_classes = check_output(model, spec)
            self.sample_bytes = estimate_sample_bytes(self.wrapped, spec, self.device)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise InputError(f"{len(names)} class names for a model with {self.num_classes} classes")
        self.class_names = names

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
            targets = [part for part in str(targets).split(",") if part.strip()] if isinstance(targets, str) else [targets]
        concepts = []
        for item in targets:
            members = item.split("+") if isinstance(item, str) else (item if isinstance(item, (list, tuple)) else [item])
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
    def _chunks(self, num_maps: int, batch_size: int) -> list[tuple[slice, slice]]:
        """(maps, samples) slices whose forward+backward fits the memory cap."""
        per_chunk = max(1, self.memory_cap_bytes // max(self.sample_bytes, 1))
        if per_chunk >= batch_size:
            maps_per_chunk = max(1, per_chunk // batch_size)
            return [(slice(k, min(k + maps_per_chunk, num_maps)), slice(0, batch_size))
                    for k in range(0, num_maps, maps_per_chunk)]
        return [(slice(k, k + 1), slice(s, min(s + per_chunk, batch_size)))
                for k in range(num_maps) for s in range(0, batch_size, per_chunk)]

    def _gradient(self, maps, samples, concepts, transform, normalize, diversity, generator, mixed):
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
        autocast = (torch.autocast(self.device.type, dtype=mixed) if mixed is not None
                    else contextlib.nullcontext())
        for map_slice, sample_slice in self._chunks(maps.shape[0], batch_size):
            with autocast:
                part, chunk_hits = input_gradients(self.wrapped, samples[sample_slice], placed[map_slice],
                                                   concepts[map_slice], low, high, normalize, diversity,
                                                   generator if any(diversity) else None)
            summed[map_slice] += part.to(summed.dtype)
            hits[map_slice, sample_slice] = chunk_hits
        (gradient,) = torch.autograd.grad(moved, leaf, summed / batch_size)
        return gradient.detach(), hits

    def _nudge(self, maps, steps, distribution, concepts, batch_size, integrator, norm, radius,
               transform, normalize, diversity, generator, mixed, frequency_decay=0.0, smooth_sigma=0.0,
               bar=None, offset=None, detail_radius=None):
        """``steps`` iterations of sample -> nudge -> integrate -> project. Returns the maps and
        the number of per-sample gradients evaluated. With ``offset`` the model sees
        ``offset + maps`` while only ``maps`` moves: it is kept inside ``detail_radius`` and
        such that ``offset + maps`` stays inside ``radius``."""
        count = 0
        for _ in range(steps):
            samples = distribution.sample(batch_size, generator, self.device).to(maps.dtype)
            seen = maps if offset is None else offset + maps
            gradient, hits = self._gradient(seen, samples, concepts, transform, normalize, diversity, generator, mixed)
            count += gradient.shape[0] * batch_size
            gradient = frequency_precondition(gradient, frequency_decay)
            if smooth_sigma > 0:
                gradient = refine_stage.gaussian_blur(gradient, smooth_sigma)
            maps = maps + integrator.step(gradient, self.spec.span)
            if offset is None:
                maps = project(maps, norm, radius)
            else:
                maps = project(offset + project(maps, norm, detail_radius), norm, radius) - offset
            if bar is not None:
                bar.update(1)
                bar.set_postfix(hit=f"{hits.float().mean().item():.2f}", refresh=False)
        return maps, count

    def attribute(
        self,
        targets: Target | Sequence[Target] | None = "all",
        distribution: str | Distribution | Callable | None = DEFAULT_DISTRIBUTION,
        norm: str = "l2",
        budget: float = 0.25,
        steps: int = 600,
        batch_size: int = 64,
        step_size: float = 0.01,
        max_shift: int = 3,
        max_scale: float = 0.15,
        max_rotation: float = 15.0,
        normalize_samples: bool = True,
        frequency_decay: float = 0.0,
        diversity_scale: float = 0.0,
        diversity_shift: int = 0,
        smoothing: float = 0.0,
        refine: bool = True,
        refine_steps: int = 100,
        refine_sigma: float = 1.0,
        refine_tolerance: float = 0.02,
        refine_mode: str = "shape",
        shape_share: float = 0.8,
        display: str = DEFAULT_SCALING,
        eval_samples: int = 512,
        real_images: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        init_maps: torch.Tensor | None = None,
        seed: int = 0,
        amp: bool = False,
        precision: str | None = None,
        progress: bool = True,
    ) -> SaliencyResult:
        """Compute one map per target concept.

        Parameters
        ----------
        targets : ``"all"`` (default), a class index or name, ``"a+b"`` for a set, or a list.
        distribution : ``"dark2+uniform+shapes"`` (default: a third each of noise dimmed by a
            per-sample factor ``U(0,1)**2``, noise of random brightness, and random ellipses
            and rectangles on a dark background), ``"uniform"``, ``"uniform-flat"``,
            ``"dark"``, ``"dark2"``, ``"dark3"``, ``"gaussian"``, ``"shapes"``,
            ``"images"`` (needs ``images``), any ``+`` mixture, a :class:`Distribution` or a
            callable ``fn(n, generator)``.
        norm, budget : the ball the maps are projected on; the budget is a fraction of the pixel
            range: RMS for ``l2`` (default 0.25), the largest value for ``linf``.
        steps, batch_size, step_size : iterations, samples per iteration (shared by all maps),
            and the per-pixel step as a fraction of the range.
        max_shift : random shift of each map per step, in pixels (default 3; 0 disables).
        max_scale, max_rotation : random rescaling (fraction, default 0.15) and rotation (degrees,
            default 15) of each map per step, with the shift forming a random similarity
            transform. Defaults chosen on fmnist-cnn (seed 0, 200 + 60 steps): against shift 2 alone
            they raised the robust judge's reading of the refined maps from 6 to 7 of 10 and the
            batch-norm panel judge's from 4 to 7 (docs/readable_maps.md).
        normalize_samples : normalise each sample's gradient to unit l2 before averaging
            (default True: raised the test-set fooling rate from 0.89 to 0.94 in the sweep).
        frequency_decay : precondition gradients by 1/f**decay (decorrelated parameterisation;
            0 disables).
        diversity_scale, diversity_shift : random shrink (fraction) and shift (pixels) of each
            whole perturbed input before the model ("input diversity"; 0 disables).
        smoothing : Gaussian sigma (pixels) applied to the gradient during nudging (default 0).
        refine, refine_steps, refine_sigma, refine_tolerance : the refinement stage (see
            :mod:`agnostic_saliency.method.refine`) and the largest fooling-rate drop accepted.
        refine_mode, shape_share : ``"shape"`` (default) keeps the map's Gaussian low-pass
            (sigma ``refine_sigma``) at ``shape_share`` of the l2 budget and re-nudges only the
            detail in the rest; ``"blur"`` blurs the whole map and re-nudges it with blurred
            gradients. Measured on fmnist-cnn (CPU, 10,000 test images, ``dark2+uniform``
            samples): shape 0.943 test fooling, judge 8/10, own-mean 6/10; blur 0.921, 7/10, 4/10.
        display : how the signed map becomes the picture (PNGs, ``displayed``, the "map alone"
            figure): ``"positive"`` (default: the map drawn on the darkest input, scaled to its
            brightest pixel; an adversarially trained judge read 6/10 such pictures of
            fmnist-cnn against 1/10 for ``"minmax"``), ``"minmax"`` or ``"signed"``.
        eval_samples : fresh samples from the distribution for the fidelity figures.
        real_images : optional held-out real images (N, C, H, W) in pixel space for fidelity.
        images : unlabeled images for the ``images`` distribution.
        init_maps : (K, C, H, W) maps in pixel space to start from instead of zeros (resume from a
            checkpoint, or ``steps=0`` to only refine and measure given maps).
        seed : seeds every random draw; same seed, same machine, same maps.
        amp : bf16 autocast for the model's forward pass in the nudge (GPU, or a CPU with bf16
            support such as AMX), with conv weights held channels-last meanwhile. The same as
            ``precision="bf16"``.
        precision : ``fp32``, ``bf16`` or ``fp16`` (CUDA only), named as in the backdoor scan;
            overrides ``amp`` when given. Fidelity is always measured in fp32.
        progress : show a progress bar.
        """
        start = time.perf_counter()
        concepts_list = self.resolve_targets(targets)
        if steps < 0 or refine_steps < 0 or batch_size < 1 or eval_samples < 1:
            raise InputError("steps must be >= 0, batch size and eval samples >= 1")
        if real_images is not None and tuple(real_images.shape[1:]) != tuple(self.spec.shape):
            raise InputError(f"real images must be (N, {','.join(map(str, self.spec.shape))}), got {tuple(real_images.shape)}")
        source = make_distribution(distribution, self.spec, images)
        if display not in SCALINGS:
            raise InputError(f"unknown display {display!r}; use {', '.join(SCALINGS)}")
        scale = SCALINGS[display]
        if precision is None:
            precision = "bf16" if amp else "fp32"
        autocast = autocast_dtype(precision, self.device)
        radius = budget_radius(norm, budget, self.spec.span, self.spec.numel)
        concepts = concept_matrix(concepts_list, self.num_classes, self.device)
        generator = torch.Generator().manual_seed(seed)
        dtype = next(self.model.parameters(), torch.zeros(())).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        if init_maps is None:
            maps = torch.zeros(len(concepts_list), *self.spec.shape, device=self.device, dtype=dtype)
        elif tuple(init_maps.shape) != (len(concepts_list), *self.spec.shape):
            raise InputError(f"init_maps must be ({len(concepts_list)}, {','.join(map(str, self.spec.shape))}), "
                             f"got {tuple(init_maps.shape)}")
        else:
            maps = project(init_maps.detach().to(self.device, dtype), norm, radius)
        low, high = self.spec.value_range
        common = dict(distribution=source, concepts=concepts, batch_size=batch_size, norm=norm,
                      radius=radius, transform=(max_shift, max_scale, max_rotation),
                      normalize=normalize_samples, frequency_decay=frequency_decay,
                      diversity=(diversity_scale, diversity_shift), generator=generator, mixed=autocast)
        total = steps + (refine_steps if refine else 0)
        with (frozen(self.model), channels_last(self.model, enabled=autocast is not None),
              tqdm(total=total, disable=not progress, desc="nudging", unit="step") as bar):
            maps, count = self._nudge(maps, steps, integrator=MomentIntegrator(step_size), bar=bar,
                                      smooth_sigma=smoothing, **common)
            fresh = source.sample(eval_samples, torch.Generator().manual_seed(seed + 1_000_003), self.device).to(dtype)
            real = real_images.to(self.device, dtype) if real_images is not None else None
            before = measure_fidelity(self.wrapped, maps, scale(maps, low, high), concepts, fresh, low, high, real)
            final_maps, accepted, after = maps, [False] * len(maps), before
            if refine and refine_steps > 0:
                bar.set_description("refining")
                if refine_mode == "shape" and norm == "l2":
                    # Keep the map's low-frequency shape at a fixed share of the budget and re-nudge
                    # only the detail in the rest: the display stays dominated by the shape.
                    shape, detail_radius = refine_stage.split_shape(maps, refine_sigma, radius, shape_share)
                    detail = project(maps - refine_stage.gaussian_blur(maps, refine_sigma), norm, detail_radius)
                    detail, extra = self._nudge(detail, refine_steps, integrator=MomentIntegrator(step_size / 2),
                                                bar=bar, offset=shape, detail_radius=detail_radius, **common)
                    candidate = project(shape + detail, norm, radius)  # only rounding: _nudge kept it inside
                else:
                    start_maps = project(refine_stage.gaussian_blur(maps, refine_sigma), norm, radius)
                    candidate, extra = self._nudge(start_maps, refine_steps, integrator=MomentIntegrator(step_size / 2),
                                                   smooth_sigma=refine_sigma, bar=bar, **common)
                count += extra
                trial = measure_fidelity(self.wrapped, candidate, scale(candidate, low, high), concepts, fresh,
                                         low, high, real)
                accepted = refine_stage.accept_refinement(before.fooling_rate, trial.fooling_rate, refine_tolerance)
                if trial.real_fooling_rate is not None:
                    real_ok = refine_stage.accept_refinement(before.real_fooling_rate, trial.real_fooling_rate,
                                                             refine_tolerance)
                    accepted = [a and b for a, b in zip(accepted, real_ok)]
                keep = torch.tensor(accepted, device=self.device).view(-1, 1, 1, 1)
                final_maps = torch.where(keep, candidate, maps)
                after = measure_fidelity(self.wrapped, final_maps, scale(final_maps, low, high), concepts, fresh,
                                         low, high, real)
        config = {
            "distribution": source.describe(), "norm": norm, "budget": budget, "radius": radius,
            "steps": steps, "batch_size": batch_size, "step_size": step_size, "max_shift": max_shift,
            "max_scale": max_scale, "max_rotation": max_rotation, "normalize_samples": normalize_samples,
            "frequency_decay": frequency_decay, "diversity_scale": diversity_scale,
            "diversity_shift": diversity_shift,
            "smoothing": smoothing, "refine": refine, "refine_steps": refine_steps if refine else 0, "refine_sigma": refine_sigma,
            "refine_tolerance": refine_tolerance, "refine_mode": refine_mode, "shape_share": shape_share, "display": display, "eval_samples": eval_samples, "seed": seed, "amp": autocast is not None, "precision": precision,
            "device": str(self.device), "input_spec": self.spec.to_dict(),
            "real_images": 0 if real_images is None else int(len(real_images)),
        }
        return SaliencyResult(
            maps=final_maps.detach().float().cpu(), unrefined_maps=maps.detach().float().cpu(),
            displayed=scale(final_maps, low, high).detach().float().cpu(), concepts=concepts_list,
            names=[self._concept_name(c) for c in concepts_list], fidelity=after, fidelity_unrefined=before,
            refined=list(accepted), config=config, seconds=time.perf_counter() - start, sample_gradients=count,
        )
