"""A Keras ``Sequential`` CNN rebuilt in PyTorch: the CIFAR-10 model of PyPI's ``cifar-10-model``
(7.4.0), as a factory for the CLI.

Its weights are not ours to ship: ``python scripts/convert_cifar10_keras.py`` fetches the
package, reads ``trained_models/cnn_model.h5`` and writes
``artifacts/cifar10/cifar10_keras.safetensors``. Then::

    agnostic-saliency map --model examples/cifar10_keras.py:build \\
        --weights artifacts/cifar10/cifar10_keras.safetensors --value-range 0,255 --out runs/cifar10

The network takes raw RGB bytes in [0, 255] (no normalisation), uses no padding, and ends with
a ReLU on its ten outputs, exactly as trained in Keras. :class:`KerasSequential` builds any
such stack from a list of layer descriptions, so that the converter and its tests can rebuild
other small Keras models the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# The layers of cnn_model.h5 (its model_config), in the form KerasSequential takes.
CIFAR10_LAYERS: list[dict] = [
    {"type": "conv", "filters": 64, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "conv", "filters": 64, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "maxpool", "pool": 2, "stride": 2},
    {"type": "conv", "filters": 128, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "conv", "filters": 128, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "maxpool", "pool": 2, "stride": 2},
    {"type": "conv", "filters": 64, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "conv", "filters": 64, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "bn", "epsilon": 1e-3},
    {"type": "maxpool", "pool": 1, "stride": 1},
    {"type": "flatten"},
    {"type": "dense", "units": 1024, "activation": "relu"},
    {"type": "dense", "units": 512, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "relu"},
]

ACTIVATIONS = {"linear": None, "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class KerasFlatten(nn.Module):
    """Flatten in Keras's channels-last order (H, W, C), so that the next dense layer's kernel
    can be used as it was trained."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


class KerasSequential(nn.Module):
    """A stack of Keras layers (conv, batch norm, max pool, flatten, dense; dropout is left out
    as it does nothing at inference) on channels-first (N, C, H, W) input.

    Parameters
    ----------
    layers : layer descriptions, as in :data:`CIFAR10_LAYERS`.
    input_shape : (C, H, W) of one input.
    class_names : the names of the outputs.
    """

    def __init__(self, layers: Sequence[dict], input_shape: tuple[int, int, int],
                 class_names: Sequence[str] | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        channels, height, width = self.input_shape
        features: int | None = None
        modules: list[nn.Module] = []
        for layer in layers:
            kind = layer["type"]
            if kind == "conv":
                kernel, padding = layer["kernel"], layer.get("padding", "valid")
                if padding not in ("valid", "same") or (padding == "same" and kernel % 2 == 0):
                    raise ValueError(f"unsupported conv padding {padding!r} with kernel {kernel}")
                pad = kernel // 2 if padding == "same" else 0
                modules.append(nn.Conv2d(channels, layer["filters"], kernel, padding=pad))
                channels = layer["filters"]
                height, width = height + 2 * pad - kernel + 1, width + 2 * pad - kernel + 1
            elif kind == "bn":
                # Keras's momentum is the weight of the old value; torch's of the new: irrelevant
                # at inference, where only the moving statistics and epsilon count.
                modules.append(nn.BatchNorm2d(channels, eps=layer.get("epsilon", 1e-3)))
            elif kind == "maxpool":
                modules.append(nn.MaxPool2d(layer["pool"], layer["stride"]))
                height = (height - layer["pool"]) // layer["stride"] + 1
                width = (width - layer["pool"]) // layer["stride"] + 1
            elif kind == "flatten":
                modules.append(KerasFlatten())
                features = channels * height * width
            elif kind == "dense":
                if features is None:
                    raise ValueError("a dense layer needs a flatten before it")
                modules.append(nn.Linear(features, layer["units"]))
                features = layer["units"]
            else:
                raise ValueError(f"unsupported Keras layer type {kind!r}")
            activation = ACTIVATIONS[layer.get("activation") or "linear"] if kind in ("conv", "dense") else None
            if activation is not None:
                modules.append(activation())
        self.body = nn.Sequential(*modules)
        if class_names is not None:
            self.class_names = list(class_names)

    def forward(self, x):
        return self.body(x)


def build() -> nn.Module:
    """The CIFAR-10 network of ``cifar-10-model`` 7.4.0 (random weights: pass ``--weights``)."""
    return KerasSequential(CIFAR10_LAYERS, (3, 32, 32), CIFAR10_CLASSES)
