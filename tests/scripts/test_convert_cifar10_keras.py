"""The Keras -> PyTorch conversion, checked against a NumPy forward pass in Keras's own layout on
a small synthetic ``.h5`` (its flatten has spatial size 2x2, so a wrong order would show)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_module = load(ROOT / "scripts" / "convert_cifar10_keras.py")
factory_module = load(ROOT / "examples" / "cifar10_keras.py")

CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "tiny",
        "layers": [
            {"class_name": "InputLayer", "config": {"name": "input", "batch_input_shape": [None, 6, 6, 3]}},
            {
                "class_name": "Conv2D",
                "config": {
                    "name": "conv2d",
                    "filters": 4,
                    "kernel_size": [3, 3],
                    "strides": [1, 1],
                    "padding": "valid",
                    "activation": "relu",
                    "data_format": "channels_last",
                },
            },
            {"class_name": "BatchNormalization", "config": {"name": "batch_normalization", "epsilon": 0.001}},
            {
                "class_name": "MaxPooling2D",
                "config": {
                    "name": "max_pooling2d",
                    "pool_size": [2, 2],
                    "strides": [2, 2],
                    "padding": "valid",
                    "data_format": "channels_last",
                },
            },
            {"class_name": "Flatten", "config": {"name": "flatten", "data_format": "channels_last"}},
            {"class_name": "Dense", "config": {"name": "dense", "units": 5, "activation": "relu"}},
            {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.2}},
            {"class_name": "Dense", "config": {"name": "dense_1", "units": 3, "activation": "linear"}},
        ],
    },
}


def write_h5(path: Path, rng: np.random.Generator) -> dict:
    weights = {
        "conv2d": {"kernel": rng.normal(size=(3, 3, 3, 4)), "bias": rng.normal(size=4)},
        "batch_normalization": {
            "gamma": rng.uniform(0.5, 2, 4),
            "beta": rng.normal(size=4),
            "moving_mean": rng.normal(size=4),
            "moving_variance": rng.uniform(0.5, 2, 4),
        },
        "dense": {"kernel": rng.normal(size=(16, 5)), "bias": rng.normal(size=5)},
        "dense_1": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=3)},
    }
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps(CONFIG)
        for name, arrays in weights.items():
            for key, value in arrays.items():  # Keras 2's nesting: model_weights/<name>/<name>/<key>:0
                file.create_dataset(f"model_weights/{name}/{name}/{key}:0", data=value.astype(np.float32))
    return weights


def keras_forward(x_nhwc: np.ndarray, w: dict) -> np.ndarray:
    """The tiny model as Keras computes it, channels-last throughout."""
    windows = np.lib.stride_tricks.sliding_window_view(x_nhwc, (3, 3), axis=(1, 2))  # N,4,4,C,3,3
    conv = np.einsum("nhwcij,ijco->nhwo", windows, w["conv2d"]["kernel"]) + w["conv2d"]["bias"]
    conv = np.maximum(conv, 0)
    bn = w["batch_normalization"]
    conv = bn["gamma"] * (conv - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) + bn["beta"]
    n = conv.shape[0]
    pooled = conv.reshape(n, 2, 2, 2, 2, 4).max(axis=(2, 4))  # N,2,2,4
    flat = pooled.reshape(n, -1)  # h, w, c order
    hidden = np.maximum(flat @ w["dense"]["kernel"] + w["dense"]["bias"], 0)
    return hidden @ w["dense_1"]["kernel"] + w["dense_1"]["bias"]


def test_conversion_matches_keras_layout(tmp_path):
    rng = np.random.default_rng(0)
    weights = write_h5(tmp_path / "tiny.h5", rng)
    model, state, layers = convert_module.convert(tmp_path / "tiny.h5")
    assert [layer["type"] for layer in layers] == ["conv", "bn", "maxpool", "flatten", "dense", "dense"]
    x = rng.uniform(0, 255, size=(5, 6, 6, 3)).astype(np.float32) / 64
    expected = keras_forward(x.astype(np.float64), weights)
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert set(state) == set(model.state_dict())


def test_cifar_layers_read_from_a_keras_config_build_the_shipped_factory():
    entries = [{"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 32, 32, 3]}}]
    for layer in factory_module.CIFAR10_LAYERS:
        kind = layer["type"]
        if kind == "conv":
            entries.append(
                {
                    "class_name": "Conv2D",
                    "config": {
                        "name": "c",
                        "filters": layer["filters"],
                        "kernel_size": [3, 3],
                        "strides": [1, 1],
                        "padding": "valid",
                        "activation": "relu",
                    },
                }
            )
        elif kind == "bn":
            entries.append({"class_name": "BatchNormalization", "config": {"name": "b", "epsilon": 0.001}})
        elif kind == "maxpool":
            entries.append(
                {
                    "class_name": "MaxPooling2D",
                    "config": {"name": "m", "pool_size": [layer["pool"]] * 2, "strides": [layer["stride"]] * 2},
                }
            )
        elif kind == "flatten":
            entries.append({"class_name": "Flatten", "config": {"name": "f"}})
        else:
            entries.append(
                {"class_name": "Dense", "config": {"name": "d", "units": layer["units"], "activation": "relu"}}
            )
    layers, names, shape = convert_module.keras_layers({"config": {"layers": entries}})
    assert layers == factory_module.CIFAR10_LAYERS and shape == (3, 32, 32)
    model = factory_module.build()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert len(model.class_names) == 10 and model.input_shape == (3, 32, 32)


@pytest.mark.parametrize(
    "bad",
    [
        {
            "class_name": "Conv2D",
            "config": {"name": "c", "filters": 2, "kernel_size": [3, 3], "strides": [2, 2], "padding": "valid"},
        },
        {"class_name": "LSTM", "config": {"name": "l"}},
    ],
)
def test_unsupported_layers_are_refused(bad):
    entries = [{"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 8, 8, 1]}}, bad]
    with pytest.raises(ValueError):
        convert_module.keras_layers({"config": {"layers": entries}})
