import pytest
import torch
from torch import nn

from agnostic_saliency.errors import InputError
from agnostic_saliency.models.spec import (
    InputSpec,
    NormalizedModel,
    autocast_dtype,
    parse_floats,
    parse_shape,
)


def test_spec_properties():
    spec = InputSpec((3, 4, 5), value_range=(-1.0, 2.0), mean=(0.5,), std=(0.2, 0.3, 0.4))
    assert spec.span == 3.0
    assert spec.numel == 60
    x = torch.tensor([-5.0, 0.0, 5.0])
    assert spec.clamp(x).tolist() == [-1.0, 0.0, 2.0]
    assert spec.to_dict() == {"shape": [3, 4, 5], "value_range": [-1.0, 2.0], "mean": [0.5],
                              "std": [0.2, 0.3, 0.4]}
    assert InputSpec((1, 2, 2)).to_dict()["mean"] is None


@pytest.mark.parametrize("kwargs", [
    dict(shape=(1, 28)), dict(shape=(0, 28, 28)), dict(shape=(1, -1, 28)),
    dict(shape=(1, 2, 2), value_range=(1.0, 1.0)), dict(shape=(1, 2, 2), value_range=(1.0, 0.0)),
    dict(shape=(3, 2, 2), mean=(0.1, 0.2)), dict(shape=(3, 2, 2), std=(0.1, 0.2, 0.3, 0.4)),
    dict(shape=(1, 2, 2), std=(0.0,)), dict(shape=(1, 2, 2), std=(-1.0,)),
])
def test_spec_rejects(kwargs):
    with pytest.raises(InputError):
        InputSpec(**kwargs)


def test_parse_floats():
    assert parse_floats(None, "--mean") is None
    assert parse_floats("0.5, 0.25,1", "--mean") == (0.5, 0.25, 1.0)
    assert parse_floats([1, 2], "--mean") == (1.0, 2.0)
    with pytest.raises(InputError, match="--std"):
        parse_floats("0.5,abc", "--std")


@pytest.mark.parametrize("text,expected", [("3,224,224", (3, 224, 224)), ("1x28x28", (1, 28, 28)),
                                           ((3, 8, 9), (3, 8, 9)), (" 1, 4 ,5", (1, 4, 5))])
def test_parse_shape(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize("text", ["3,224", "3,224,224,1", "a,b,c", "0,28,28", "1,-28,28", ""])
def test_parse_shape_rejects(text):
    with pytest.raises(InputError):
        parse_shape(text)


def test_normalized_model_applies_mean_and_std():
    spec = InputSpec((2, 3, 3), mean=(0.5, 0.25), std=(0.5, 2.0))
    wrapped = NormalizedModel(nn.Identity(), spec)
    x = torch.rand(4, 2, 3, 3)
    out = wrapped(x)
    torch.testing.assert_close(out[:, 0], (x[:, 0] - 0.5) / 0.5)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.25) / 2.0)
    # One value broadcasts to every channel.
    single = NormalizedModel(nn.Identity(), InputSpec((2, 3, 3), mean=(1.0,), std=(4.0,)))
    torch.testing.assert_close(single(x), (x - 1.0) / 4.0)


def test_normalized_model_without_normalisation_is_identity():
    wrapped = NormalizedModel(nn.Identity(), InputSpec((1, 3, 3)))
    x = torch.rand(2, 1, 3, 3)
    assert wrapped(x) is x
    # Buffers are not saved in the wrapper's state dict, and follow the input's dtype.
    assert "mean" not in wrapped.state_dict()
    spec = InputSpec((1, 3, 3), mean=(0.5,), std=(0.5,))
    assert NormalizedModel(nn.Identity(), spec)(x.double()).dtype == torch.float64


def test_autocast_runs_the_model_in_bf16_and_returns_fp32():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            out = self.linear(x.flatten(1))
            seen.append(out.dtype)
            return out

    x = torch.rand(3, 1, 2, 2)
    wrapped = NormalizedModel(Probe(), InputSpec((1, 2, 2)), autocast=torch.bfloat16)
    assert wrapped(x).dtype == torch.float32 and seen == [torch.bfloat16]
    assert NormalizedModel(Probe(), InputSpec((1, 2, 2)))(x).dtype == torch.float32 and seen[-1] == torch.float32


def test_autocast_dtype_names():
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(InputError, match="unknown precision"):
        autocast_dtype("fp8", "cpu")
    with pytest.raises(InputError, match="CUDA"):
        autocast_dtype("fp16", "cpu")
