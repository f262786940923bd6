import gzip
import struct

import numpy as np
import pytest
import torch

from agnostic_saliency.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    find_fashion_mnist_dir,
    load_fashion_mnist,
)
from agnostic_saliency.errors import InputError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_dataset(root, images: np.ndarray, labels: np.ndarray, compress=False):
    files = {
        "train-images-idx3-ubyte": idx_bytes(images), "train-labels-idx1-ubyte": idx_bytes(labels),
        "t10k-images-idx3-ubyte": idx_bytes(images[:2]), "t10k-labels-idx1-ubyte": idx_bytes(labels[:2]),
    }
    for name, data in files.items():
        if compress:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.fixture
def tiny_idx():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_reads_a_tiny_idx_file(tmp_path, tiny_idx, compress):
    images, labels = tiny_idx
    write_dataset(tmp_path, images, labels, compress)
    assert find_fashion_mnist_dir(tmp_path) == tmp_path
    x, y = load_fashion_mnist("train", root=tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [3, 1, 4, 1, 5] and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 255)
    assert x.min() == 0.0 and x.max() == 1.0
    test_x, test_y = load_fashion_mnist("test", root=tmp_path)
    assert test_x.shape == (2, 1, 28, 28) and test_y.tolist() == [3, 1]


def test_truncated_file(tmp_path, tiny_idx):
    images, labels = tiny_idx
    write_dataset(tmp_path, images, labels)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        load_fashion_mnist("train", root=tmp_path)


def test_not_an_idx_file(tmp_path, tiny_idx):
    images, labels = tiny_idx
    write_dataset(tmp_path, images, labels)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x01\x02\x03\x04" + path.read_bytes()[4:])
    with pytest.raises(InputError, match="IDX"):
        load_fashion_mnist("train", root=tmp_path)


def test_missing_files_and_bad_split(tmp_path, tiny_idx):
    with pytest.raises(InputError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    images, labels = tiny_idx
    write_dataset(tmp_path, images, labels)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert find_fashion_mnist_dir(tmp_path) is None
    with pytest.raises(InputError, match="split"):
        load_fashion_mnist("validation", root=tmp_path)


def test_class_names():
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[1] == "trouser" and FASHION_MNIST_CLASSES[9] == "ankle boot"


@pytest.mark.skipif(find_fashion_mnist_dir() is None, reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
def test_real_dataset_test_split():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28)
    assert y.shape == (10_000,)
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10
    # Trousers are tall and narrow: their mean image is darker at the sides than at the centre.
    trousers = x[y == 1].mean(0)[0]
    assert trousers[:, 12:16].mean() > 2 * trousers[:, :4].mean()
