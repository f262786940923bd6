"""Provenance: what produced a result folder, recorded in ``summary.json`` and ``scan.json``
(under ``"provenance"``) and shown in both HTML reports.

The record names the tool's, torch's, torchvision's and Python's versions, the device, the
SHA-256 of the weights file (the shipped zoo file for a built-in model, the cached file for a
pretrained torchvision model) and of the factory file where the model came from one, the full
command line or the API call's settings, and the start and end times (UTC, ISO 8601).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
from pathlib import Path

import torch

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def model_files(spec: str, weights: str | os.PathLike | None) -> tuple[Path | None, Path | None]:
    """The weights file and the factory file that a model spec and ``--weights`` read."""
    from ..models.loading import BUILTINS, ZOO

    factory = None
    location = spec.rpartition(":")[0]
    if location.endswith(".py"):
        factory = Path(location)
    elif location and location not in ("torchvision", "timm"):  # package.module:factory
        import importlib.util

        try:
            found = importlib.util.find_spec(location)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin and found.origin.endswith(".py"):
            factory = Path(found.origin)
    if weights is not None:
        return Path(weights), factory
    if spec in BUILTINS:
        return ZOO / f"{spec}.safetensors", factory
    if spec.startswith("torchvision:"):
        try:
            import torchvision

            meta = torchvision.models.get_model_weights(spec.split(":", 1)[1]).DEFAULT
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(meta.url)
            return (cached if cached.is_file() else None), factory
        except (ValueError, AttributeError):
            return None, factory
    return None, factory


def _json_ready(settings: dict | None) -> dict | None:
    """The settings as JSON can hold them: paths as strings, anything else unknown by its repr."""
    import json

    def fallback(value):
        return os.fspath(value) if isinstance(value, os.PathLike) else repr(value)

    return None if settings is None else json.loads(json.dumps(settings, default=fallback))


def _installed(name: str) -> str | None:
    """A package's installed version, without importing it (torchvision's import takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _described(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}


class Provenance:
    """Collects the record over a run: construct it at the start, :meth:`finish` at the end.

    Parameters
    ----------
    model : the model spec string (``fmnist-cnn``, ``path/to/file.py:factory``, ...).
    weights : the ``--weights`` file, if any.
    command : the command line as a list (``["agnostic-saliency", "map", ...]``), or None for
        an API call.
    settings : the call's settings (every option's value).
    device : where the run computes.
    random_weights : a torchvision/timm model with random weights reads no weights file.
    """

    def __init__(self, model: str, weights=None, command: list[str] | None = None, settings: dict | None = None,
                 device: str | None = None, random_weights: bool = False):
        self.started = utc_now()
        weights_file, factory_file = model_files(model, weights)
        if random_weights and weights is None:
            weights_file = None
        from .._version import __version__

        self.record = {
            "tool": "agnostic-saliency", "version": __version__, "torch": torch.__version__,
            "torchvision": _installed("torchvision"), "python": platform.python_version(),
            "platform": platform.platform(), "device": device, "model": model,
            "weights": _described(weights_file), "factory": _described(factory_file),
            "command": command, "settings": _json_ready(settings), "started": self.started, "finished": None,
            "resumed": None,
        }

    def finish(self, resumed: dict | None = None) -> dict:
        """The complete record; ``resumed``: where a resumed run took over (stage, step, draw)."""
        self.record["finished"] = utc_now()
        self.record["resumed"] = resumed
        return dict(self.record)

