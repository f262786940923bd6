import pytest
import torch

from agnostic_saliency.method.scale import DEFAULT_SCALING, SCALINGS, minmax, positive, signed


def test_minmax_stretches_each_map_and_keeps_order():
    torch.manual_seed(0)
    maps = torch.randn(4, 2, 5, 5) * torch.tensor([0.01, 1.0, 5.0, 100.0]).view(4, 1, 1, 1)
    out = minmax(maps, -1.0, 3.0)
    for original, scaled in zip(maps, out):
        assert float(scaled.min()) == pytest.approx(-1.0)
        assert float(scaled.max()) == pytest.approx(3.0)
        assert torch.equal(original.flatten().argsort(), scaled.flatten().argsort())
        # Affine: correlation one.
        stacked = torch.stack([original.flatten(), scaled.flatten()]).double()
        assert float(torch.corrcoef(stacked)[0, 1]) == pytest.approx(1.0, abs=1e-6)


def test_minmax_constant_map_is_mid_range():
    maps = torch.stack([torch.full((1, 3, 3), 7.0), torch.arange(9.0).view(1, 3, 3)])
    out = minmax(maps, 0.0, 2.0)
    assert torch.all(out[0] == 1.0)
    assert out[1].min() == 0.0 and out[1].max() == 2.0


def test_signed_keeps_zero_at_mid_grey():
    maps = torch.tensor([[[[0.0, 2.0, -1.0]]], [[[0.0, -4.0, 1.0]]]])
    out = signed(maps, 0.0, 1.0)
    assert out[0].flatten().tolist() == pytest.approx([0.5, 1.0, 0.25])
    assert out[1].flatten().tolist() == pytest.approx([0.5, 0.0, 0.625])
    assert torch.all(signed(torch.zeros(1, 1, 2, 2)) == 0.5)


def test_positive_shows_what_the_map_draws_on_the_darkest_input():
    maps = torch.tensor([[[[-1.0, 0.5, 2.0]]], [[[-3.0, -1.0, 0.0]]]])
    out = positive(maps, -1.0, 1.0)
    assert out[0].flatten().tolist() == pytest.approx([-1.0, -0.5, 1.0])  # negative parts are dark
    assert torch.all(out[1] == -1.0)  # nothing positive: all dark, no division by zero


def test_scalings_registry():
    assert SCALINGS["minmax"] is minmax and SCALINGS["signed"] is signed
    assert SCALINGS[DEFAULT_SCALING] is positive
