"""Per-class signatures: the batched mask fit, its far batches and its gradient start."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from agnostic_saliency.backdoor.pool import balanced_pool, class_probabilities
from agnostic_saliency.backdoor.regions import (
    smallest_region,
)
from agnostic_saliency.backdoor.signatures import fit_signatures, gradient_start
from agnostic_saliency.method.distributions import make_distribution
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import FmnistLeNet
from tests.backdoor.readers import ByBrightness

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"


def _model(name):
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / f"{name}.safetensors")))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _patch_trojan_pools():
    """The fixture LeNet with a 3x3 bottom-right trigger (target 0), a balanced pool of 512 shapes
    to fit on and 256 held out, and the generator that drew them (the fit continues it)."""
    model = _model("lenet-patch3-br-white")
    generator = torch.Generator().manual_seed(0)
    shapes = make_distribution("shapes", InputSpec((1, 28, 28))).sample(2048, generator)
    pool = balanced_pool(model, shapes, 768, generator)
    return model, generator, pool[:512], pool[512:]


def test_fit_finds_the_small_trigger_of_a_patch_trojan():
    model, generator, samples, held_out = _patch_trojan_pools()
    fitted = fit_signatures(model, samples, 10, 0.0, 1.0, steps=100, batch_size=16, classes=[0, 1], generator=generator)
    assert fitted.masks.shape == (2, 28, 28) and fitted.patterns.shape == (2, 1, 28, 28)
    assert fitted.sample_gradients == 100 * 16 * 2
    assert 0 <= fitted.masks.min() and fitted.masks.max() <= 1
    # The target's mask is far smaller than a clean class's, and is densest in the trigger's corner.
    assert fitted.mask_l1[0] < 0.5 * fitted.mask_l1[1]
    corner_density = fitted.masks[0, 20:, 20:].mean() / fitted.masks[0].mean()
    assert corner_density > 2
    probabilities = class_probabilities(model, held_out)
    sizes, hard = smallest_region(model, fitted.masks, fitted.patterns, [0, 1], held_out, probabilities)
    assert sizes[0] <= 36 < sizes[1]
    assert hard[0].sum() == sizes[0] and hard[0][20:, 20:].sum() >= 9


def test_far_batches_still_find_the_patch_trojans_trigger():
    model, generator, samples, held_out = _patch_trojan_pools()
    fitted = fit_signatures(
        model, samples, 10, 0.0, 1.0, steps=100, batch_size=16, classes=[0, 1], generator=generator, far_batches=True
    )
    assert fitted.sample_gradients == 100 * 16 * 2
    assert fitted.mask_l1[0] < 0.5 * fitted.mask_l1[1]
    sizes, hard = smallest_region(
        model, fitted.masks, fitted.patterns, [0, 1], held_out, class_probabilities(model, held_out)
    )
    assert sizes[0] <= 36 < sizes[1] and hard[0][20:, 20:].sum() >= 9


class Recording(ByBrightness):
    """ByBrightness that keeps the mean brightness of every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.flatten(1).mean(1))
        return super().forward(x)


def test_far_batches_show_each_class_only_its_far_samples():
    model = Recording()
    samples = torch.linspace(0, 1, 64).view(64, 1, 1, 1).expand(64, 1, 4, 4).contiguous()
    probabilities = class_probabilities(model, samples)
    model.seen.clear()
    # A vanishing mask leaves the samples as they are, so what the model sees is what was drawn.
    fit_signatures(
        model,
        samples,
        3,
        0.0,
        1.0,
        steps=5,
        batch_size=8,
        classes=[1],
        probabilities=probabilities,
        mask_init=-20.0,
        far_batches=True,
    )
    seen = torch.cat(model.seen)
    assert len(seen) == 5 * 8 + 32 and seen.max() < 0.5  # class 1 (bright) sees only the dark half


class OnePixel(torch.nn.Module):
    """Class 1's logit reads pixel (2, 5) alone; class 0's reads the whole image's mean."""

    def forward(self, x):
        return torch.stack([x.flatten(1).mean(1), 10 * x[:, 0, 2, 5]], 1)


def test_gradient_start_peaks_where_the_class_is_sensitive_and_starts_its_pattern_downhill():
    samples = torch.rand(64, 1, 8, 8)
    probabilities = OnePixel()(samples).softmax(1)
    masks, patterns, spent = gradient_start(OnePixel(), samples, [1, 0], probabilities, base=-3.0, gain=1.0)
    assert masks.shape == (2, 1, 8, 8) and patterns.shape == (2, 1, 8, 8)
    assert spent == 2 * 32  # the far half of the samples, per class
    assert masks[0].flatten().argmax() == 2 * 8 + 5 and masks[0].max() > -3.0 + 3
    assert patterns[0, 0, 2, 5] == 1  # brightening that pixel raises class 1
    # Class 0 is equally sensitive everywhere else (through the softmax it also feels pixel (2, 5)):
    # a flat start just below the base.
    rest = torch.cat([masks[1].flatten()[: 2 * 8 + 5], masks[1].flatten()[2 * 8 + 6 :]])
    assert rest.std() < 1e-5 and -3.5 < rest.mean() < -3.0
