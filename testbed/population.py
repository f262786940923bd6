"""The models of a population that ``scripts/make_population.py`` built, for the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from agnostic_saliency.models.architectures import ARCHITECTURES


def population_models(folder: Path, split: str = "all", only: str | None = None) -> Iterator[tuple[dict, nn.Module]]:
    """(manifest entry, model in eval mode) per model of ``folder/manifest.json``, in manifest
    order: those of ``split`` (``all``: every split) whose name holds one of the comma-separated
    parts of ``only``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"]:
        if split != "all" and entry["split"] != split:
            continue
        if only and not any(part in entry["name"] for part in only.split(",")):
            continue
        model = ARCHITECTURES[entry["arch"]](num_classes=10)
        model.load_state_dict(load_file(str(folder / entry["file"])))
        yield entry, model.eval()
