import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_saliency.errors import InputError
from agnostic_saliency.method.nudge import (
    concept_hits,
    concept_log_probability,
    concept_matrix,
    input_gradients,
    perturbed_inputs,
    shift_maps,
)


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


def test_shift_maps_rolls_each_map_within_bounds():
    torch.manual_seed(0)
    maps = torch.randn(6, 2, 7, 9)
    generator = torch.Generator().manual_seed(3)
    shifted = shift_maps(maps, 2, generator)
    assert shifted.shape == maps.shape
    moved = 0
    for original, result in zip(maps, shifted):
        # Content is kept: the shifted map is a roll of the original by at most 2 pixels.
        candidates = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                      if torch.equal(torch.roll(original, (dy, dx), dims=(-2, -1)), result)]
        assert candidates
        moved += candidates[0] != (0, 0)
        torch.testing.assert_close(result.sum(), original.sum())
    assert moved >= 3


def test_shift_maps_zero_is_identity_and_keeps_gradient():
    maps = torch.randn(2, 1, 4, 4, requires_grad=True)
    assert shift_maps(maps, 0, torch.Generator()) is maps
    shifted = shift_maps(maps, 1, torch.Generator().manual_seed(0))
    shifted.sum().backward()
    torch.testing.assert_close(maps.grad, torch.ones_like(maps))


def test_perturbed_inputs_clip_and_shape():
    samples = torch.tensor([0.2, 0.9]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    maps = torch.tensor([0.5, -0.5, 0.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    out = perturbed_inputs(samples, maps, 0.0, 1.0)
    assert out.shape == (3, 2, 1, 2, 2)
    assert out[0, 0].flatten().tolist() == pytest.approx([0.7] * 4)
    assert out[0, 1].flatten().tolist() == pytest.approx([1.0] * 4)
    assert out[1, 0].flatten().tolist() == pytest.approx([0.0] * 4)


def _reference_loss(model, samples, maps, concepts):
    """Mean -log P(concept) over samples, summed over maps, through clamp (autograd reference)."""
    inputs = perturbed_inputs(samples, maps, 0.0, 1.0)
    logits = model(inputs.flatten(0, 1)).reshape(maps.shape[0], samples.shape[0], -1)
    return -concept_log_probability(logits, concepts).mean(1).sum()


def test_input_gradients_match_autograd_through_the_clip(tiny_model):
    torch.manual_seed(0)
    samples = torch.rand(5, 1, 8, 8)
    maps = (0.3 * torch.randn(3, 1, 8, 8)).requires_grad_(True)
    concepts = concept_matrix([[0], [2], [1, 3]], 4)
    summed, hits = input_gradients(tiny_model, samples, maps.detach(), concepts, 0.0, 1.0, normalize=False)
    assert hits.shape == (3, 5)
    _reference_loss(tiny_model, samples, maps, concepts).backward()
    torch.testing.assert_close(summed / len(samples), maps.grad)
    # Each map's gradient depends on its own concept only.
    alone, _ = input_gradients(tiny_model, samples, maps[1:2].detach(), concepts[1:2], 0.0, 1.0, normalize=False)
    torch.testing.assert_close(alone, summed[1:2])
    # Descending the gradient raises the concepts' probability.
    with torch.no_grad():
        before = _reference_loss(tiny_model, samples, maps, concepts)
        after = _reference_loss(tiny_model, samples, maps - 0.01 * summed.sign(), concepts)
    assert after < before


def test_normalised_input_gradients_give_every_sample_one_vote(tiny_model):
    torch.manual_seed(1)
    samples = torch.rand(6, 1, 8, 8)
    maps = 0.1 * torch.randn(2, 1, 8, 8)
    concepts = concept_matrix([[0], [3]], 4)
    summed, _ = input_gradients(tiny_model, samples, maps, concepts, 0.0, 1.0, normalize=True)
    for k in range(2):
        per_sample = [
            input_gradients(tiny_model, samples[i : i + 1], maps[k : k + 1], concepts[k : k + 1], 0.0, 1.0, normalize=False)[0]
            for i in range(6)
        ]
        expected = sum(g / g.norm() for g in per_sample)
        torch.testing.assert_close(summed[k : k + 1], expected, rtol=1e-4, atol=1e-6)


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
