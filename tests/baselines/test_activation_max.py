import pytest
import torch
from torch import nn

from agnostic_saliency.baselines.activation_max import (
    NO_ROBUSTNESS,
    ImageParameters,
    Robustness,
    activation_maximisation,
    as_budget_maps,
    fourier_scale,
    random_transform,
)
from agnostic_saliency.errors import InputError
from agnostic_saliency.method.project import rms
from agnostic_saliency.method.scale import minmax
from agnostic_saliency.models.spec import InputSpec


def linear_model(channels: int = 1, side: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes))


def test_plain_ascent_on_a_linear_model_draws_the_sign_of_its_weights():
    # For logit_k = w_k . x the best image in the range is high where w_k > 0 and low where w_k < 0.
    model = linear_model()
    spec = InputSpec((1, 6, 6), value_range=(0.0, 255.0))
    result = activation_maximisation(model, spec, [0, 2], steps=60, lr=0.2, parameterisation="pixel",
                                     robustness=NO_ROBUSTNESS)
    weights = model[1].weight.detach()
    for row, target in enumerate([0, 2]):
        above_mid = (result.pictures[row].flatten() > 127.5)
        agree = (above_mid == (weights[target] > 0)).float().mean()
        assert agree > 0.95
    assert result.pictures.min() >= 0 and result.pictures.max() <= 255
    start = ImageParameters(2, (1, 6, 6), "pixel", generator=torch.Generator().manual_seed(0))()
    start_logits = model(255 * start).gather(1, torch.tensor([[0], [2]])).squeeze(1)
    assert all(after > before + 1 for after, before in zip(result.logits, start_logits.tolist()))


def test_seeded_and_model_given_back_as_it_was(tiny_conv_class):
    model = tiny_conv_class().train()
    model.head.weight.requires_grad_(True)
    spec = InputSpec((1, 8, 8))
    first = activation_maximisation(model, spec, [1], steps=4, seed=3)
    second = activation_maximisation(model, spec, [1], steps=4, seed=3)
    assert torch.equal(first.pictures, second.pictures)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert first.config["parameterisation"] == "fourier" and first.seconds > 0


def test_fourier_scale_falls_with_frequency():
    scale = fourier_scale(8, 8, decay=1.0)
    assert scale.shape == (8, 5)
    assert scale[0, 0] == pytest.approx(8.0)  # DC is clamped at frequency 1/8
    assert scale[0, 1] > scale[0, 4] and scale[1, 0] > scale[4, 0]
    assert torch.equal(fourier_scale(8, 8, decay=0.0), torch.ones(8, 5))


@pytest.mark.parametrize("parameterisation,channels", [("pixel", 1), ("fourier", 1), ("fourier", 3), ("pixel", 3)])
def test_image_parameters_are_valid_images(parameterisation, channels):
    images = ImageParameters(2, (channels, 7, 9), parameterisation, init_std=1.0,
                             generator=torch.Generator().manual_seed(0))
    picture = images()
    assert picture.shape == (2, channels, 7, 9) and picture.min() > 0 and picture.max() < 1
    assert images.decorrelate == (channels == 3)
    picture.sum().backward()
    assert images.raw.grad is not None and images.raw.grad.abs().sum() > 0


def test_unknown_parameterisation_and_bad_steps_are_input_errors(tiny_model, tiny_spec):
    with pytest.raises(InputError):
        ImageParameters(1, (1, 4, 4), "cppn")
    with pytest.raises(InputError):
        activation_maximisation(tiny_model, tiny_spec, [0], steps=-1)


def test_random_transform_identity_moves_and_fills():
    images = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    same = random_transform(images, Robustness(pad=0.2, jitter=0.0, scale=0.0, rotation=0.0), torch.Generator())
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)  # padding alone is cropped away again
    moved = random_transform(images, Robustness(pad=0.2, jitter=0.3, scale=0.1, rotation=10),
                             torch.Generator().manual_seed(1))
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    assert moved.min() >= 0 and moved.max() <= 1
    blank = random_transform(torch.full((1, 1, 10, 10), 0.5), Robustness(0.2, 0.3, 0.1, 10), torch.Generator())
    torch.testing.assert_close(blank, torch.full_like(blank, 0.5))  # filled with mid-grey, not black


def test_budget_maps_keep_the_picture_at_the_given_rms():
    pictures = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 255
    maps = as_budget_maps(pictures, 0.1 * 255)
    torch.testing.assert_close(rms(maps), torch.full((4,), 25.5))
    torch.testing.assert_close(maps.flatten(1).mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(minmax(maps), minmax(pictures), atol=1e-5, rtol=0)
    per_map = as_budget_maps(pictures, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(rms(per_map), torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_lucent_runs_offline_on_a_small_model(tiny_model, tiny_spec):
    pytest.importorskip("lucent")
    from agnostic_saliency.baselines.activation_max import lucent_maximisation

    state = torch.random.get_rng_state()
    result = lucent_maximisation(tiny_model, tiny_spec, [0, 3], steps=3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is given back
    assert result.pictures.shape == (2, 1, 8, 8)
    assert result.pictures.min() >= 0 and result.pictures.max() <= 1
    again = lucent_maximisation(tiny_model, tiny_spec, [0, 3], steps=3, seed=0)
    assert torch.equal(result.pictures, again.pictures)


def test_written_out_adam_matches_torch_adam():
    from agnostic_saliency.baselines.activation_max import _Adam

    start = torch.randn(5, generator=torch.Generator().manual_seed(0))
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    adam, reference = _Adam(ours, 0.05), torch.optim.Adam([theirs], lr=0.05)
    for step in range(5):
        for tensor in (ours, theirs):
            tensor.grad = (tensor * (step + 1)).detach().sin()
        adam.step()
        reference.step()
    torch.testing.assert_close(ours.detach(), theirs.detach())
