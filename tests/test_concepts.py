import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_saliency.concepts import (
    concept_hits,
    concept_log_probability,
    concept_matrix,
    perturbed_inputs,
)
from agnostic_saliency.errors import InputError


def test_concept_matrix():
    matrix = concept_matrix([[0], [1, 3]], 4)
    assert matrix.dtype == torch.bool
    assert matrix.tolist() == [[True, False, False, False], [False, True, False, True]]
    with pytest.raises(InputError):
        concept_matrix([[4]], 4)
    with pytest.raises(InputError):
        concept_matrix([[-1]], 4)


def test_single_class_log_probability_is_negative_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 5)
    classes = [4, 0, 2]
    log_p = concept_log_probability(logits, concept_matrix([[c] for c in classes], 5))
    assert log_p.shape == (3, 7)
    for k, c in enumerate(classes):
        expected = -F.cross_entropy(logits[k], torch.full((7,), c), reduction="none")
        torch.testing.assert_close(log_p[k], expected)


def test_set_concept_log_probability_sums_probabilities():
    torch.manual_seed(1)
    logits = torch.randn(1, 9, 6)
    log_p = concept_log_probability(logits, concept_matrix([[1, 3, 4]], 6))
    p = logits.softmax(-1)
    torch.testing.assert_close(log_p.exp(), p[..., [1, 3, 4]].sum(-1))
    # All classes: probability one.
    everything = concept_log_probability(logits, concept_matrix([list(range(6))], 6))
    torch.testing.assert_close(everything, torch.zeros_like(everything), atol=1e-6, rtol=0)


def test_concept_hits():
    logits = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]]]).repeat(2, 1, 1)
    hits = concept_hits(logits, concept_matrix([[1], [0, 2]], 3))
    assert hits.tolist() == [[True, False], [False, True]]


def test_perturbed_inputs_clip_and_shape():
    samples = torch.tensor([0.2, 0.9]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    maps = torch.tensor([0.5, -0.5, 0.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    out = perturbed_inputs(samples, maps, 0.0, 1.0)
    assert out.shape == (3, 2, 1, 2, 2)
    assert out[0, 0].flatten().tolist() == pytest.approx([0.7] * 4)
    assert out[0, 1].flatten().tolist() == pytest.approx([1.0] * 4)
    assert out[1, 0].flatten().tolist() == pytest.approx([0.0] * 4)


@settings(max_examples=50, deadline=None)
@given(low=st.floats(-10, 10), width=st.floats(1e-2, 300), budget=st.floats(1e-3, 1.0),
       norm=st.sampled_from(["l2", "linf"]), seed=st.integers(0, 2**31 - 1))
def test_clipped_inputs_stay_in_the_value_range(low, width, budget, norm, seed):
    """clip(x + map) lies in [low, high] for any sample in range and any map in the ball."""
    from agnostic_saliency.method.project import budget_radius, project

    high = low + width
    generator = torch.Generator().manual_seed(seed)
    samples = low + width * torch.rand(5, 1, 6, 6, generator=generator)
    radius = budget_radius(norm, budget, width, 36)
    maps = project(width * 3 * torch.randn(3, 1, 6, 6, generator=generator), norm, radius)
    inputs = perturbed_inputs(samples, maps, low, high)
    assert inputs.shape == (3, 5, 1, 6, 6)
    # The bounds as float32 holds them (a Python float's high can round up by one ulp).
    bottom, top = torch.tensor([low, high], dtype=inputs.dtype)
    assert bool(inputs.min() >= bottom) and bool(inputs.max() <= top)
