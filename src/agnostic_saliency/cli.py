"""Command-line interface: a thin layer over the Python API.

    agnostic-saliency map  --model fmnist-cnn --out runs/fmnist
    agnostic-saliency scan --model model.py:build --weights model.safetensors --input-shape 1,28,28 --out runs/scan

Every problem with the user's input is reported as one line on stderr with exit status 2.
Exit statuses: 0 done; 1 out of memory; 2 bad input (including an output folder that holds a
result, without --overwrite or --resume, and a checkpoint from another run); 130 interrupted
(Ctrl-C or SIGTERM: the checkpoint is saved first, and --resume continues from it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path

from .backdoor.config import FLAT, ScanConfig
from .errors import InputError
from .method.distributions import DEFAULT_DISTRIBUTION
from .method.settings import PRESETS, Nudging


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), like every other input error."""

    def error(self, message: str):
        self.exit(2, f"agnostic-saliency: error: {message}\n")


def _at_least(lowest: int, kind=int):
    """An argparse type: a number of ``kind`` no smaller than ``lowest``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value >= lowest:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {text}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _given(**settings) -> dict:
    """The settings the user gave (not None), so that the rest keep the preset's values."""
    return {name: value for name, value in settings.items() if value is not None}


def _run_options(parser: argparse.ArgumentParser, every: int | None) -> None:
    group = parser.add_argument_group("output folder and checkpoints")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an existing output folder (and discard a checkpoint in it)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoint in its output folder (same "
        "settings, model and versions; starts afresh where there is none)",
    )
    if every is not None:
        group.add_argument(
            "--checkpoint-every",
            type=_at_least(0),
            default=every,
            help=f"save the run's state every N steps (default {every}; 0: only when interrupted by Ctrl-C or SIGTERM)",
        )


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=True,
        help="fmnist-cnn, fmnist-resnet, torchvision:NAME, timm:NAME, "
        "path/to/file.py:factory or package.module:factory",
    )
    group.add_argument("--weights", help="a .safetensors or state-dict .pt file (loaded with weights_only=True)")
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="torchvision/timm: use random weights instead of cached pretrained ones",
    )
    group.add_argument("--input-shape", help="C,H,W (default: what the model declares)")
    group.add_argument("--mean", help="per-channel normalisation mean, e.g. 0.485,0.456,0.406")
    group.add_argument("--std", help="per-channel normalisation std, e.g. 0.229,0.224,0.225")
    group.add_argument("--value-range", default=None, help="valid pixel range LOW,HIGH (default 0,1)")
    group.add_argument("--classes", help="a text file with one class name per line")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    group.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--out", required=True, help="output folder (created if needed)")


def _executor_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("where it runs")
    group.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help=f"local (default): in this process; ray: {what} as Ray tasks (pip install 'agnostic-saliency[ray]')",
    )
    group.add_argument(
        "--address", help="a running Ray cluster (ray start --head prints it); default: start a local instance"
    )


SCAN_DEFAULTS = ScanConfig()  # the CLI's scan defaults are the config's


def _scan_options(parser: argparse.ArgumentParser) -> None:
    defaults = SCAN_DEFAULTS
    options = parser.add_argument_group("scan")
    options.add_argument("--images", help="folder of unlabeled images to sample from (default: data-free)")
    options.add_argument(
        "--distribution", default=defaults.pool.distribution, help="sample distribution (default shapes)"
    )
    options.add_argument(
        "--steps", type=_at_least(1), default=defaults.fit.steps, help="signature fitting iterations (default 100)"
    )
    options.add_argument(
        "--exemplar-steps",
        type=_at_least(0),
        default=defaults.pool.exemplar_steps,
        help="steps that nudge the pool into confident class exemplars (default 30; 0: raw samples)",
    )
    options.add_argument(
        "--threshold", type=float, default=defaults.threshold, help="MAD anomaly index that flags a class (default 2)"
    )
    options.add_argument(
        "--max-trigger-area",
        type=float,
        default=defaults.box.max_trigger_area,
        help="largest share of the image a flagged patch trigger's box may cover (default 1/12; "
        "1 lets any anomalous class through, with more false flags)",
    )
    options.add_argument(
        "--max-blend-strength",
        type=float,
        default=defaults.blend.max_blend_strength,
        help="weakest whole-image blend of a class's pattern that still counts as a faint, "
        "blended trigger (default 0.14; 0 turns blend flagging off)",
    )
    options.add_argument(
        "--draws",
        type=_at_least(1),
        default=defaults.run.draws,
        help="independent draws (seeds N, N+1, ...) while none flags a class (default 2; 1 halves "
        "the time on clean models and misses more targets)",
    )
    options.add_argument(
        "--small-box-look",
        action="store_true",
        help="also try a small box with its own pattern anywhere on the image: it finds local triggers that "
        "batch-norm, global-pooling nets read only in part, but it flags the easy class of some clean nets too, "
        "and a clean model takes about twice as long (default off)",
    )
    options.add_argument(
        "--shortlist",
        type=_at_least(0),
        default=defaults.fit.shortlist,
        metavar="N",
        help="with more classes than N, a cheap pass ranks every class and only the N most anomalous get the "
        "full fit (default max(10, ceil(sqrt(classes))); 0: every class gets the full fit)",
    )
    options.add_argument(
        "--memory-cap",
        type=_positive_float,
        default=defaults.run.memory_cap_mb,
        help="MiB for one forward+backward chunk",
    )
    options.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=defaults.run.precision,
        help="fp32 (default); bf16 runs the model under mixed precision (about 2x faster on CPUs "
        "with AMX and on GPUs); fp16 on CUDA only",
    )


def _scan_settings(args) -> dict:
    """The scan's keywords from the command line (shared by scan and scan-many): the flat names of
    :class:`~agnostic_saliency.backdoor.config.ScanConfig`, checked by building one, plus the
    images and the seed."""
    settings = dict(
        images=args.images,
        distribution=args.distribution,
        steps=args.steps,
        exemplar_steps=args.exemplar_steps,
        threshold=args.threshold,
        max_trigger_area=args.max_trigger_area,
        max_blend_strength=args.max_blend_strength,
        seed=args.seed,
        draws=args.draws,
        small_box_look=args.small_box_look,
        shortlist=args.shortlist,
        memory_cap_mb=args.memory_cap,
        precision=args.precision,
    )
    ScanConfig.from_settings(**{name: value for name, value in settings.items() if name in FLAT})
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agnostic-saliency",
        description="Input-agnostic saliency maps of image classifiers, and data-free backdoor scans.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    map_parser = commands.add_parser("map", help="compute input-agnostic maps for classes")
    _model_options(map_parser)
    method = map_parser.add_argument_group("method")
    method.add_argument(
        "--target",
        default="all",
        help="all, or comma-separated INDEX or NAME; join classes with + for one concept (default all)",
    )
    method.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="faithful",
        help="faithful (default: the maps the model reads most) or readable (smooth shapes that observers "
        "apart from the model read more often, at a lower fooling rate; docs/readable_maps.md)",
    )
    method.add_argument(
        "--distribution",
        default=None,
        help=f"{DEFAULT_DISTRIBUTION} (default; readable preset: {PRESETS['readable']['distribution']}), uniform, "
        "uniform-flat, dark, dark2, dark3, gaussian, shapes, images, or any + mixture such as dark2+images",
    )
    method.add_argument("--images", help="folder of unlabeled images for the images distribution")
    method.add_argument("--held-out", help="folder of real images on which fidelity is also measured")
    method.add_argument("--norm", choices=("l2", "linf"), default="l2", help="budget norm (default l2)")
    method.add_argument(
        "--budget",
        type=_positive_float,
        default=None,
        help="fraction of the pixel range: RMS for l2 (default 0.25), peak for linf (default 0.1)",
    )
    method.add_argument("--steps", type=_at_least(1), default=600, help="nudging iterations (default 600)")
    method.add_argument("--batch-size", type=_at_least(1), default=64, help="samples per iteration (default 64)")
    method.add_argument(
        "--step-size", type=_positive_float, default=0.01, help="per-pixel step, fraction of range (default 0.01)"
    )
    method.add_argument("--max-shift", type=_at_least(0), default=3, help="random map shift in pixels (default 3)")
    method.add_argument(
        "--early-stop",
        action=argparse.BooleanOptionalAction,
        default=Nudging.early_stop,
        help="stop nudging a map once its fooling rate on the running batches, averaged over the last "
        f"--stop-window steps, reached --stop-target (default {'on' if Nudging.early_stop else 'off'})",
    )
    method.add_argument(
        "--stop-target",
        type=_positive_float,
        default=Nudging.stop_target,
        help=f"mean fooling rate on the running batches that ends a map's nudge (default {Nudging.stop_target})",
    )
    method.add_argument(
        "--stop-window",
        type=_at_least(1),
        default=Nudging.stop_window,
        help=f"the last steps over which that rate is averaged (default {Nudging.stop_window})",
    )
    method.add_argument(
        "--frequency-decay",
        type=_at_least(0.0, float),
        default=None,
        help="1/f^d preconditioning of the nudge's steps: larger d, smoother maps (default 0; readable preset: "
        f"{PRESETS['readable']['frequency_decay']})",
    )
    method.add_argument("--no-refine", action="store_true", help="skip the refinement stage")
    method.add_argument("--refine-steps", type=_at_least(0), default=100, help="refinement iterations (default 100)")
    method.add_argument(
        "--refine-frequency-decay",
        type=_at_least(0.0, float),
        default=None,
        help="the same for the refinement's steps (default 0: the refinement may add the detail that wins "
        "back fidelity)",
    )
    method.add_argument(
        "--refine-tolerance",
        type=float,
        default=0.02,
        help="largest fooling-rate drop a refinement may cost (default 0.02)",
    )
    method.add_argument(
        "--display",
        choices=("positive", "minmax", "signed"),
        default="positive",
        help="picture of a map: positive (default; what it draws on the darkest input, which an "
        "adversarially trained judge reads), minmax or signed",
    )
    method.add_argument(
        "--eval-samples",
        type=_at_least(1),
        default=512,
        help="fresh samples on which fidelity is measured (default 512)",
    )
    method.add_argument(
        "--memory-cap",
        type=_positive_float,
        default=2048,
        help="MiB the run may hold: maps, their moments, samples and activations; beyond it the classes "
        "stream through in chunks (default 2048)",
    )
    method.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32 (default); bf16 or fp16 (CUDA only) run the nudge's forward passes under mixed precision",
    )
    method.add_argument(
        "--compile",
        action="store_true",
        help="run the nudge's forward and backward passes through torch.compile: the first step pays "
        "the compilation; the maps agree with a plain run's up to float rounding",
    )
    method.add_argument("--judge", help="an independent model spec (same task) that reads the displayed maps")
    method.add_argument("--judge-weights", help="weights for --judge")
    _run_options(map_parser, every=50)
    _executor_options(map_parser, "chunks of --classes-per-task classes run")
    map_parser.add_argument(
        "--classes-per-task",
        type=_at_least(1),
        default=None,
        help="compute the maps in chunks of this many classes, each at a seed derived from "
        "--seed and its classes (default: all in one loop; 1 with --executor ray); the "
        "same value gives the same maps with either executor",
    )

    scan_parser = commands.add_parser("scan", help="scan every class for a backdoor (no clean data needed)")
    _model_options(scan_parser)
    _scan_options(scan_parser)
    _run_options(scan_parser, every=None)  # a scan saves each finished draw
    _executor_options(scan_parser, "the scan runs")

    many = commands.add_parser("scan-many", help="scan every model of a population (a manifest or a folder)")
    many.add_argument(
        "manifest",
        help="a CSV (model,weights,input_shape[,name,trojaned,target]), a JSON list of "
        "the same records, a population manifest.json, or a folder of weights files (with --model)",
    )
    many.add_argument("--out", required=True, help="output folder: one scan folder per model, population.csv/json")
    many.add_argument("--model", help="the factory that builds every weights file of a folder")
    many.add_argument("--input-shape", help="C,H,W for a folder of weights (a manifest gives its own)")
    for flag, text in (
        ("--mean", "per-channel normalisation mean"),
        ("--std", "per-channel normalisation std"),
        ("--value-range", "valid pixel range LOW,HIGH (default 0,1)"),
        ("--classes", "a text file with one class name per line"),
        ("--device", "cpu, cuda, ... (default: cuda if available)"),
    ):
        many.add_argument(flag, help=text)
    many.add_argument("--seed", type=_at_least(0), default=0, help="seed of every model's scan (default 0)")
    many.add_argument("--quiet", action="store_true", help="no progress bar")
    _scan_options(many)
    _executor_options(many, "each model's scan runs")
    explain_parser = commands.add_parser(
        "explain", help="input-specific maps (Captum) beside the input-agnostic map of each image's predicted class"
    )
    _model_options(explain_parser)
    options = explain_parser.add_argument_group("explain")
    options.add_argument("--image", action="append", required=True, help="an image file (repeat for several)")
    options.add_argument(
        "--maps", help="folder of an earlier map run to read the input-agnostic maps from (default: compute them)"
    )
    options.add_argument(
        "--methods",
        help="comma-separated Captum methods (default all: gradient,integrated-gradients,smoothgrad,grad-cam)",
    )
    options.add_argument("--layer", help="Grad-CAM layer by module name (default: the last Conv2d)")
    options.add_argument("--steps", type=int, default=600, help="nudging iterations of computed maps (default 600)")
    options.add_argument(
        "--batch-size", type=int, default=64, help="samples per iteration of computed maps (default 64)"
    )
    options.add_argument(
        "--refine-steps", type=int, default=100, help="refinement iterations of computed maps (default 100)"
    )
    options.add_argument(
        "--overwrite", action="store_true", help="replace the files of an existing, non-empty output folder"
    )
    return parser


def load_from_args(args):
    """The model named on the command line, on the requested device."""
    from .api import load
    from .models import parse_floats, parse_shape, read_class_names

    return load(
        args.model,
        weights=args.weights,
        input_shape=parse_shape(args.input_shape) if args.input_shape else None,
        mean=parse_floats(args.mean, "--mean"),
        std=parse_floats(args.std, "--std"),
        value_range=parse_floats(args.value_range, "--value-range"),
        class_names=read_class_names(args.classes) if args.classes else None,
        random_weights=args.random_weights,
        device=args.device,
    )


def _durable(args) -> dict:
    """The output-folder and checkpoint options, and the provenance's command line."""
    every = {"checkpoint_every": args.checkpoint_every} if hasattr(args, "checkpoint_every") else {}
    settings = {key: value for key, value in vars(args).items() if key != "argv"}
    return dict(overwrite=args.overwrite, resume=args.resume, command=args.argv, call=settings, **every)


def run_map(args) -> int:
    from .api import map_to_folder
    from .durable.folders import claimed_run_folder

    # an unwritable folder, or one holding a result, fails before the model is loaded
    with claimed_run_folder(args.out, args.overwrite, args.resume):
        loaded = load_from_args(args)
        summary = map_to_folder(
            loaded,
            args.out,
            targets=args.target,
            distribution=args.distribution,
            preset=args.preset,
            images=args.images,
            held_out=args.held_out,
            norm=args.norm,
            budget=args.budget,
            judge=args.judge,
            judge_weights=args.judge_weights,
            judge_random_weights=args.random_weights,
            memory_cap_mb=args.memory_cap,
            compile=args.compile,
            progress=not args.quiet,
            steps=args.steps,
            batch_size=args.batch_size,
            step_size=args.step_size,
            max_shift=args.max_shift,
            early_stop=args.early_stop,
            stop_target=args.stop_target,
            stop_window=args.stop_window,
            refine=not args.no_refine,
            refine_steps=args.refine_steps,
            refine_tolerance=args.refine_tolerance,
            seed=args.seed,
            eval_samples=args.eval_samples,
            **_given(frequency_decay=args.frequency_decay, refine_frequency_decay=args.refine_frequency_decay),
            precision=args.precision,
            display=args.display,
            executor=args.executor,
            address=args.address,
            classes_per_task=args.classes_per_task,
            **_durable(args),
        )
    if not args.quiet:
        classes = summary["classes"]
        mean_fooling = sum(c["fooling_rate"] for c in classes) / len(classes)
        print(
            f"wrote {len(classes)} maps to {args.out} (mean fooling rate on fresh samples "
            f"{mean_fooling:.3f}, {summary['seconds']:.1f} s)",
            file=sys.stderr,
        )
    return 0


def run_explain(args) -> int:
    from .api import explain_to_folder
    from .durable.folders import claimed_run_folder

    with claimed_run_folder(args.out, args.overwrite):  # an unwritable folder fails before the model is loaded
        loaded = load_from_args(args)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        summary = explain_to_folder(
            loaded,
            args.out,
            images=args.image,
            maps=args.maps,
            methods=methods,
            layer=args.layer,
            seed=args.seed,
            progress=not args.quiet,
            overwrite=args.overwrite,
            steps=args.steps,
            batch_size=args.batch_size,
            refine_steps=args.refine_steps,
        )
    if not args.quiet:
        print(
            f"explained {len(summary['images'])} images with {', '.join(summary['methods'])} and the "
            f"input-agnostic maps -> {args.out} ({summary['seconds']:.1f} s)",
            file=sys.stderr,
        )
    return 0


def run_scan(args) -> int:
    from .api import scan_to_folder
    from .durable.folders import claimed_run_folder

    with claimed_run_folder(args.out, args.overwrite, args.resume):
        loaded = load_from_args(args)
        report = scan_to_folder(
            loaded,
            args.out,
            progress=not args.quiet,
            executor=args.executor,
            address=args.address,
            **_scan_settings(args),
            **_durable(args),
        )
    if not args.quiet:
        flagged = ", ".join(f"{c['index']} ({c['name']})" for c in report["classes"] if c["index"] in report["flagged"])
        print(
            f"{'TROJANED' if report['trojaned'] else 'no backdoor found'}: flagged {flagged or 'none'} "
            f"(score {report['score']:.2f}, {report['seconds']:.1f} s) -> {args.out}",
            file=sys.stderr,
        )
    return 0


def run_scan_many(args) -> int:
    from .executors import make_executor
    from .models import parse_floats, read_class_names
    from .population import read_population, scan_population

    models = read_population(args.manifest, model=args.model, input_shape=args.input_shape)
    model_options = dict(
        mean=parse_floats(args.mean, "--mean"),
        std=parse_floats(args.std, "--std"),
        value_range=parse_floats(args.value_range, "--value-range"),
        class_names=read_class_names(args.classes) if args.classes else None,
        device=args.device,
    )
    settings = _scan_settings(args)
    if settings["images"]:
        settings["images"] = str(Path(settings["images"]).resolve())
    table = scan_population(
        models, args.out, make_executor(args.executor, args.address), model_options, progress=not args.quiet, **settings
    )
    if not args.quiet:
        summary = table["summary"]
        flagged = sum(r["verdict"] == "trojaned" for r in table["models"])
        line = f"scanned {len(table['models'])} models: {flagged} flagged, {table['errors']} errors"
        if summary["models"]:
            line += (
                f"; ROC-AUC {summary['roc_auc']:.3f}, detection {summary['detection_rate']}, "
                f"false flags {summary['false_flag_rate']}"
            )
        print(f"{line} -> {args.out}/population.csv", file=sys.stderr)
    return 1 if table["errors"] else 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the Python source line."""
    print(f"agnostic-saliency: warning: {message}", file=file or sys.stderr)


def _terminate(number, frame):
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: clean up, keep the checkpoint


def _interrupted(args) -> str:
    from .durable.folders import CHECKPOINT_DIR

    if args.command == "scan-many":
        return "interrupted; rerun the same command to continue: finished models are skipped"
    saves = Path(args.out) / CHECKPOINT_DIR
    if saves.is_dir() and any(saves.iterdir()):
        return f"interrupted; the checkpoint in {saves} is kept: rerun with --resume to continue"
    return "interrupted; nothing was written"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["agnostic-saliency", *(sys.argv[1:] if argv is None else argv)]
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning  # restored by catch_warnings
            commands = {"map": run_map, "scan": run_scan, "scan-many": run_scan_many, "explain": run_explain}
            return commands[args.command](args)
    except InputError as error:
        print(f"agnostic-saliency: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"agnostic-saliency: {_interrupted(args)}", file=sys.stderr)
        return 130
    except MemoryError:
        print("agnostic-saliency: error: out of memory; lower --batch-size or --memory-cap", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
