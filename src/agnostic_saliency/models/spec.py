"""The input spec: what the model expects, stated explicitly.

Maps live in the model's *pixel space* (before normalisation), so that they can be shown and
added to images; ``NormalizedModel`` applies mean/std on the way in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """Shape (C, H, W), valid pixel range, and the per-channel normalisation the model applies.

    Parameters
    ----------
    shape : (C, H, W) of one input.
    value_range : (low, high) of valid pixels, (0, 1) by default.
    mean, std : per-channel normalisation ``(x - mean) / std`` applied before the model; None
        means the model takes pixels as they are.
    """

    shape: tuple[int, int, int]
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if len(self.shape) != 3 or any(int(s) <= 0 for s in self.shape):
            raise InputError(f"input shape must be three positive integers C,H,W, got {self.shape}")
        low, high = self.value_range
        if not high > low:
            raise InputError(f"value range must have high > low, got {self.value_range}")
        channels = self.shape[0]
        for label, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, channels):
                raise InputError(f"{label} needs 1 or {channels} values, got {len(values)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise InputError(f"std values must be positive, got {self.std}")

    @property
    def span(self) -> float:
        """Width of the pixel range: budgets and steps are expressed as fractions of it."""
        return float(self.value_range[1] - self.value_range[0])

    @property
    def numel(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.value_range[0], self.value_range[1])

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "value_range": list(self.value_range),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std)}


def parse_floats(text: str | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5); a clear error for anything else."""
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(float(v) for v in text)
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_shape(text: str | Sequence[int]) -> tuple[int, int, int]:
    """'3,224,224' (or 3x224x224) -> (3, 224, 224)."""
    if not isinstance(text, str):
        values = tuple(int(v) for v in text)
    else:
        try:
            values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise InputError(f"input shape must look like C,H,W, got {text!r}") from None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise InputError(f"input shape must be three positive integers C,H,W, got {text!r}")
    return values  # type: ignore[return-value]


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for a ``precision`` name (None for full fp32), checked against the device."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise InputError("fp16 needs a CUDA device; use bf16 on the CPU")
    return PRECISIONS[precision]


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)``: lets the engine work in pixel space.

    ``autocast``: run the model under mixed precision with this dtype (bf16 or fp16); the logits
    come back in fp32, so losses and probabilities are computed at full precision.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, autocast: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.autocast = autocast
        channels = spec.shape[0]
        mean = torch.tensor(spec.mean if spec.mean is not None else (0.0,), dtype=torch.float32)
        std = torch.tensor(spec.std if spec.std is not None else (1.0,), dtype=torch.float32)
        self.register_buffer("mean", mean.expand(channels).reshape(1, channels, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.expand(channels).reshape(1, channels, 1, 1).clone(), persistent=False)
        self.identity = spec.mean is None and spec.std is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x if self.identity else (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.autocast is None:
            return self.model(inputs)
        with torch.autocast(device_type=inputs.device.type, dtype=self.autocast):
            return self.model(inputs).float()
