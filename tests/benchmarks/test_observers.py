"""The observers' plumbing: reading the written PNGs back, and the spectral figure."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from observers import ARCHITECTURES, low_frequency_share, read_png, readings  # noqa: E402

from agnostic_saliency.render.images import save_png  # noqa: E402


def test_read_png_recovers_what_the_tool_wrote(tmp_path):
    picture = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    save_png(picture, tmp_path / "map.png", upscale=4)
    back = read_png(tmp_path / "map.png")
    assert back.shape == (1, 28, 28)
    assert (back - picture).abs().max() <= 0.5 / 255 + 1e-6  # only the 8-bit rounding


def test_low_frequency_share_separates_shapes_from_stripes():
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.cos(2 * math.pi * x / 28)  # one cycle per image
    stripes = torch.cos(2 * math.pi * (x + y) / 4)  # period 4 pixels along each axis
    shares = low_frequency_share(torch.stack([blob, stripes, blob + stripes])[:, None])
    assert shares[0] > 0.99
    assert shares[1] < 0.01
    assert 0.4 < shares[2] < 0.6  # equal energy in both


def test_every_observer_maps_a_picture_to_ten_classes():
    pictures = torch.rand(3, 1, 28, 28)
    for name, architecture in ARCHITECTURES.items():
        labels = readings(architecture().eval(), pictures)
        assert len(labels) == 3 and all(0 <= label < 10 for label in labels), name
