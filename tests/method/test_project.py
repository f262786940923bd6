import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_saliency.errors import InputError
from agnostic_saliency.method.project import budget_radius, project, rms

SETTINGS = settings(max_examples=40, deadline=None)


def maps_from(seed: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 100.0), radius=st.floats(1e-2, 50.0))
def test_l2_projection_properties(seed, scale, radius):
    maps = maps_from(seed, scale)
    projected = project(maps, "l2", radius)
    norms = projected.flatten(1).norm(dim=1)
    assert torch.all(norms <= radius * (1 + 1e-5))
    # Idempotent.
    torch.testing.assert_close(project(projected, "l2", radius), projected)
    # Points inside are unchanged; points outside land on the sphere, same direction.
    for original, result in zip(maps, projected):
        norm = float(original.norm())
        if norm <= radius:
            assert torch.equal(original, result)
        else:
            assert float(result.norm()) == pytest.approx(radius, rel=1e-4)
            torch.testing.assert_close(result / result.norm(), original / original.norm())


@SETTINGS
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 100.0), radius=st.floats(1e-2, 50.0))
def test_linf_projection_properties(seed, scale, radius):
    maps = maps_from(seed, scale)
    projected = project(maps, "linf", radius)
    assert float(projected.abs().max()) <= radius * (1 + 1e-6)
    torch.testing.assert_close(project(projected, "linf", radius), projected)
    inside = maps.abs() <= radius
    assert torch.equal(projected[inside], maps[inside])
    assert torch.equal(projected[~inside].sign(), maps[~inside].sign())


def test_projection_is_per_map():
    maps = torch.stack([torch.full((1, 2, 2), 0.01), torch.full((1, 2, 2), 10.0)])
    projected = project(maps, "l2", 1.0)
    assert torch.equal(projected[0], maps[0])
    assert float(projected[1].norm()) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 224, 224)])
def test_budget_means_the_same_rms_at_any_size(shape):
    numel = math.prod(shape)
    radius = budget_radius("l2", 0.2, 1.0, numel)
    big = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    assert float(rms(project(big, "l2", radius))[0]) == pytest.approx(0.2, rel=1e-4)
    # A range of width 2 doubles the radius; linf does not depend on the size.
    assert budget_radius("l2", 0.2, 2.0, numel) == pytest.approx(2 * radius)
    assert budget_radius("linf", 0.1, 1.0, numel) == pytest.approx(0.1)


def test_rms():
    maps = torch.stack([torch.full((1, 3, 3), -2.0), torch.zeros(1, 3, 3)])
    assert rms(maps).tolist() == pytest.approx([2.0, 0.0])


@pytest.mark.parametrize("norm,budget", [("l1", 0.2), ("L2", 0.2), ("l2", 0.0), ("linf", -1.0), ("l2", float("nan"))])
def test_bad_norm_or_budget(norm, budget):
    with pytest.raises(InputError):
        budget_radius(norm, budget, 1.0, 10)


def test_project_unknown_norm():
    with pytest.raises(InputError):
        project(torch.zeros(1, 1, 2, 2), "l1", 1.0)


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), norm=st.sampled_from(["l2", "linf"]),
       scale=st.floats(1e-4, 1e4), budget=st.floats(1e-3, 1.0), span=st.floats(0.1, 255.0),
       seed=st.integers(0, 2**31 - 1))
def test_projection_never_leaves_the_ball_for_any_shape_and_norm(shape, norm, scale, budget, span, seed):
    maps = scale * torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    radius = budget_radius(norm, budget, span, math.prod(shape))
    projected = project(maps, norm, radius)
    assert projected.shape == maps.shape and torch.isfinite(projected).all()
    size = projected.flatten(1).norm(dim=1) if norm == "l2" else projected.flatten(1).abs().amax(dim=1)
    assert torch.all(size <= radius * (1 + 1e-5))
