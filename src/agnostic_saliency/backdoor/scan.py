"""The backdoor scan: per-class trigger signatures for every class, their anomaly index, the
verdict, and the recovered trigger of each flagged class. No clean data is needed.

A draw runs three stages, each in its own module, all read from one :class:`.config.ScanConfig`:

1. evidence (:mod:`.evidence`): draw the pool and nudge it into class exemplars, fit every class's
   signature, and measure each class (hard region, box after the looks of :mod:`.looks`, blend
   strength) into one per-class :class:`.verdict.EvidenceTable`;
2. verdict (:mod:`.verdict`): a pure function of that table: one shape-aware size per class, the
   MAD anomaly index of its log, and the flag rule;
3. recovery (:mod:`.recovery`): the trigger, its polish and its attack success, for the flagged
   classes only; it cannot change the verdict.

A model that one draw finds clean gets a second, independent draw (:func:`scan`, ``draws``).
"""

from __future__ import annotations

import time

import torch

from ..errors import InputError
from ..method.distributions import make_distribution
from ..models.running import channels_last, check_output, estimate_sample_bytes, frozen
from ..models.spec import InputSpec, NormalizedModel, autocast_dtype
from .config import MAX_TRIGGER_AREA, ScanConfig
from .evidence import Evidence, gather_evidence
from .fitting import Probe
from .recovery import Recovery, recover
from .result import BackdoorResult
from .stamps import attack_success
from .verdict import STATISTIC, Verdict, verdict

__all__ = ["MAX_TRIGGER_AREA", "STATISTIC", "ScanConfig", "attack_success", "scan", "scan_once"]

# Settings the checkpoint's identity leaves out: the data has its own digest, the rest is not a result's.
NOT_IDENTITY = ("images", "progress", "draws")


def scan(
    model: torch.nn.Module,
    spec: InputSpec,
    class_names: list[str] | None = None,
    config: ScanConfig | None = None,
    *,
    images: torch.Tensor | None = None,
    seed: int = 0,
    checkpoint=None,
    **settings,
) -> BackdoorResult:
    """Scan ``model`` for a backdoor: one draw of :func:`scan_once`, and while no draw has flagged
    a class, up to ``draws`` in all, the n-th at seed ``seed + n`` (default 2 draws).

    ``config`` holds every setting (default :class:`.config.ScanConfig`); ``settings`` are its
    flat names (``steps=50``, ``max_trigger_area=0.1``, ``draws=1``, ..., see
    :data:`.config.FLAT`) and override it. ``images``: unlabeled images to sample from (with
    ``distribution`` ``images`` or ``shapes+images``); each flagged trigger's attack success on
    them is reported too.

    The model is trojaned if any draw flags a class. The result is the first draw that flags one,
    or else the draw with the highest score; ``seconds`` and ``sample_gradients`` count every
    draw, and ``settings["draws"]`` lists each one's seed, flags, score and seconds.

    Why a second draw: a draw's pool, batches and refits are random, and a target can stay under
    the threshold in one draw and stand out in the next. On the population at seeds 0 to 5, each
    single draw missed 1 or 2 of 16 targets (the CNN stripes blend at every seed, one more at
    seeds 0 and 2), while each pair of seeds (s, s + 1) missed only the stripes blend; no clean
    model was flagged at any seed, so no pair flags one (docs/design.md, two draws; commit 27ff9fc). A model
    that the first draw flags costs nothing more; a clean one costs twice.

    ``checkpoint`` (a :class:`~agnostic_saliency.durable.checkpoint.Checkpoint` whose path is a
    folder): each finished draw is saved there, and with ``checkpoint.resume`` the saved draws are
    taken instead of redone (each draw starts from its own seed, so the result equals an
    uninterrupted scan's). Default None: no checkpoints.
    """
    config = ScanConfig.from_settings(config, **settings)
    start = time.perf_counter()
    identity = None if checkpoint is None else _identity(model, spec, class_names, config, settings, seed, images)
    results = []
    for n in range(config.run.draws):
        saved = None
        if checkpoint is not None:
            from ..durable.checkpoint import load_scan_draw, save_scan_draw

            saved = load_scan_draw(checkpoint, identity, n, BackdoorResult)
        if saved is None:
            saved = scan_once(model, spec, class_names, config, images=images, seed=seed + n)
            if checkpoint is not None:
                save_scan_draw(checkpoint, identity, n, saved)
        results.append(saved)
        if results[-1].flagged:
            break
    chosen = results[-1] if results[-1].flagged else max(results, key=lambda r: r.score)
    chosen.settings["draws"] = [
        {"seed": r.settings["seed"], "flagged": r.flagged, "score": r.score, "seconds": r.seconds} for r in results
    ]
    chosen.seconds = time.perf_counter() - start
    chosen.sample_gradients = sum(r.sample_gradients for r in results)
    return chosen


def _identity(model, spec, class_names, config: ScanConfig, settings: dict, seed: int, images) -> dict:
    """What a saved draw must match to be taken: the settings given (all of them, when a config
    was given), the seed, the model and the tool versions."""
    from ..durable.checkpoint import model_digest, tensor_digest, tool_versions

    named = {key: value for key, value in settings.items() if key not in NOT_IDENTITY}
    if config != ScanConfig.from_settings(**settings):  # a config of its own: every setting counts
        named = {key: value for key, value in config.flat().items() if key not in NOT_IDENTITY}
    return {
        "kind": "scan",
        "settings": {
            **named,
            "seed": seed,
            "draws": config.run.draws,
            "class_names": class_names,
            "input_spec": spec.to_dict(),
            "images": tensor_digest(images),
        },
        "model": model_digest(model),
        "versions": tool_versions(),
    }


def scan_once(
    model: torch.nn.Module,
    spec: InputSpec,
    class_names: list[str] | None = None,
    config: ScanConfig | None = None,
    *,
    images: torch.Tensor | None = None,
    seed: int = 0,
    **settings,
) -> BackdoorResult:
    """One draw of the scan (see :func:`scan`): evidence, verdict, recovery."""
    config = ScanConfig.from_settings(config, **settings)
    start = time.perf_counter()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    wrapped = NormalizedModel(model, spec, autocast_dtype(config.run.precision, device)).to(device)
    # The fast path: mixed precision, with conv weights in channels-last order, which oneDNN's
    # reduced-precision kernels want (full fp32 keeps the layout as given, and its numbers).
    with frozen(model), channels_last(model, enabled=config.run.precision != "fp32"):
        num_classes = check_output(model, spec)
        if num_classes < 2:
            raise InputError("a backdoor scan needs a model with at least 2 classes")
        probe = _probe(wrapped, spec, config, device, num_classes, seed, images)
        evidence = gather_evidence(probe)
        judged = verdict(evidence.table, config)
        recovered = recover(probe, evidence, judged, images)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    return _result(probe, spec, names, evidence, judged, recovered, images, time.perf_counter() - start)


def _probe(wrapped, spec: InputSpec, config: ScanConfig, device, num_classes: int, seed: int, images) -> Probe:
    """The model under scan and how to run it: the distribution, and the memory cap's chunks."""
    per_sample = estimate_sample_bytes(wrapped, spec, device)
    cap = int(config.run.memory_cap_mb * 2**20)
    low, high = spec.value_range
    return Probe(
        model=wrapped,
        source=make_distribution(config.pool.distribution, spec, images),
        device=device,
        low=low,
        high=high,
        num_classes=num_classes,
        image_shape=tuple(spec.shape[1:]),
        classes_per_pass=max(1, cap // max(per_sample * config.fit.batch_size, 1)),
        samples_per_pass=max(1, min(1024, cap // max(per_sample, 1))),
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        config=config,
    )


def _result(probe, spec, names, evidence: Evidence, judged: Verdict, recovered: Recovery, images, seconds):
    """The draw's :class:`.result.BackdoorResult`: the table, the verdict and the triggers."""
    masks, patterns, hard = evidence.masks.clone(), evidence.patterns.clone(), list(evidence.hard)
    for k, pattern in recovered.patterns.items():
        patterns[k] = pattern
    for k, region in recovered.hard.items():
        hard[k] = region
    return BackdoorResult(
        "scan",
        _class_rows(names, evidence, judged, recovered, hard),
        list(judged.flagged),
        judged.score,
        seconds,
        masks.cpu(),
        patterns.cpu(),
        recovered.triggers,
        recovered.asr,
        _settings(probe, spec, evidence, images),
        evidence.sample_gradients + recovered.sample_gradients,
        region_masks=torch.stack(hard).cpu(),
        trigger_asr_images=recovered.asr_images,
        statistic=STATISTIC,
    )


def _class_rows(names, evidence: Evidence, judged: Verdict, recovered: Recovery, hard) -> list[dict]:
    """One report row per class."""
    table, flagged = evidence.table, set(judged.flagged)
    return [
        {
            "index": k,
            "name": names[k],
            "signature_size": table.signature_size[k],
            "mask_l1": table.mask_l1[k],
            "region_pixels": table.region_pixels[k],
            "flip_rate": table.flip_rate[k],
            "baseline_share": table.baseline_share[k],
            "reached": bool(table.reached[k]),
            "start": table.start[k],
            "anomaly_index": judged.anomaly_index[k],
            "size_index": judged.size_index[k],
            "box_pixels": table.box_pixels[k],
            "box_size": judged.box_size[k],
            "box_index": judged.box_index[k],
            "compact": judged.compact[k],
            "blend_strength": table.blend_strength[k],
            "blend_index": judged.blend_index[k],
            "faint_blend": judged.faint[k],
            "trigger_strength": recovered.strengths.get(k),
            "trigger_kind": ("patch" if judged.compact[k] else "blend") if k in flagged else None,
            "trigger_pixels": int((hard[k] > 0.5).sum()) if k in flagged and judged.compact[k] else None,
            "trigger_polished": recovered.polished.get(k),
            "shortlisted": table.shortlisted[k],
            "full_fit": table.full_fit[k],
            "cheap_anomaly": None if table.cheap_anomaly is None else table.cheap_anomaly[k],
            "small_box_reach": None if table.small_box_reach is None else table.small_box_reach[k],
        }
        for k in range(len(names))
    ]


def _settings(probe: Probe, spec: InputSpec, evidence: Evidence, images) -> dict:
    """Every setting that produced the draw, and what it drew."""
    flat = {
        key: value for key, value in probe.config.flat().items() if key not in ("draws", "memory_cap_mb", "progress")
    }
    exemplars = evidence.pool.exemplars
    return {
        **flat,
        "distribution": probe.source.describe(),
        "seed": probe.seed,
        **evidence.shortlist,
        "exemplars_on_class": None if exemplars is None else exemplars[0],
        "exemplars_mean_confidence": None if exemplars is None else exemplars[1],
        "device": str(probe.device),
        "input_spec": spec.to_dict(),
        "class_chunks": evidence.class_chunks,
        "images": 0 if images is None else int(len(images)),
    }
