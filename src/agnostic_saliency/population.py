"""Scans of whole model populations (``agnostic-saliency scan-many``).

A population is read from a manifest: a CSV file with the columns ``model,weights,input_shape``
and optionally ``name``, ``trojaned`` (0/1) and ``target``; a JSON list of the same records; the
``manifest.json`` that ``scripts/make_population.py`` writes; or a folder of weights files that
one factory (``model=``) builds. Each model's scan folder is written to ``OUT/<name>/`` as it
finishes, and ``population.csv`` and ``population.json`` are rewritten after every model, so a
run that is stopped and started again skips the models already done and ends with the same
table. With ground truth the table comes with ROC-AUC, detection and false-flag rates.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .executors import LocalExecutor, RayExecutor
from .metrics.detection import detection_summary
from .render.output import write_json

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
COLUMNS = ("model", "verdict", "flagged", "flagged_names", "score", "seconds", "trojaned", "target", "error")


@dataclass(frozen=True)
class PopulationModel:
    """One model of a population: how to load it, and its ground truth where known."""

    name: str
    model: str
    weights: str | None
    input_shape: str | None
    trojaned: bool | None = None
    target: int | None = None


def _truth(value) -> bool | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise InputError(f"trojaned must be 0 or 1, got {value!r}")


def _target(value) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"target must be a class index, got {value!r}") from None


def _resolve(path: str | None, base: Path) -> str | None:
    """An absolute path (Ray's workers run in folders of their own): relative to the manifest's
    folder where the file is there, else to the current folder."""
    if not path:
        return None
    beside = base / path
    return str((beside if beside.exists() or not Path(path).exists() else Path(path)).resolve())


def _resolve_spec(spec: str, base: Path) -> str:
    """A ``file.py:factory`` spec with its file made absolute; other specs as given."""
    location, _, factory = spec.rpartition(":")
    if location.endswith(".py") and factory:
        return f"{_resolve(location, base)}:{factory}"
    return spec


def _records_to_models(records: list[dict], base: Path, default_shape: str | None = None) -> list[PopulationModel]:
    models = []
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not record.get("model"):
            raise InputError(f"manifest record {number + 1} has no model")
        weights = _resolve(record.get("weights"), base)
        name = str(record.get("name") or (Path(weights).name.split(".")[0] if weights else f"model-{number}"))
        shape = record.get("input_shape") or default_shape
        if isinstance(shape, (list, tuple)):
            shape = ",".join(map(str, shape))
        models.append(
            PopulationModel(
                name,
                _resolve_spec(str(record["model"]), base),
                weights,
                shape,
                _truth(record.get("trojaned")),
                _target(record.get("target")),
            )
        )
    return models


def read_population(
    source: str | os.PathLike, model: str | None = None, input_shape: str | None = None
) -> list[PopulationModel]:
    """The models of a manifest file or folder (see the module's docstring). Relative weights
    paths are resolved against the manifest's folder; names must be unique."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if path.is_dir():
        if not model:
            raise InputError("a folder of weights needs the factory that builds them (--model)")
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and ".trigger." not in p.name)
        models = [
            PopulationModel(p.name.split(".")[0], _resolve_spec(model, Path.cwd()), str(p.resolve()), input_shape)
            for p in files
        ]
    elif path.suffix.lower() == ".csv":
        text = path.read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        missing = {"model", "weights", "input_shape"} - set(rows[0] if rows else {})
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        models = _records_to_models(rows, path.parent)
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{path} is not valid JSON: {error.msg} (line {error.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("models"), list):  # scripts/make_population.py
            records = [
                {
                    "name": m.get("name"),
                    "model": m.get("arch"),
                    "weights": m.get("file"),
                    "trojaned": m.get("trojaned"),
                    "target": m.get("target"),
                }
                for m in data["models"]
            ]
            models = _records_to_models(records, path.parent, data.get("input_shape"))
        elif isinstance(data, list):
            models = _records_to_models(data, path.parent)
        else:
            raise InputError(f"{path} must hold a list of model records")
    else:
        raise InputError(f"{path}: a manifest is a .csv or .json file, or a folder of weights")
    if not models:
        raise InputError(f"{path} lists no models")
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"model names must be unique; repeated: {', '.join(duplicates)}")
    return models


def _row(entry: PopulationModel, report: dict | None, error: str | None = None) -> dict:
    flagged = [] if report is None else [int(k) for k in report["flagged"]]
    names = {} if report is None else {row["index"]: row.get("name", str(row["index"])) for row in report["classes"]}
    return {
        "model": entry.name,
        "verdict": "error" if error else ("trojaned" if flagged else "clean"),
        "flagged": flagged,
        "flagged_names": [names.get(k, str(k)) for k in flagged],
        "score": None if report is None else report["score"],
        "seconds": None if report is None else report["seconds"],
        "trojaned": entry.trojaned,
        "target": entry.target,
        "error": error,
    }


def _scan_model(entry: PopulationModel, folder: str, model_options: dict, scan_settings: dict) -> dict:
    """One task: load one model, scan it into its folder, and return its table row. A model that
    cannot be loaded or scanned gives a row with its one-line error, not a failed run."""
    from .api import load, scan_to_folder
    from .executors import move_to_assigned_gpu
    from .models import parse_shape

    try:
        loaded = load(
            entry.model,
            weights=entry.weights,
            input_shape=parse_shape(entry.input_shape) if entry.input_shape else None,
            **model_options,
        )
        move_to_assigned_gpu(loaded.model)
        # resume: a folder a killed run left continues from its saved draws (or starts afresh)
        report = scan_to_folder(loaded, folder, progress=False, resume=True, **scan_settings)
    except InputError as error:
        return _row(entry, None, str(error))
    return _row(entry, report)


def _write_table(rows: list[dict], out: Path, settings: dict) -> dict:
    """population.csv and population.json, each replaced whole (never half-written)."""
    table = {
        "models": rows,
        "summary": detection_summary([r for r in rows if r["verdict"] != "error"]),
        "errors": sum(r["verdict"] == "error" for r in rows),
        "settings": settings,
    }
    write_json(table, out / "population.json.partial")
    os.replace(out / "population.json.partial", out / "population.json")
    with open(out / "population.csv.partial", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: (" ".join(map(str, row[k])) if isinstance(row[k], list) else ("" if row[k] is None else row[k]))
                    for k in COLUMNS
                }
            )
    os.replace(out / "population.csv.partial", out / "population.csv")
    return table


def scan_population(
    models: list[PopulationModel],
    out: str | os.PathLike,
    executor: LocalExecutor | RayExecutor | None = None,
    model_options: dict | None = None,
    progress: bool = True,
    **scan_settings,
) -> dict:
    """Scan every model not yet done under ``out`` (one after the other, or as tasks of a Ray
    ``executor``) and return the population table: ``models`` (one row each, in manifest order),
    ``summary`` (detection figures where ground truth is known), ``errors`` and ``settings``.
    ``model_options`` go to :func:`agnostic_saliency.api.load` for every model (mean, std,
    value_range, class_names, device); ``scan_settings`` to the scan."""
    from tqdm.auto import tqdm

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"output folder {out} is not writable")
    executor = executor or LocalExecutor()
    model_options = dict(model_options or {})
    rows: dict[str, dict] = {}
    for entry in models:  # finished before: read back, so a restarted run ends with the same table
        done = out / entry.name / "scan.json"
        if done.is_file():
            rows[entry.name] = _row(entry, json.loads(done.read_text()))
    pending = [entry for entry in models if entry.name not in rows]
    settings = {
        "manifest_models": len(models),
        **executor.describe(),
        "scan": {k: v for k, v in scan_settings.items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    start = time.perf_counter()
    items = [(entry, str(out / entry.name), model_options, scan_settings) for entry in pending]
    gpus = executor.gpus_per_task() if isinstance(executor, RayExecutor) else 0
    order = [entry.name for entry in models]
    with tqdm(total=len(models), initial=len(rows), disable=not progress, desc="models", unit="model") as bar:
        for index, row in executor.run(_scan_model, items, gpus=gpus):
            rows[pending[index].name] = row
            _write_table([rows[name] for name in order if name in rows], out, settings)
            bar.update(1)
    settings["seconds_this_run"] = time.perf_counter() - start
    settings["skipped_as_done"] = len(models) - len(pending)
    return _write_table([rows[name] for name in order], out, settings)
