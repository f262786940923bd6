import math

import pytest
import torch

from agnostic_saliency.method.refine import accept_refinement, gaussian_blur, gaussian_kernel


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_kernel_is_normalised_and_symmetric(sigma):
    kernel = gaussian_kernel(sigma)
    assert float(kernel.sum()) == pytest.approx(1.0)
    assert torch.allclose(kernel, kernel.flip(0))
    assert int(kernel.argmax()) == len(kernel) // 2
    assert len(kernel) >= 2 * math.ceil(2 * sigma) + 1


@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 1, 2, 2), (1, 1, 28, 28)])
def test_blur_keeps_constant_maps(shape):
    maps = torch.full(shape, 0.37)
    out = gaussian_blur(maps, 1.5)
    assert out.shape == maps.shape
    torch.testing.assert_close(out, maps)
    assert float(out.mean()) == pytest.approx(0.37)


def test_blur_reduces_high_frequency_energy():
    y, x = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((x + y) % 2).float().view(1, 1, 16, 16) - 0.5
    smooth = torch.sin(x / 5.0).view(1, 1, 16, 16)
    blurred_checker = gaussian_blur(checker, 1.0)
    blurred_smooth = gaussian_blur(smooth, 1.0)
    assert blurred_checker.pow(2).sum() < 0.05 * checker.pow(2).sum()
    # Low frequencies mostly survive.
    assert blurred_smooth.pow(2).sum() > 0.8 * smooth.pow(2).sum()
    # And in general the high-frequency part of a random map shrinks.
    noise = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(0))

    def high(m):
        return torch.fft.fft2(m)[..., 4:13, 4:13].abs().pow(2).sum()

    assert high(gaussian_blur(noise, 1.0)) < 0.1 * high(noise)


def test_blur_acts_on_each_channel_separately():
    maps = torch.zeros(1, 2, 9, 9)
    maps[0, 0, 4, 4] = 1.0
    out = gaussian_blur(maps, 1.0)
    assert torch.all(out[0, 1] == 0)
    assert float(out[0, 0].sum()) == pytest.approx(1.0, rel=1e-5)
    assert out[0, 0, 4, 4] < 1.0 and out[0, 0, 4, 5] > 0


def test_zero_sigma_is_identity():
    maps = torch.randn(1, 1, 5, 5)
    assert gaussian_blur(maps, 0.0) is maps


def test_accept_refinement():
    before = [0.9, 0.9, 0.9, 0.5]
    after = [0.95, 0.89, 0.7, 0.5]
    assert accept_refinement(before, after, 0.02) == [True, True, False, True]
    assert accept_refinement(before, after, 0.0) == [True, False, False, True]
    assert accept_refinement(before, after, 0.5) == [True, True, True, True]


def test_split_shape_keeps_shape_plus_detail_inside_the_budget():
    from agnostic_saliency.method.project import project
    from agnostic_saliency.method.refine import split_shape

    torch.manual_seed(0)
    maps = torch.randn(3, 1, 12, 12)
    shape, detail_radius = split_shape(maps, 1.0, radius=2.0, share=0.8)
    torch.testing.assert_close(shape.flatten(1).norm(dim=1), torch.full((3,), 1.6))
    assert abs(detail_radius - 1.2) < 1e-6
    detail = project(torch.randn(3, 1, 12, 12) * 5, "l2", detail_radius)
    # Worst case the two parts align: the triangle inequality bounds the sum by 1.6 + 1.2; the
    # split guarantees the sum of squares, which is what the shape's share is defined by.
    assert (shape.flatten(1).norm(dim=1) ** 2 + detail.flatten(1).norm(dim=1) ** 2 <= 4.0 + 1e-4).all()
    # The shape is smooth: less high-frequency energy than the maps it came from.
    def roughness(x):
        return (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum() / x.pow(2).sum()

    assert roughness(shape) < 0.5 * roughness(maps)
