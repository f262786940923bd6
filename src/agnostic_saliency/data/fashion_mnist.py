"""Fashion-MNIST from its IDX files (Debian package ``dataset-fashion-mnist``).

Falls back to torchvision's downloader only where the user allows a download; nothing here
downloads by default.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

DEFAULT_DIRS = (
    os.environ.get("FASHION_MNIST_DIR", ""),
    "/usr/share/datasets/fashion-mnist",
    str(Path.home() / ".cache" / "agnostic-saliency" / "fashion-mnist"),
)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise InputError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {array.size}")
    return array.reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path | None:
    """The first directory holding all four IDX files, or None."""
    candidates = [root] if root else [d for d in DEFAULT_DIRS if d]
    for candidate in candidates:
        directory = Path(candidate)
        stems = [s for pair in _FILES.values() for s in pair]
        if all(_find(directory, s) for s in stems):
            return directory
    return None


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float (N, 1, 28, 28) in [0, 1] and labels as int64 (N,).

    Parameters
    ----------
    split : "train" (60,000 images) or "test" (10,000 images).
    root : a directory with the IDX files; by default ``$FASHION_MNIST_DIR``, then
        ``/usr/share/datasets/fashion-mnist`` (Debian), then ``~/.cache/agnostic-saliency``.
    download : let torchvision download the files into the cache when none are found.
    """
    if split not in _FILES:
        raise InputError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    directory = find_fashion_mnist_dir(root)
    if directory is None and download:
        from torchvision.datasets import FashionMNIST

        cache = Path(DEFAULT_DIRS[-1])
        dataset = FashionMNIST(str(cache), train=split == "train", download=True)
        images = dataset.data.numpy()
        labels = dataset.targets.numpy()
    elif directory is None:
        raise InputError(
            "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set FASHION_MNIST_DIR"
        )
    else:
        image_stem, label_stem = _FILES[split]
        images = _read_idx(_find(directory, image_stem))
        labels = _read_idx(_find(directory, label_stem))
    x = torch.from_numpy(np.array(images, copy=True)).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(np.array(labels, copy=True)).long()
    return x, y
