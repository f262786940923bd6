"""The throughput benchmark's bare loop runs the engine's own forward and backward passes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from throughput import engine_passes  # noqa: E402

from agnostic_saliency import InputAgnosticSaliency, InputSpec  # noqa: E402
from agnostic_saliency.models.architectures import FmnistCNN  # noqa: E402


@pytest.mark.parametrize("memory_cap_mb", [2048, 1.0, 0.75])
def test_engine_passes_are_the_passes_the_engine_makes(memory_cap_mb):
    torch.manual_seed(0)
    model = FmnistCNN(num_classes=10).eval()
    sizes = []
    model.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0]))
                                if torch.is_grad_enabled() else None)
    explainer = InputAgnosticSaliency(model, InputSpec((1, 28, 28)), memory_cap_mb=memory_cap_mb)
    explainer.attribute(targets="all", steps=1, batch_size=8, refine=False, eval_samples=1, progress=False)
    assert sizes == engine_passes(explainer, 10, 8)
    assert sum(sizes) == 10 * 8
    if memory_cap_mb < 2048:
        assert len(sizes) > 1  # the small caps do split the step
