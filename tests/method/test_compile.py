"""``compile=True``: the nudge runs through torch.compile, with the plain run's maps up to rounding,
and a compiler that fails is one InputError line."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from agnostic_saliency import InputAgnosticSaliency, InputError
from agnostic_saliency.models.spec import InputSpec

NAMES = ["zero", "one", "two", "three"]
FAST = dict(steps=3, batch_size=4, refine_steps=2, eval_samples=16, progress=False)


def _inductor_available() -> bool:
    if not hasattr(torch, "compile"):
        return False
    try:
        from torch._dynamo import is_dynamo_supported

        if not is_dynamo_supported():
            return False
    except Exception:
        return False
    # On the CPU, inductor writes C++ and needs a compiler for it.
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch, and leaves no compiled code behind for the next."""
    yield
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


def small_net() -> nn.Module:
    """A conv, a ReLU and a linear head: the smallest net with the kernels that matter, so that
    inductor compiles it (forward and backward) in seconds."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4)).eval()


@pytest.mark.skipif(not _inductor_available(), reason="torch.compile (inductor) is not available on this platform")
def test_compiled_and_plain_runs_give_the_same_maps_up_to_rounding():
    """Tolerance: 1e-4 of the maps' largest value, as for maps whose sums are split differently by
    the memory cap; compiled kernels fuse and order the same sums differently."""
    model = small_net()
    spec = InputSpec((1, 8, 8), mean=(0.5,), std=(0.25,))
    plain = InputAgnosticSaliency(model, spec, NAMES)
    compiled = InputAgnosticSaliency(model, spec, NAMES, compile=True)
    assert compiled.nudged is not compiled.wrapped and plain.nudged is plain.wrapped
    expected = plain.attribute([0, 2, 3], seed=4, **FAST)
    got = compiled.attribute([0, 2, 3], seed=4, **FAST)
    scale = float(expected.maps.abs().max())
    assert scale > 0
    torch.testing.assert_close(got.unrefined_maps, expected.unrefined_maps, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(got.maps, expected.maps, rtol=0, atol=1e-4 * scale)
    assert got.sample_gradients == expected.sample_gradients
    # The caller's model is given back as it came: in eval mode, its parameters trainable.
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_a_compiler_that_fails_is_one_input_error_line(monkeypatch, tiny_model, tiny_spec):
    """Whatever torch.compile's backend raises on the first step becomes one line that says so;
    the caller's model comes back as it was."""
    real_compile = torch.compile

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found\nsecond line of a long report")

    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend=broken_backend))
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES, compile=True)
    with pytest.raises(InputError, match="torch.compile failed on this model") as caught:
        explainer.attribute([0], **FAST)
    assert "\n" not in str(caught.value) and "no C++ compiler found" in str(caught.value)
    assert not tiny_model.training and all(p.requires_grad for p in tiny_model.parameters())


def test_torch_compile_refusing_to_wrap_is_an_input_error(monkeypatch, tiny_model, tiny_spec):
    def refuse(module):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.raises(InputError, match="torch.compile is not available here: Dynamo is not supported"):
        InputAgnosticSaliency(tiny_model, tiny_spec, NAMES, compile=True)
    InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)  # a plain explainer never calls it


def test_a_plain_run_does_not_turn_model_errors_into_compile_errors(tiny_spec):
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(64, 4)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 2:  # after the engine's own checks
                raise ValueError("the model broke")
            return self.head(x.flatten(1))

    explainer = InputAgnosticSaliency(Failing(), tiny_spec, NAMES)
    with pytest.raises(ValueError, match="the model broke"):
        explainer.attribute([0], **FAST)
