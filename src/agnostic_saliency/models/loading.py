"""Turning a model spec string into a ready model, its input spec and its class names.

Specs: a built-in name (``fmnist-cnn``), ``torchvision:<name>``, ``timm:<name>``, or the user's
own factory as ``path/to/file.py:factory`` or ``package.module:factory``. Weight files are
untrusted: safetensors, or ``torch.load(..., weights_only=True)`` of a plain state dict.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..data.fashion_mnist import FASHION_MNIST_CLASSES
from ..errors import InputError
from .architectures import ARCHITECTURES
from .running import check_output
from .spec import InputSpec

ZOO = Path(__file__).parent / "zoo"


# Built-in models: architecture, input spec and classes; weights in zoo/<name>.safetensors.
BUILTINS = {
    "fmnist-cnn": dict(arch="fmnist-cnn", shape=(1, 28, 28), classes=FASHION_MNIST_CLASSES),
    "fmnist-resnet": dict(arch="fmnist-resnet", shape=(1, 28, 28), classes=FASHION_MNIST_CLASSES),
    "fmnist-mlp": dict(arch="fmnist-mlp", shape=(1, 28, 28), classes=FASHION_MNIST_CLASSES),
}

# Modules imported from a user's model file are named with this prefix (distributed executors
# ship their code by value, since other machines cannot import them by name).
USER_MODULE_PREFIX = "_agnostic_saliency_user_"


@dataclass
class LoadedModel:
    """A model in eval mode with what the engine needs to know about its input and output."""

    model: nn.Module
    name: str
    spec: InputSpec
    class_names: list[str]
    weights: str | None = None  # the weights file it was loaded from, for the run's records


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a weights-only ``.pt``; never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(f"corrupt safetensors file {path}: {error}") from None
    if path.stat().st_size == 0:
        raise InputError(f"weights file {path} is empty")
    _refuse_zip_bomb(path)
    try:
        with warnings.catch_warnings():  # torch's remarks on the pickle protocol: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False: never for an untrusted file.
        raise InputError(f"{path} is not a plain state dict (refused to unpickle: it holds Python objects, "
                         "and unpickling them could run code)") from None
    except Exception as error:  # the unpickler raises many types (IndexError, KeyError, ...) on junk
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"corrupt weights file {path}: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(f"{path} is not a plain state dict of tensors")
    return state


def _refuse_zip_bomb(path: Path) -> None:
    """torch.save writes a zip archive of stored (uncompressed) entries: an archive with
    compressed entries, or whose entries claim more bytes than the file holds, is refused before
    anything is read out of it (a zip bomb would expand to gigabytes in memory)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise InputError(f"corrupt weights file {path}: {error}") from None
    claimed = sum(entry.file_size for entry in entries)
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries) or claimed > path.stat().st_size:
        raise InputError(f"{path} is not a torch.save archive: its entries are compressed or claim "
                         f"{claimed} bytes in a {path.stat().st_size}-byte file (refused: a zip bomb?)")


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly; a mismatch is a clear error naming the first offending keys."""
    own = model.state_dict()
    # Checkpoints saved from a wrapped model (DataParallel, torch.compile) carry a prefix.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            state = {k[len(prefix):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model has {tuple(own[k].shape)}")
        raise InputError(f"weights in {source} do not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state)


def _load_factory(target: str) -> nn.Module:
    location, _, factory_name = target.rpartition(":")
    if not location or not factory_name:
        raise InputError(f"unknown model spec {target!r}")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        module_name = f"{USER_MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file failed: report it in one line
            raise InputError(f"could not import {path}: {type(error).__name__}: {error}") from None
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise InputError(f"unknown model spec {target!r}: cannot import {location} ({error})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InputError(f"{location} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as error:
        raise InputError(f"{target} failed: {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{target} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_torchvision(name: str, random_weights: bool):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise InputError(f"unknown torchvision model {name!r}") from None
    if random_weights:
        return builder(weights=None), None
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise InputError(
            f"pretrained weights for torchvision:{name} are not cached at {cached}; download them "
            "where you have internet, or pass --random-weights"
        )
    model = builder(weights=None)
    apply_weights(model, torch.load(str(cached), map_location="cpu", weights_only=True), str(cached))
    return model, weights


def _load_timm(name: str, random_weights: bool):
    try:
        import timm
    except ImportError:
        raise InputError("timm is not installed: pip install 'agnostic-saliency[timm]'") from None
    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        raise InputError(f"unknown timm model {name!r}")
    if random_weights:
        return timm.create_model(name, pretrained=False)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # use the local cache; never download here
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as error:
        raise InputError(
            f"pretrained weights for timm:{name} are not cached locally ({type(error).__name__}); "
            "download them where you have internet, or pass --random-weights"
        ) from None


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class names file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError(f"class names file {path} is empty")
    return names


def load_model(
    spec: str,
    weights: str | os.PathLike | None = None,
    input_shape: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    value_range: tuple[float, float] | None = None,
    class_names: list[str] | None = None,
    random_weights: bool = False,
) -> LoadedModel:
    """Build the model named by ``spec``, load its weights, and check its output is (N, classes).

    Defaults for input shape, normalisation and class names come from the model where it
    declares them (built-ins, torchvision weight metadata, timm pretrained config); explicit
    arguments override them.
    """
    declared_shape, declared_mean, declared_std, declared_classes = None, None, None, None
    if spec in BUILTINS:
        entry = BUILTINS[spec]
        model = ARCHITECTURES[entry["arch"]](num_classes=len(entry["classes"]))
        if weights is None:
            apply_weights(model, load_weights(ZOO / f"{spec}.safetensors"), spec)
        declared_shape, declared_classes = entry["shape"], list(entry["classes"])
    elif spec in ARCHITECTURES:  # an architecture of the backdoor populations: weights are the user's
        if weights is None:
            raise InputError(f"{spec} ships no weights: give them with --weights")
        model = ARCHITECTURES[spec](num_classes=len(FASHION_MNIST_CLASSES))
        declared_shape, declared_classes = (1, 28, 28), list(FASHION_MNIST_CLASSES)
    elif spec.startswith("torchvision:"):
        model, meta = _load_torchvision(spec.split(":", 1)[1], random_weights or weights is not None)
        declared_shape, declared_mean, declared_std = (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        if meta is not None:
            declared_classes = list(meta.meta.get("categories") or []) or None
    elif spec.startswith("timm:"):
        model = _load_timm(spec.split(":", 1)[1], random_weights or weights is not None)
        config = getattr(model, "pretrained_cfg", None) or {}
        if config.get("input_size"):
            declared_shape = tuple(config["input_size"])
        declared_mean, declared_std = config.get("mean"), config.get("std")
    elif ":" in spec:
        model = _load_factory(spec)
        declared_shape = getattr(model, "input_shape", None)
        declared_mean, declared_std = getattr(model, "mean", None), getattr(model, "std", None)
        if isinstance(declared_mean, torch.Tensor) or isinstance(declared_std, torch.Tensor):
            declared_mean = declared_std = None  # a buffer, not a declaration
        declared_classes = getattr(model, "class_names", None)
    else:
        raise InputError(
            f"unknown model spec {spec!r}: use one of {', '.join(BUILTINS)}, torchvision:NAME, "
            "timm:NAME, path/to/file.py:factory or package.module:factory"
        )
    if weights is not None:
        apply_weights(model, load_weights(weights), str(weights))
    shape = input_shape or declared_shape
    if shape is None:
        raise InputError(f"{spec} does not declare its input shape: pass --input-shape C,H,W")
    input_spec = InputSpec(
        tuple(int(s) for s in shape),
        value_range or (0.0, 1.0),
        tuple(mean) if mean is not None else (tuple(declared_mean) if declared_mean is not None else None),
        tuple(std) if std is not None else (tuple(declared_std) if declared_std is not None else None),
    )
    model.eval()
    num_classes = check_output(model, input_spec)
    names = class_names or declared_classes
    if names is None:
        names = [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise InputError(f"{len(names)} class names given but the model has {num_classes} outputs")
    return LoadedModel(model, spec, input_spec, list(names), None if weights is None else str(weights))
