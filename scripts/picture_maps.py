"""The README's picture: the default maps of a model above a real test image of each class.

    OMP_NUM_THREADS=1 python scripts/picture_maps.py --out docs/readable_maps.png
    OMP_NUM_THREADS=1 python scripts/picture_maps.py --maps out/maps.safetensors --out docs/readable_maps.png

Without ``--maps`` it computes the maps of ``--model`` at the API's defaults and ``--seed``; with
it, it shows the maps the tool wrote (``maps.safetensors`` of an output folder), shown as the
tool displays them by default. The real examples are the first test image of each class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from agnostic_saliency import InputAgnosticSaliency, load_model
from agnostic_saliency.data import load_fashion_mnist
from agnostic_saliency.method.scale import DEFAULT_SCALING, SCALINGS
from agnostic_saliency.render.images import save_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn")
    parser.add_argument("--maps", type=Path, help="maps.safetensors written by the tool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/readable_maps.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, input_shape=(1, 28, 28))
    if args.maps is not None:
        displayed = SCALINGS[DEFAULT_SCALING](load_file(str(args.maps))["maps"])
    else:
        explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names)
        displayed = explainer.attribute(targets="all", seed=args.seed, progress=False).displayed
    test_x, test_y = load_fashion_mnist("test")
    real = torch.stack([test_x[(test_y == k).nonzero()[0, 0]] for k in range(len(loaded.class_names))])
    labels = [f"map: {name}" for name in loaded.class_names] + [f"real: {name}" for name in loaded.class_names]
    save_grid(torch.cat([displayed, real]), labels, args.out, columns=len(loaded.class_names))


if __name__ == "__main__":
    main()
