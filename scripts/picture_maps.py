"""The README's picture: the default maps of a model above a real test image of each class.

    OMP_NUM_THREADS=1 python scripts/picture_maps.py --out docs/readable_maps.png
    OMP_NUM_THREADS=1 python scripts/picture_maps.py --maps out/maps.safetensors --out docs/readable_maps.png
    OMP_NUM_THREADS=1 python scripts/picture_maps.py --maps faithful/maps.safetensors readable/maps.safetensors \
        --rows faithful readable --out docs/readable_maps.png

Without ``--maps`` it computes the maps of ``--model`` at the API's defaults and ``--seed``; with
it, it shows the maps the tool wrote (``maps.safetensors`` of an output folder, one row each,
named by ``--rows``), shown as the tool displays them by default. The real examples are the
first test image of each class.
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
    parser.add_argument("--maps", type=Path, nargs="+", help="maps.safetensors written by the tool, one per row")
    parser.add_argument("--rows", nargs="+", help="a name for each --maps row (default: map)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/readable_maps.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, input_shape=(1, 28, 28))
    names = loaded.class_names
    if args.maps is not None:
        rows = args.rows or ["map"] * len(args.maps)
        if len(rows) != len(args.maps):
            parser.error("give one --rows name per --maps file")
        displayed = [SCALINGS[DEFAULT_SCALING](load_file(str(path))["maps"]) for path in args.maps]
    else:
        explainer = InputAgnosticSaliency(loaded.model, loaded.spec, names)
        rows, displayed = ["map"], [explainer.attribute(targets="all", seed=args.seed, progress=False).displayed]
    test_x, test_y = load_fashion_mnist("test")
    real = torch.stack([test_x[(test_y == k).nonzero()[0, 0]] for k in range(len(names))])
    labels = [f"{row}: {name}" for row in rows for name in names] + [f"real: {name}" for name in names]
    save_grid(torch.cat([*displayed, real]), labels, args.out, columns=len(names))


if __name__ == "__main__":
    main()
