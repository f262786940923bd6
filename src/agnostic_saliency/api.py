"""Glue used by the CLI: the same public API a notebook would use, wired to files."""

from __future__ import annotations

import warnings

from .errors import InputError


def explain_to_folder(args) -> dict:
    """Load the model, compute maps, measure them, write the folder; returns the summary."""
    from .render.output import claimed_output_dir

    with claimed_output_dir(args.out):  # fail before any work if the folder cannot be written
        return _explain(args)


def _explain(args) -> dict:
    from .cli import load_from_args
    from .data.images import load_image_folder
    from .method.engine import InputAgnosticSaliency
    from .metrics.recognisability import measure_recognisability
    from .report import map_summary, write_map_folder

    loaded = load_from_args(args)
    if args.judge_weights and not args.judge:
        raise InputError("--judge-weights needs --judge")
    images = real = None
    skipped = 0
    if args.images:
        folder = load_image_folder(args.images, loaded.spec.shape)
        images, skipped = folder.images, folder.skipped
    elif "images" in args.distribution.split("+"):
        raise InputError("the images distribution needs --images DIR")
    if args.held_out:
        held_out = load_image_folder(args.held_out, loaded.spec.shape)
        real, skipped = held_out.images, skipped + held_out.skipped
    budget = args.budget if args.budget is not None else (0.25 if args.norm == "l2" else 0.1)
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names, memory_cap_mb=args.memory_cap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        result = explainer.attribute(
            targets=args.target, distribution=args.distribution, norm=args.norm, budget=budget,
            steps=args.steps, batch_size=args.batch_size, step_size=args.step_size, max_shift=args.max_shift,
            refine=not args.no_refine, refine_steps=args.refine_steps, refine_tolerance=args.refine_tolerance,
            real_images=real, images=images, seed=args.seed, eval_samples=args.eval_samples, display=args.display,
            precision=args.precision, progress=not args.quiet,
        )
    recognisability = None
    if args.judge:
        from .models import load_model
        from .models.spec import NormalizedModel

        judge = load_model(args.judge, weights=args.judge_weights, input_shape=loaded.spec.shape,
                           random_weights=args.random_weights)
        if len(judge.class_names) != explainer.num_classes:
            raise InputError(f"the judge has {len(judge.class_names)} classes, the model {explainer.num_classes}")
        recognisability = measure_recognisability(
            result.maps, result.displayed, result.concepts, judge=NormalizedModel(judge.model, judge.spec).eval())
    summary = map_summary(result, loaded.name, loaded.class_names, recognisability,
                          extra={"unreadable_images_skipped": skipped, "weights": args.weights})
    write_map_folder(result, summary, args.out)
    return summary
