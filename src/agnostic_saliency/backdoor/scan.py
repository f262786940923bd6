"""The backdoor scan: per-class trigger signatures for every class, their anomaly index, the
verdict, and the recovered trigger of each flagged class. No clean data is needed.

Steps: draw a pool from an unrestricted distribution (procedural shapes by default; unlabeled
images when given) and nudge it into class exemplars, samples the model is confident of, evenly
over the classes (:mod:`.exemplars`; this is what keeps "easy" classes from looking like
backdoor targets); fit every class's signature in one batched loop, from two starts per class, a
faint uniform mask and the class's gradient start, keeping the smaller (:mod:`.signatures`);
flag the classes whose trigger has one of the two shapes a backdoor takes and is anomalously
small for it (MAD anomaly index of the log size over the classes, low side, above 2 as Neural
Cleanse does): a patch, when the hard region fits a small square box (the small region of a
merely easy class is a scatter of pixels), sized sqrt(mask L1 x box pixels) (an anomalous class
whose box is too wide gets a second look, every box size at a few dense spots, and a third, a
pattern fitted inside the box, which must then work at half the area, and a fourth, its signature
refitted on raw samples, whose box must fit the bound); or a blend, when
the class's pattern blended faintly over the whole image already flips the samples, sized
sqrt(mask L1 x hard region pixels); for each
flagged patch class, harden its mask to the smallest region that still flips held-out exemplars
and compact that region to the box of its main part where the box still flips them (those
classes are refitted on raw samples too, and the refit's trigger is kept where it ends no
larger); a flagged blend's trigger is
its pattern at the weakest strength that works. Each trigger's pattern is then refitted under its
final mask, on exemplars and then on raw samples (each refit kept unless it flips fewer held-out
samples), and its attack success rate measured. A model that one such draw finds clean gets a
second, independent draw (:func:`scan`, ``draws``).

With more classes than the shortlist (default max(10, ceil(sqrt(classes)))), a cheap pass comes
first: every class's signature at a few steps with the same statistics ranks the classes, and
only the most anomalous, plus a few reference classes, get the full fit and everything after it
(:mod:`.shortlist`); the others keep their cheap figures, moved onto the full fit's scale for
the MAD index.
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import InputError
from ..method.distributions import make_distribution
from ..metrics.anomaly import flag_anomalies
from ..models.running import channels_last, estimate_sample_bytes, frozen
from ..models.spec import InputSpec, NormalizedModel, autocast_dtype
from .exemplars import class_exemplars, exemplar_quality
from .result import BackdoorResult
from .shortlist import (
    CHEAP_START_SAMPLES,
    CHEAP_TESTS,
    REFERENCE_CLASSES,
    cheap_anomaly,
    log_gap,
    on_full_scale,
    pick_classes,
    shortlist_size,
)
from .signatures import (
    UNIFORM_START,
    balanced_pool,
    blend_anomaly_index,
    class_probabilities,
    compact_region,
    faint_blends,
    far_samples,
    fills_its_box,
    fit_signatures,
    fitted_box,
    flip_rates,
    gradient_start,
    polished_pattern,
    smallest_box,
    smallest_region,
    stamp_size,
    weakest_blend,
    working_box,
)
from .stamps import attack_success

# The compact-box test's bound, a share of the image: an 8x8 box on 28x28. Every target found on
# the population and the two test splits needed at most 64 px (runs of 2026-11-26 to 11-27), while easy
# classes of clean models (and non-target classes of trojaned ones) took 81 px boxes on fresh
# draws: "shirt" on a retrained test2 MLP at 3 of 6 seeds (docs/design.md, the box bound; commit 363aa87).
MAX_TRIGGER_AREA = 1 / 12


# What a scan's anomaly index is computed from, recorded in every result.
STATISTIC = (
    "signature_size = sqrt(mask_l1 * region_pixels) and box_size = sqrt(mask_l1 * box_pixels), "
    "each with the MAD anomaly index of its log over the classes, low side (size_index, "
    "box_index); anomaly_index is box_index for a compact class (box_pixels at most "
    "max_trigger_area of the image), the larger of size_index and blend_index (the same index "
    "of the log blend_strength) for a faint blend, and size_index otherwise; flagged when "
    "anomaly_index is above the threshold and the class is compact or a faint blend "
    "(blend_strength, flipping blend_required of the exemplars, at most max_blend_strength, "
    "and at most blend_gap times every other class's); with a shortlist, a class without the full "
    "fit counts with its cheap pass's sizes and blend strength, each times exp(shortlist_shift), the "
    "median log ratio of full to cheap on the reference classes, and is never flagged"
)


def scan(
    model: torch.nn.Module,
    spec: InputSpec,
    class_names: list[str] | None = None,
    draws: int = 2,
    seed: int = 0,
    checkpoint=None,
    **settings,
) -> BackdoorResult:
    """Scan ``model`` for a backdoor: one draw of :func:`scan_draw` (whose keywords ``settings``
    are), and while no draw has flagged a class, up to ``draws`` in all, the n-th at seed
    ``seed + n`` (default 2 draws).

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
    if draws < 1:
        raise InputError(f"a scan needs at least one draw, got {draws}")
    start = time.perf_counter()
    results = []
    identity = None
    if checkpoint is not None:
        from ..durable.checkpoint import model_digest, tensor_digest, tool_versions

        named = {key: value for key, value in settings.items() if key not in ("images", "progress")}
        identity = {
            "kind": "scan",
            "settings": {
                **named,
                "seed": seed,
                "draws": draws,
                "class_names": class_names,
                "input_spec": spec.to_dict(),
                "images": tensor_digest(settings.get("images")),
            },
            "model": model_digest(model),
            "versions": tool_versions(),
        }
    for n in range(draws):
        saved = None
        if checkpoint is not None:
            from ..durable.checkpoint import load_scan_draw, save_scan_draw

            saved = load_scan_draw(checkpoint, identity, n, BackdoorResult)
        if saved is None:
            saved = scan_draw(model, spec, class_names, seed=seed + n, **settings)
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


def scan_draw(
    model: torch.nn.Module,
    spec: InputSpec,
    class_names: list[str] | None = None,
    distribution: str = "shapes",
    images: torch.Tensor | None = None,
    steps: int = 100,
    batch_size: int = 16,
    pool_size: int = 768,
    threshold: float = 2.0,
    max_trigger_area: float = MAX_TRIGGER_AREA,
    box_placements: int = 3,
    box_fit_steps: int = 30,
    polish_steps: int = 100,
    refit_look: bool = True,
    max_blend_strength: float = 0.14,
    blend_gap: float = 0.5,
    blend_required: float = 0.5,
    required: float = 0.8,
    quantile: float = 0.5,
    exemplar_steps: int = 30,
    far_batches: bool = True,
    shortlist: int | None = None,
    shortlist_steps: int = 20,
    seed: int = 0,
    memory_cap_mb: float = 2048,
    precision: str = "fp32",
    progress: bool = True,
) -> BackdoorResult:
    """One draw of the backdoor scan of ``model`` (see :func:`scan`), data-free unless ``images``
    (unlabeled) are given.

    Parameters
    ----------
    model, spec : the classifier and its input spec (normalisation applied inside).
    class_names : names for the report.
    distribution : where the samples come from (default ``shapes``: random ellipses and
        rectangles on a dark background, see :class:`~agnostic_saliency.method.distributions.RandomShapes`);
        ``images`` uses the given unlabeled images, ``shapes+images`` mixes them.
    steps, batch_size : iterations and samples per iteration of the signature fit.
    pool_size : samples drawn for the fit; a third more are held out for the statistics.
    threshold : MAD anomaly index above which a class is flagged (default 2).
    max_trigger_area : a class is flagged only if a square box of at most this share of the image
        (default 1/12: an 8x8 box on 28x28), placed on its hard region, still flips the held-out
        exemplars: a patch trigger is compact, while the small region of a merely easy class is
        scattered. 1 turns the test off (and lets any anomalous class be flagged, with more clean
        classes). Until commit 363aa87 the bound was 1/8 (a 9x9 box); see :data:`MAX_TRIGGER_AREA`.
    box_placements : a class whose signature is anomalous but whose box (placed where its hard
        region is densest) is too wide gets a second look: every box size up to the bound, at this
        many of the region's densest spots (default 3; 1 turns the second look off; see
        :func:`.signatures.smallest_box`).
    box_fit_steps : a class still too wide after the second look gets a third: a pattern fitted
        inside a box at those spots, for this many steps (default 30; 0 turns it off), where a box
        of at most half the largest trigger area must work (:func:`.signatures.fitted_box`).
    refit_look : a class whose box is still too wide after the third look, but whose signature or
        box signature is anomalous (index above ``threshold``), gets a fourth: its signature refitted
        on raw samples of the distribution (a separate draw), whose box gets the second look's
        test; where that box fits the bound, the refit's mask and pattern stand in for the class's
        (``box_refitted``; the signature statistics stay the first fit's). Default on; on the
        population, seeds 0 to 3, it rescued three targets the other looks missed (a CNN's 3 px
        patch at two seeds, a LeNet's 5 px patch at one) and no class of a clean model
        (docs/design.md, the fourth look; commit 3abdb36).
    polish_steps : each flagged class's recovered trigger gets its pattern refitted under its final
        mask, for this many steps (default 100; 0 turns it off) on the class's far exemplars, then
        as many on raw samples of the distribution; each refit is kept where it flips at least as
        many held-out samples (exemplars, then exemplars and raw samples) as the pattern before it
        (:func:`.signatures.polished_pattern`). The mask, and so every
        statistic and flag, is unchanged; the trigger's attack success rate rises.
    max_blend_strength : a class whose trigger is not compact can still be flagged if its
        pattern, blended over the whole image at at most this strength (default 0.14), flips the
        held-out exemplars: a blended backdoor's trigger is faint, while clean classes' patterns
        needed 0.18 or more on the population to flip 80% of them (0.15 or more for half).
        0 turns blend flagging off.
    blend_gap : ... and if that strength is at most this share (default 1/2) of every other
        class's weakest working blend: on an unseen clean resnet, "shirt" worked at 0.12 with
        "bag" at 0.19, while the blend targets' next class needed 2.5 to 4 times theirs.
    blend_required : the share of held-out exemplars a blend must flip in that test (default 1/2):
        a blend backdoor flips half the exemplars at far below every other class's strength,
        while at 80% each exemplar's own resistance dominates (docs/design.md, the faint-blend test).
        Such a class is judged on its ``blend_index`` (the MAD index of its log strength over the
        classes) or its signature's, whichever is larger; its trigger is the blend at the weakest
        strength that flips ``required`` of them.
    required : flip rate that the hardened trigger region must reach.
    quantile : for each class only the samples the model finds least like it count (those at
        or below this quantile of the class's probability).
    exemplar_steps : signed-gradient steps that nudge each pool sample until the model is
        confident of an assigned class (0: use the raw samples, balanced over the model's answers).
    far_batches : each class's fit batch is drawn from its own far samples (default; see
        :func:`.signatures.fit_signatures`), so every sample in it counts and ``batch_size`` 16
        gives as many informative samples as a shared batch of 32. With the box test it flags no
        more clean models than the shared batch did, at 30% less time (docs/design.md, far batches;
        commit c7da3ee).
    shortlist : with more classes than this, a cheap pass (the fit at ``shortlist_steps`` steps,
        then the same statistics) ranks every class, and only this many of the most anomalous,
        plus five reference classes spread over the rest, get the full fit and the tests after
        it; the others keep their cheap figures (``full_fit`` false) and a size index on the
        full fit's scale (:mod:`.shortlist`). Default max(10, ceil(sqrt(classes))): a model of
        10 classes or fewer is scanned exactly as without it. 0 turns it off. Forced to 3 of 10
        on the population, the cheap pass kept the true target in 15 of 16 trojaned models
        (docs/design.md, the shortlist).
    shortlist_steps : the cheap pass's fit steps (default 20).
    memory_cap_mb : classes are fitted in chunks whose forward+backward fits this cap.
    precision : ``fp32`` (default), or ``bf16`` / ``fp16`` (CUDA only) to run the model under
        autocast mixed precision; losses stay in fp32.
    """
    if not 0 < max_trigger_area <= 1:
        raise InputError(f"the largest trigger area is a share of the image in (0, 1], got {max_trigger_area}")
    if box_fit_steps < 0:
        raise InputError(f"the box fit's steps cannot be negative, got {box_fit_steps}")
    if polish_steps < 0:
        raise InputError(f"the trigger polish's steps cannot be negative, got {polish_steps}")
    if box_placements < 1:
        raise InputError(f"the box test needs at least one placement, got {box_placements}")
    if not 0 <= max_blend_strength <= 1:
        raise InputError(f"the largest blend strength is in [0, 1], got {max_blend_strength}")
    if not 0 < blend_required <= 1:
        raise InputError(f"the blend test's flip share is in (0, 1], got {blend_required}")
    if not 0 < blend_gap <= 1:
        raise InputError(f"the blend gap is a ratio in (0, 1], got {blend_gap}")
    if isinstance(shortlist_steps, bool) or not isinstance(shortlist_steps, int) or shortlist_steps < 1:
        raise InputError(f"the shortlist's cheap pass needs at least one step, got {shortlist_steps!r}")
    shortlist_size(shortlist, 0)  # a bad shortlist is refused before any work
    start = time.perf_counter()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    wrapped = NormalizedModel(model, spec, autocast_dtype(precision, device)).to(device)
    low, high = spec.value_range
    generator = torch.Generator().manual_seed(seed)
    # The fast path: mixed precision, with conv weights in channels-last order, which oneDNN's
    # reduced-precision kernels want (full fp32 keeps the layout as given, and its numbers).
    with frozen(model), channels_last(model, enabled=precision != "fp32"):
        from ..models.running import check_output

        num_classes = check_output(model, spec)
        if num_classes < 2:
            raise InputError("a backdoor scan needs a model with at least 2 classes")
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        source = make_distribution(distribution, spec, images)
        per_sample = estimate_sample_bytes(wrapped, spec, device)
        chunk = max(1, int(memory_cap_mb * 2**20) // max(per_sample * batch_size, 1))
        # Samples per pass outside the fit (gradients or plain forward passes), under the same cap.
        samples_per_pass = max(1, min(1024, int(memory_cap_mb * 2**20) // max(per_sample, 1)))

        def raw_pool(size: int, draws: torch.Generator = generator) -> torch.Tensor:
            return balanced_pool(wrapped, source.sample(4 * size, draws, device), size, draws, chunk=samples_per_pass)

        def fit_in_chunks(
            fit_pool: torch.Tensor,
            classes: list[int],
            show_progress: bool,
            probabilities: torch.Tensor | None = None,
            draws: torch.Generator = generator,
            fit_steps: int = steps,
            description: str = "signatures",
            tests: tuple[torch.Tensor, torch.Tensor] | None = None,
            start_samples: int = 256,
            measure_flips: bool = True,
        ):
            """Every class's signature fitted from two starts, a faint uniform mask and the class's
            gradient start (:func:`.signatures.gradient_start`), all in one batched loop split into
            groups whose forward+backward fits the memory cap. Per class the start with the smaller
            signature on the held-out samples is kept: each start finds compact triggers that the
            other misses, and a class's signature is the smallest one found. ``tests``: the held-out
            samples and their probabilities for the region test (default all of them);
            ``start_samples``: samples behind each gradient start; ``measure_flips``: measure the
            kept start's flip rate (None otherwise)."""
            if probabilities is None:  # once, shared by every group
                probabilities = class_probabilities(wrapped, fit_pool, samples_per_pass)
            seeded_masks, seeded_patterns, seeding = gradient_start(
                wrapped, fit_pool, classes, probabilities, quantile, count=start_samples, chunk=samples_per_pass
            )
            rows = classes + classes
            mask_init = torch.cat([torch.full_like(seeded_masks, UNIFORM_START), seeded_masks])
            pattern_init = torch.cat([torch.zeros_like(seeded_patterns), seeded_patterns])
            starts = range(0, len(rows), chunk)
            parts = [
                fit_signatures(
                    wrapped,
                    fit_pool,
                    num_classes,
                    low,
                    high,
                    steps=fit_steps,
                    batch_size=batch_size,
                    generator=draws,
                    progress=show_progress,
                    classes=rows[c : c + chunk],
                    quantile=quantile,
                    probabilities=probabilities,
                    mask_init=mask_init[c : c + chunk],
                    pattern_init=pattern_init[c : c + chunk],
                    far_batches=far_batches,
                    chunk=samples_per_pass,
                    measure_flips=False,
                    description=description + (f" {i + 1}/{len(starts)}" if len(starts) > 1 else ""),
                )
                for i, c in enumerate(starts)
            ]
            masks, patterns = torch.cat([p.masks for p in parts]), torch.cat([p.patterns for p in parts])
            fitted = {
                name: sum((getattr(p, name) for p in parts), [])
                for name in ("mask_l1", "flip_rate", "baseline_share", "reached")
            }
            regions, hard = smallest_region(
                wrapped,
                masks.to(device),
                patterns.to(device),
                rows,
                *((held_out, held_probabilities) if tests is None else tests),
                required=required,
                quantile=quantile,
                chunk=samples_per_pass,
            )
            n = len(classes)
            sizes = [stamp_size(a, b) for a, b in zip(fitted["mask_l1"], regions)]
            best = [row + n if sizes[row + n] < sizes[row] else row for row in range(n)]
            chosen = torch.tensor(best)
            picked = {name: [values[row] for row in best] for name, values in fitted.items()}
            # Only the kept start's flip rate is reported, so only it is measured.
            if measure_flips:
                picked["flip_rate"] = flip_rates(
                    wrapped,
                    masks[chosen],
                    patterns[chosen],
                    classes,
                    fit_pool,
                    probabilities,
                    quantile,
                    samples_per_pass,
                )
            picked.update(
                region_pixels=[regions[row] for row in best],
                size=[sizes[row] for row in best],
                start=["gradient" if row >= n else "uniform" for row in best],
            )
            return (
                masks[chosen],
                patterns[chosen],
                [hard[row] for row in best],
                picked,
                seeding + sum(p.sample_gradients for p in parts),
                len(parts),
            )

        count = 0
        exemplars = None
        if exemplar_steps > 0:
            pool, labels, count = class_exemplars(
                wrapped,
                source,
                pool_size + pool_size // 2,
                num_classes,
                low,
                high,
                generator,
                device,
                steps=exemplar_steps,
                progress=progress,
                chunk=min(512, samples_per_pass),
            )
            exemplars = exemplar_quality(wrapped, pool, labels, samples_per_pass)
        else:
            pool = raw_pool(pool_size + pool_size // 2)
        fit_pool, held_out = pool[:pool_size], pool[pool_size:]
        held_probabilities = class_probabilities(wrapped, held_out, samples_per_pass)
        held_far = far_samples(held_probabilities, quantile)
        fit_probabilities = class_probabilities(wrapped, fit_pool, samples_per_pass)
        fit_far = far_samples(fit_probabilities, quantile)

        def first_boxes(regions, class_patterns, classes, tests=(held_out, held_probabilities)):
            """Each class's smallest box at its region's densest spot."""
            return smallest_box(
                wrapped,
                [h.to(device) for h in regions],
                class_patterns.to(device),
                classes,
                *tests,
                required=required,
                quantile=quantile,
                chunk=samples_per_pass,
                placements=1,
            )

        def blend_test(class_patterns, classes, tests=(held_out, held_probabilities)):
            """Each class's weakest blend that flips ``blend_required`` of the held-out exemplars."""
            return weakest_blend(
                wrapped,
                class_patterns.to(device),
                classes,
                *tests,
                required=blend_required,
                quantile=quantile,
                chunk=samples_per_pass,
            )

        every_class = list(range(num_classes))
        kept = shortlist_size(shortlist, num_classes)
        shortlisted, reference, full_classes, cheap = every_class, [], every_class, None
        if kept < num_classes:
            # The cheap pass: every class's signature at a few steps, with the statistics the
            # verdict reads; only the most anomalous, and a few reference classes, go on. Its
            # stamp tests take a share of the held-out exemplars, its gradient starts fewer samples.
            tests = held_out[:CHEAP_TESTS], held_probabilities[:CHEAP_TESTS]
            cheap_masks, cheap_patterns, cheap_hard, cheap, spent, _ = fit_in_chunks(
                fit_pool,
                every_class,
                progress,
                fit_probabilities,
                fit_steps=shortlist_steps,
                description="shortlist",
                tests=tests,
                start_samples=CHEAP_START_SAMPLES,
                measure_flips=False,
            )
            count += spent
            cheap.update(masks=cheap_masks, patterns=cheap_patterns, hard=cheap_hard)
            cheap["box_pixels"] = first_boxes(cheap_hard, cheap_patterns, every_class, tests)
            cheap["box_size"] = [stamp_size(a, b) for a, b in zip(cheap["mask_l1"], cheap["box_pixels"])]
            cheap["blend_strength"] = blend_test(cheap_patterns, every_class, tests)
            cheap["anomaly"] = cheap_anomaly(cheap["size"], cheap["box_size"], cheap["blend_strength"])
            shortlisted, reference = pick_classes(cheap["anomaly"], kept, REFERENCE_CLASSES)
            full_classes = sorted(shortlisted + reference)
        full_set = set(full_classes)

        def every_row(full_values, name):
            """One value per class: the full fit's for its classes, the cheap pass's ``name`` for the rest."""
            if cheap is None:
                return full_values
            if isinstance(full_values, torch.Tensor):
                merged = cheap[name].clone()
                merged[full_classes] = full_values
                return merged
            merged = list(cheap[name])
            for row, k in enumerate(full_classes):
                merged[k] = full_values[row]
            return merged

        masks, patterns, hard, fitted, spent, class_chunks = fit_in_chunks(
            fit_pool, full_classes, progress, fit_probabilities
        )
        count += spent
        masks, patterns, hard = every_row(masks, "masks"), every_row(patterns, "patterns"), every_row(hard, "hard")
        fitted = {name: every_row(values, name) for name, values in fitted.items()}
        l1, flips, shares, reached, regions, sizes, starts = (
            fitted[name]
            for name in ("mask_l1", "flip_rate", "baseline_share", "reached", "region_pixels", "size", "start")
        )
        # Outside the full fit a class's figures are the cheap pass's, moved onto the full fit's
        # scale for the MAD index, so that the index is still taken over every class.
        shift = {"size": 0.0, "box": 0.0, "blend": 0.0}
        if cheap is not None:
            shift["size"] = log_gap(sizes, cheap["size"], reference)
        size_index, _ = flag_anomalies(
            [math.log(v) for v in on_full_scale(sizes, full_set, shift["size"])], threshold, side="low"
        )
        # A small signature alone also marks classes that are merely easy to reach (on
        # Fashion-MNIST, "bag" from a scatter of pixels); a trigger must also fit in a small box.
        boxes = every_row(
            first_boxes([hard[k] for k in full_classes], patterns[full_classes], full_classes), "box_pixels"
        )
        if cheap is not None:
            shift["box"] = log_gap([stamp_size(a, b) for a, b in zip(l1, boxes)], cheap["box_size"], reference)
        height, width = spec.shape[1:]
        largest_box = int(max_trigger_area * height * width)

        def every_size_box(regions, class_patterns, classes):
            """The second look's search (also the fourth's): every box size up to the bound, at the
            regions' few densest spots."""
            return smallest_box(
                wrapped,
                [h.to(device) for h in regions],
                class_patterns.to(device),
                classes,
                held_out,
                held_probabilities,
                required=required,
                quantile=quantile,
                chunk=samples_per_pass,
                placements=box_placements,
                every_side_up_to=largest_box,
            )

        def box_signatures(boxes):
            """Every class's box signature, sqrt(mask L1 x box pixels), and its MAD index (low side)."""
            box_sizes = [stamp_size(a, b) for a, b in zip(l1, boxes)]
            judged = on_full_scale(box_sizes, full_set, shift["box"])
            return box_sizes, flag_anomalies([math.log(v) for v in judged], threshold, side="low")[0]

        # A second look for the classes whose signature is anomalous but whose box was too wide:
        # every box size up to the bound, each at the region's few densest spots. The region can
        # be the trigger plus a denser cluster of scattered helper pixels (see smallest_box).
        second = [k for k in full_classes if boxes[k] > largest_box and size_index[k] > threshold]
        if second and box_placements > 1:
            looked = every_size_box([hard[k] for k in second], patterns[second], second)
            for k, box in zip(second, looked):
                boxes[k] = min(boxes[k], box)
        # A third look for those still too wide: the pattern fitted inside the box. On a network
        # with global average pooling the fit can spread a patch's evidence, so that the fitted
        # pattern under any one box is not the trigger. A box with its own fitted pattern is an
        # adversarial patch, so it must work at half the bound.
        boxed_fits = {}
        fitted_side = math.isqrt(largest_box // 2)
        if box_fit_steps > 0 and fitted_side >= 1:
            box_generator = torch.Generator().manual_seed(seed + 11)  # leaves the scan's own draws as they were
            for k in second:
                if boxes[k] <= largest_box:
                    continue
                found = fitted_box(
                    wrapped,
                    hard[k].to(device),
                    patterns[k].to(device),
                    fit_pool[fit_far[:, k]],
                    held_out[held_far[:, k]],
                    k,
                    low,
                    high,
                    fitted_side,
                    box_placements,
                    steps=box_fit_steps,
                    batch_size=batch_size,
                    required=required,
                    generator=box_generator,
                    chunk=samples_per_pass,
                    boxes_per_pass=chunk,
                )
                if found is not None:
                    boxes[k], boxed_fits[k] = found[0], (found[1].cpu(), found[2].cpu())
                    count += found[3]
        # A fourth look for the classes still too wide whose signature or box is anomalous: the
        # signature refitted on raw samples. Fitted on exemplars, a CNN's signature of a 3 px white
        # patch was a 20 px scatter around it at seeds 2 and 3 (boxes of 121 and 169 px); refitted
        # on raw shapes, its boxes took 49 and 9 px (docs/design.md, the fourth look). The refit's
        # box must pass the same test; its signature then stands in for the first one.
        refit_looked = set()
        if refit_look and exemplar_steps > 0:
            _, box_index_so_far = box_signatures(boxes)
            fourth = [
                k
                for k in full_classes
                if boxes[k] > largest_box and max(size_index[k], box_index_so_far[k]) > threshold
            ]
            if fourth:
                look_generator = torch.Generator().manual_seed(seed + 17)  # leaves the scan's own draws as they were
                look_masks, look_patterns, look_hard, _, spent, _ = fit_in_chunks(
                    raw_pool(pool_size, look_generator), fourth, False, draws=look_generator
                )
                count += spent
                look_boxes = every_size_box(look_hard, look_patterns, fourth)
                for row, k in enumerate(fourth):
                    if look_boxes[row] <= largest_box:
                        boxes[k] = look_boxes[row]
                        hard[k], masks[k], patterns[k] = look_hard[row].cpu(), look_masks[row], look_patterns[row]
                        refit_looked.add(k)
        # Only a class that had the full fit is judged (compact or faint).
        compact = [k in full_set and box <= largest_box for k, box in enumerate(boxes)]
        # A blended backdoor's trigger spans the image, so the box test cannot see it; it is faint
        # instead: far fainter than the blend of any other class's pattern that works.
        strengths = every_row(blend_test(patterns[full_classes], full_classes), "blend_strength")
        if cheap is not None:
            shift["blend"] = log_gap(strengths, cheap["blend_strength"], reference)
        judged_strengths = on_full_scale(strengths, full_set, shift["blend"])
        faint = [
            k in full_set and faint_k
            for k, faint_k in enumerate(faint_blends(judged_strengths, compact, max_blend_strength, blend_gap))
        ]
        # A faint blend is judged by how far its blend stands below the other classes' (as a
        # compact class by its box), or by its signature, whichever is more anomalous.
        blend_index = blend_anomaly_index(judged_strengths)
        # A patch trigger is measured by the box it needs: its hard region alone can undercount a
        # stamp whose pixels the fit spread around it. Every class's box signature gets its own
        # MAD index, and a compact class is judged on that one, any other class on its region.
        box_sizes, box_index = box_signatures(boxes)
        index = [
            float(box_index[k] if compact[k] else max(size_index[k], blend_index[k]) if faint[k] else size_index[k])
            for k in range(num_classes)
        ]
        flagged = [k for k in range(num_classes) if index[k] > threshold and (compact[k] or faint[k])]
        patches = [k for k in flagged if compact[k] and k not in boxed_fits and k not in refit_looked]
        trigger_fit = {
            k: "box fit" if k in boxed_fits else "raw samples" if k in refit_looked else "exemplars" for k in flagged
        }
        refits = {}
        if patches and exemplar_steps > 0:
            # Signatures fitted on exemplars find the class, but the fit's mask can be diffuse. A
            # second fit on raw samples, for the flagged classes only, often finds the compact
            # trigger; it is a candidate where its hard region is smaller and still flips the
            # held-out exemplars (the same test the first region passed).
            refit_masks, refit_patterns, refit_hard, refit, spent, _ = fit_in_chunks(
                raw_pool(pool_size), patches, False
            )
            count += spent
            refits = {
                k: (refit_hard[row], refit_masks[row], refit_patterns[row])
                for row, k in enumerate(patches)
                if refit["region_pixels"][row] < regions[k]
            }
        # A flagged blend's trigger is its pattern at the weakest strength that flips as many
        # held-out exemplars as a patch must (the test above asks for fewer).
        blends = [k for k in flagged if not compact[k]]
        trigger_strengths = (
            dict(
                zip(
                    blends,
                    weakest_blend(
                        wrapped,
                        patterns[blends].to(device),
                        blends,
                        held_out,
                        held_probabilities,
                        required=required,
                        quantile=quantile,
                        chunk=samples_per_pass,
                    ),
                )
            )
            if blends
            else {}
        )
        for k in flagged:
            if not compact[k]:  # a blend: the pattern over the whole image
                hard[k] = torch.full((height, width), trigger_strengths[k] or strengths[k])
                continue
            if k in boxed_fits:  # the box and the pattern fitted inside it
                hard[k], patterns[k] = boxed_fits[k]
                continue
            others = held_out[held_far[:, k]]
            boxed = compact_region(
                wrapped, hard[k].to(device), patterns[k].to(device), others, k, required, chunk=samples_per_pass
            )
            if not fills_its_box(boxed):
                # The region did not compact to a box that works, but the box test found one on it:
                # that square is the trigger (the region can be the trigger plus scattered helpers).
                square = working_box(
                    wrapped,
                    hard[k].to(device),
                    patterns[k].to(device),
                    others,
                    k,
                    math.isqrt(boxes[k]),
                    box_placements if k in second or k in refit_looked else 1,
                    required,
                    samples_per_pass,
                )
                boxed = boxed if square is None else square
            if k in refits:
                # The raw-sample refit's region, compacted the same way, replaces the trigger where
                # it ends no larger: comparing the regions before compaction once kept a 49 px
                # trigger beside the planted patch over a 36 px one (commit 4592a0c).
                refit_hard, refit_mask, refit_pattern = refits[k]
                refit_boxed = compact_region(
                    wrapped,
                    refit_hard.to(device),
                    refit_pattern.to(device),
                    others,
                    k,
                    required,
                    chunk=samples_per_pass,
                )
                if (refit_boxed > 0.5).sum() <= (boxed > 0.5).sum():
                    boxed, masks[k], patterns[k] = refit_boxed, refit_mask, refit_pattern
                    trigger_fit[k] = "raw samples"
            hard[k] = boxed.cpu()
        # The final masks are fixed; the pattern under each is refitted for the trigger's sake.
        # Twice: on the class's far exemplars, then on raw samples of the distribution. A pattern
        # fitted on exemplars alone flips them but fewer real images (commit a73fe5a: a CNN's
        # recovered 4x4 box over a 3 px white patch flipped 87% of real test images; 99.6% after the
        # second fit), and one fitted on raw samples alone, from the signature fit's pattern, 91%.
        polished = {k: False for k in flagged}
        if flagged and polish_steps > 0:
            polish_generator = torch.Generator().manual_seed(seed + 13)  # leaves the scan's own draws as they were
            polish_batch = batch_size * min(2, chunk)  # no larger a pass than the fit's, under the memory cap
            raw_fit = source.sample(pool_size, polish_generator, device)
            raw_test = source.sample(pool_size // 2, polish_generator, device)
            for k in flagged:
                exemplar_fit, exemplar_test = fit_pool[fit_far[:, k]], held_out[held_far[:, k]]
                for fit_samples, test_samples in (
                    (exemplar_fit, exemplar_test),
                    (raw_fit, torch.cat([exemplar_test, raw_test])),
                ):
                    patterns[k], kept, spent = polished_pattern(
                        wrapped,
                        hard[k].to(device),
                        patterns[k].to(device),
                        fit_samples,
                        test_samples,
                        k,
                        low,
                        high,
                        steps=polish_steps,
                        batch_size=polish_batch,
                        generator=polish_generator,
                        chunk=samples_per_pass,
                    )
                    polished[k] = polished[k] or kept
                    count += spent
        fresh = source.sample(512, torch.Generator().manual_seed(seed + 7), device)
        triggers, asr, asr_images = {}, {}, {}
        for k in flagged:
            mask, pattern = hard[k].to(device), patterns[k].to(device)
            triggers[k] = (hard[k].cpu(), patterns[k].cpu())
            asr[k] = attack_success(wrapped, mask, pattern, fresh, k, samples_per_pass)
            if images is not None:
                asr_images[k] = attack_success(wrapped, mask, pattern, images.to(device), k, samples_per_pass)
    classes = [
        {
            "index": k,
            "name": names[k],
            "signature_size": sizes[k],
            "mask_l1": l1[k],
            "region_pixels": regions[k],
            "flip_rate": flips[k],
            "baseline_share": shares[k],
            "reached": bool(reached[k]),
            "start": starts[k],
            "anomaly_index": index[k],
            "size_index": float(size_index[k]),
            "box_pixels": boxes[k],
            "box_size": box_sizes[k],
            "box_index": float(box_index[k]),
            "compact": bool(compact[k]),
            "blend_strength": strengths[k],
            "blend_index": blend_index[k],
            "faint_blend": bool(faint[k]),
            "trigger_strength": trigger_strengths.get(k),
            "trigger_kind": ("patch" if compact[k] else "blend") if k in flagged else None,
            "trigger_pixels": int((hard[k] > 0.5).sum()) if k in flagged and compact[k] else None,
            "box_fitted": k in boxed_fits,
            "box_refitted": k in refit_looked,
            "trigger_fit": trigger_fit.get(k),
            "trigger_polished": polished.get(k),
            "shortlisted": k in shortlisted,
            "full_fit": k in full_set,
            "cheap_anomaly": None if cheap is None else cheap["anomaly"][k],
        }
        for k in range(num_classes)
    ]
    settings = {
        "distribution": source.describe(),
        "steps": steps,
        "batch_size": batch_size,
        "pool_size": pool_size,
        "threshold": threshold,
        "max_trigger_area": max_trigger_area,
        "box_placements": box_placements,
        "box_fit_steps": box_fit_steps,
        "polish_steps": polish_steps,
        "refit_look": refit_look,
        "max_blend_strength": max_blend_strength,
        "blend_gap": blend_gap,
        "blend_required": blend_required,
        "required": required,
        "quantile": quantile,
        "seed": seed,
        "exemplar_steps": exemplar_steps,
        "far_batches": far_batches,
        "shortlist": shortlist,
        "shortlist_steps": shortlist_steps,
        "shortlisted": None if cheap is None else shortlisted,
        "reference_classes": None if cheap is None else reference,
        "shortlist_shift": None if cheap is None else shift,
        "exemplars_on_class": None if exemplars is None else exemplars[0],
        "exemplars_mean_confidence": None if exemplars is None else exemplars[1],
        "device": str(device),
        "precision": precision,
        "input_spec": spec.to_dict(),
        "class_chunks": class_chunks,
        "images": 0 if images is None else int(len(images)),
    }
    # The model's score: the largest anomaly index among classes whose trigger has a backdoor's shape.
    score = max([0.0] + [index[k] for k in range(num_classes) if compact[k] or faint[k]])
    return BackdoorResult(
        "scan",
        classes,
        flagged,
        score,
        time.perf_counter() - start,
        masks.cpu(),
        patterns.cpu(),
        triggers,
        asr,
        settings,
        count,
        region_masks=torch.stack(hard).cpu(),
        trigger_asr_images=asr_images,
        statistic=STATISTIC,
    )
