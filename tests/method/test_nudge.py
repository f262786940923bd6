import torch

from agnostic_saliency.concepts import concept_log_probability, concept_matrix, perturbed_inputs
from agnostic_saliency.method.nudge import input_gradients, shift_maps


def test_shift_maps_rolls_each_map_within_bounds():
    torch.manual_seed(0)
    maps = torch.randn(6, 2, 7, 9)
    generator = torch.Generator().manual_seed(3)
    shifted = shift_maps(maps, 2, generator)
    assert shifted.shape == maps.shape
    moved = 0
    for original, result in zip(maps, shifted):
        # Content is kept: the shifted map is a roll of the original by at most 2 pixels.
        candidates = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(torch.roll(original, (dy, dx), dims=(-2, -1)), result)
        ]
        assert candidates
        moved += candidates[0] != (0, 0)
        torch.testing.assert_close(result.sum(), original.sum())
    assert moved >= 3


def test_shift_maps_is_exactly_a_roll_per_map_by_its_drawn_offset():
    """The batched gather gives the values, and the gradient, of torch.roll by the offsets drawn
    from the same generator, bit for bit (non-square maps, several channels)."""
    maps = torch.randn(5, 3, 6, 11, generator=torch.Generator().manual_seed(1), requires_grad=True)
    shifted = shift_maps(maps, 4, torch.Generator().manual_seed(2))
    offsets = torch.randint(-4, 5, (5, 2), generator=torch.Generator().manual_seed(2)).tolist()
    expected = torch.stack([torch.roll(m, (dy, dx), dims=(-2, -1)) for m, (dy, dx) in zip(maps, offsets)])
    assert torch.equal(shifted, expected)
    weights = torch.randn(shifted.shape)
    (gradient,) = torch.autograd.grad(shifted, maps, weights)
    (reference,) = torch.autograd.grad(expected, maps, weights)
    assert torch.equal(gradient, reference)


def test_shift_maps_zero_is_identity_and_keeps_gradient():
    maps = torch.randn(2, 1, 4, 4, requires_grad=True)
    assert shift_maps(maps, 0, torch.Generator()) is maps
    shifted = shift_maps(maps, 1, torch.Generator().manual_seed(0))
    shifted.sum().backward()
    torch.testing.assert_close(maps.grad, torch.ones_like(maps))


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
            input_gradients(
                tiny_model, samples[i : i + 1], maps[k : k + 1], concepts[k : k + 1], 0.0, 1.0, normalize=False
            )[0]
            for i in range(6)
        ]
        expected = sum(g / g.norm() for g in per_sample)
        torch.testing.assert_close(summed[k : k + 1], expected, rtol=1e-4, atol=1e-6)
