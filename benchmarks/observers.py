"""Observers that read the maps: an adversarially trained judge and a panel of ordinary ones.

They live here, apart from the method, and are never consulted by it. Each judge reads the PNG
the tool writes, which is what a person sees. Weights are made by ``scripts/train_judges.py``
and stored under ``benchmarks/judges/`` with a card each.

- ``robust``: a small conv net trained with L2 PGD adversarial training (Madry et al., ICLR 2018).
  Robust classifiers have perceptually aligned gradients and read shapes (Santurkar et al.,
  NeurIPS 2019), so a texture that fools the explained model does not fool it.
- ``panel-mlp``, ``panel-pool``, ``panel-gap``: ordinary judges of three families (fully
  connected; conv with max pooling and a flattened head; batch norm with global average pooling).
  Ordinary networks share non-robust features (Ilyas et al., NeurIPS 2019), so they count only
  beside the robust judge.
- ``unseen-mobile``: not a judge but a model to explain, of another family (depthwise-separable
  convs, group norm, global pooling), for reporting on a net never used to choose settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

JUDGES_DIR = Path(__file__).resolve().parent / "judges"


class RobustConv(nn.Module):
    """Two strided 4x4 convs and a small linear head (the robust judge; strided, so that
    adversarial training fits a few CPU minutes)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class PanelMLP(nn.Module):
    """Fully connected: 784-256-128-10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, num_classes))

    def forward(self, x):
        return self.net(x)


class PanelPool(nn.Module):
    """LeNet-like: 5x5 convs, max pooling, flattened head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 5 * 5, 100), nn.ReLU(), nn.Linear(100, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class PanelGAP(nn.Module):
    """Batch norm, strided 3x3 convs, global average pooling, one linear layer."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, channels = [], 1
        for width, stride in ((16, 1), (32, 2), (32, 1), (64, 2)):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            channels = width
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x):
        return self.net(x)


class UnseenMobile(nn.Module):
    """Depthwise-separable convs with group norm and GELU, global average pooling: a family that
    neither the built-in models nor the judges belong to."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                    nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(4, cout), nn.GELU()]

        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, 16), nn.GELU(),
            *block(16, 48, 1), *block(48, 96, 2), *block(96, 96, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class UnseenResidual(nn.Module):
    """A small ResNet: batch norm, identity shortcuts, max-pooled stages, global average pooling.
    A model to explain, kept for reporting: no setting of the method was chosen on it."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def unit(channels):
            return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(channels))

        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.units = nn.ModuleList([unit(16), unit(32), unit(64)])
        self.widen = nn.ModuleList([nn.Conv2d(16, 32, 1, bias=False), nn.Conv2d(32, 64, 1, bias=False)])
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for index, unit in enumerate(self.units):
            x = torch.relu(x + unit(x))
            if index < len(self.widen):
                x = self.widen[index](nn.functional.max_pool2d(x, 2))
        return self.head(x.mean((2, 3)))


ARCHITECTURES = {"robust": RobustConv, "panel-mlp": PanelMLP, "panel-pool": PanelPool, "panel-gap": PanelGAP,
                 "unseen-mobile": UnseenMobile, "unseen-residual": UnseenResidual}
PANEL = ("panel-mlp", "panel-pool", "panel-gap")


def load_observer(name: str, folder: Path = JUDGES_DIR) -> nn.Module:
    """A trained observer in eval mode, from ``<folder>/<name>.safetensors`` (safetensors only)."""
    model = ARCHITECTURES[name]()
    model.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    return model.eval()


def read_png(path: str | Path, size: int = 28) -> torch.Tensor:
    """A grey PNG as written by the tool, back to a (1, size, size) tensor in [0, 1]. The tool
    enlarges maps with nearest pixels, so a box average recovers the written values exactly."""
    image = Image.open(path).convert("L")
    array = np.asarray(image, dtype=np.float32) / 255.0
    factor = array.shape[0] // size
    array = array[: size * factor, : size * factor].reshape(size, factor, size, factor).mean((1, 3))
    return torch.from_numpy(array)[None]


@torch.no_grad()
def readings(judge: nn.Module, pictures: torch.Tensor) -> list[int]:
    """The judge's top-1 class for each (1, 28, 28) picture in [0, 1]."""
    return judge(pictures).argmax(1).tolist()


def low_frequency_share(pictures: torch.Tensor, cutoff: float = 0.125) -> list[float]:
    """Per picture: the share of its energy (mean removed) at spatial frequencies below
    ``cutoff`` cycles per pixel (0.125: periods longer than 8 pixels, i.e. shapes, not stripes)."""
    h, w = pictures.shape[-2:]
    centred = pictures - pictures.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(centred.float()).abs().pow(2).flatten(1)
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    low = (torch.sqrt(fx**2 + fy**2) < cutoff).flatten()
    total = power.sum(1).clamp_min(1e-12)
    return (power[:, low].sum(1) / total).tolist()
