"""Running a user's model safely: frozen for explaining (given back as it came), channels-last
while it runs, the memory one sample costs, and a check that it returns (N, classes) logits.

Shared by the saliency engine, the backdoor scan and Neural Cleanse, so none of them imports
another for these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import InputError
from .spec import InputSpec, NormalizedModel


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while explaining; the caller's model comes back
    exactly as it was given (train/eval flags of every module, requires_grad of every
    parameter), even on error."""
    modes = {module: module.training for module in model.modules()}
    flags = {parameter: parameter.requires_grad for parameter in model.parameters()}
    try:
        model.eval()
        for parameter in flags:
            parameter.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """The model's 4-D weights in channels-last layout while it runs, given back in the layout they
    had, even on error. Same values: only the memory order changes. With bf16 autocast on a CPU
    with AMX it made the scan of the population's LeNet 1.7 times faster, with bit-identical
    statistics (docs/design.md, mixed precision; commit 666c079)."""
    originals = []
    if enabled:
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() != 4:
                continue
            # Copy into a fresh channels-last tensor and compare strides: for a one-channel weight
            # .contiguous(channels_last) is a no-op, yet the kernels choose by the strides.
            reordered = torch.empty_like(tensor.data, memory_format=torch.channels_last).copy_(tensor.data)
            if reordered.stride() != tensor.stride():
                originals.append((tensor, tensor.data))
                tensor.data = reordered
    try:
        yield model
    finally:
        for tensor, original in originals:
            tensor.data = original  # the very storage the caller gave


def estimate_sample_bytes(model: nn.Module, spec: InputSpec, device: torch.device) -> int:
    """Bytes one sample costs in a forward+backward pass: the sum of every leaf module's output
    (kept for backward), doubled for its gradient, plus the input. Hooks are always removed."""
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return 2 * total[0] + 3 * 4 * spec.numel


@torch.no_grad()
def check_output(model: nn.Module, spec: InputSpec) -> int:
    """Run one dummy input; the model must return (N, classes) logits. Returns the class count."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.full((2, *spec.shape), (spec.value_range[0] + spec.value_range[1]) / 2, device=device)
        output = NormalizedModel(model, spec).to(device)(x)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"the model cannot take input shape {','.join(map(str, spec.shape))}: {message}") from None
    finally:
        model.train(was_training)
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"the model's output must be (N, classes) logits, got {shape} for N=2")
    if output.shape[1] < 1:
        raise InputError("the model has no output classes")
    if not torch.isfinite(output).all():
        raise InputError("the model's output is not finite (NaN or Inf) on a mid-range input")
    return int(output.shape[1])
