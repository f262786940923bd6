"""The Captum methods through ``explain.methods``: shapes, agreement with plain autograd and with
Integrated Gradients' completeness, the Grad-CAM layer, bad input, and the caller's model."""

import pytest
import torch
from torch import nn

from agnostic_saliency.errors import InputError
from agnostic_saliency.explain.methods import METHODS, attribute, find_last_conv, resolve_layer
from agnostic_saliency.models.spec import InputSpec


def test_every_method_gives_one_map_per_image(tiny_model, tiny_spec):
    images = torch.rand(5, 1, 8, 8)
    maps = attribute(tiny_model, tiny_spec, images, [0, 1, 2, 3, 0])
    assert list(maps) == list(METHODS)
    for method, picture in maps.items():
        assert picture.shape == (5, 8, 8), method
        assert torch.isfinite(picture).all(), method
        assert picture.abs().sum() > 0, method


def test_gradient_is_the_absolute_input_gradient_of_the_target_logit(tiny_model, tiny_spec):
    images = torch.rand(3, 1, 8, 8)
    targets = torch.tensor([2, 0, 1])
    maps = attribute(tiny_model, tiny_spec, images, targets, methods=["gradient"])["gradient"]
    x = images.clone().requires_grad_(True)
    tiny_model(x).gather(1, targets[:, None]).sum().backward()
    assert torch.allclose(maps, x.grad.abs()[:, 0], atol=1e-6)


def test_integrated_gradients_add_up_to_the_logit_gap(tiny_model, tiny_spec):
    """Completeness (Sundararajan et al. 2017): the attributions sum to f(x) - f(black)."""
    images = torch.rand(4, 1, 8, 8)
    targets = torch.tensor([0, 1, 2, 3])
    maps = attribute(tiny_model, tiny_spec, images, targets, methods=["integrated-gradients"], ig_steps=200)
    with torch.no_grad():
        gap = (tiny_model(images) - tiny_model(torch.zeros_like(images))).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(maps["integrated-gradients"].flatten(1).sum(1), gap, atol=2e-2 * gap.abs().max().item())


def test_normalisation_is_applied_on_the_way_in(tiny_model):
    """With a mean/std spec the gradient is the one of model((x - mean) / std): 1/std times it."""
    images = torch.rand(2, 1, 8, 8)
    plain = attribute(tiny_model, InputSpec((1, 8, 8)), (images - 0.5) / 0.25, [1, 1], methods=["gradient"])
    spec = InputSpec((1, 8, 8), mean=(0.5,), std=(0.25,))
    normalised = attribute(tiny_model, spec, images, [1, 1], methods=["gradient"])
    assert torch.allclose(normalised["gradient"], plain["gradient"] / 0.25, atol=1e-5)


def test_grad_cam_uses_the_last_conv_layer_or_the_given_one(tiny_model, tiny_spec):
    assert find_last_conv(tiny_model)[0] == "features.3"
    images = torch.rand(2, 1, 8, 8)
    last = attribute(tiny_model, tiny_spec, images, [0, 1], methods=["grad-cam"])["grad-cam"]
    first = attribute(tiny_model, tiny_spec, images, [0, 1], methods=["grad-cam"], layer="features.0")["grad-cam"]
    assert (last >= 0).all() and (first >= 0).all()  # ReLU'd, as in the paper
    assert not torch.allclose(last, first)
    with pytest.raises(InputError, match="no layer"):
        resolve_layer(tiny_model, "features.99")


def test_a_model_without_conv_gets_no_grad_cam_and_a_warning(tiny_spec):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    assert find_last_conv(mlp) is None
    with pytest.warns(UserWarning, match="no Grad-CAM"):
        maps = attribute(mlp, tiny_spec, torch.rand(2, 1, 8, 8), [0, 2])
    assert list(maps) == ["gradient", "integrated-gradients", "smoothgrad"]


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ["lime"]}, "unknown attribution method"),
    ({"images": torch.rand(2, 1, 9, 9)}, "images must be"),
    ({"targets": [0]}, "images must be"),
])
def test_bad_input(tiny_model, tiny_spec, kwargs, message):
    arguments = {"images": torch.rand(2, 1, 8, 8), "targets": [0, 1], **kwargs}
    with pytest.raises(InputError, match=message):
        attribute(tiny_model, tiny_spec, **arguments)


def test_the_callers_model_comes_back_as_given(tiny_model, tiny_spec):
    tiny_model.train()
    tiny_model.head.weight.requires_grad_(False)
    attribute(tiny_model, tiny_spec, torch.rand(2, 1, 8, 8), [0, 1])
    assert all(m.training for m in tiny_model.modules())
    assert not tiny_model.head.weight.requires_grad and tiny_model.head.bias.requires_grad
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in tiny_model.modules())


def test_torchvision_resnet18_at_64_pixels():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval()
    spec = InputSpec((3, 64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert find_last_conv(model)[0] == "layer4.1.conv2"
    maps = attribute(model, spec, torch.rand(2, 3, 64, 64), [0, 4], ig_steps=4, smoothgrad_samples=2)
    assert {m: tuple(p.shape) for m, p in maps.items()} == {m: (2, 64, 64) for m in METHODS}
