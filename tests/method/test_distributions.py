import pytest
import torch

from agnostic_saliency.errors import InputError
from agnostic_saliency.method.distributions import (
    DEFAULT_DISTRIBUTION,
    CallableDistribution,
    Distribution,
    GaussianNoise,
    ImageDistribution,
    Mixture,
    UniformNoise,
    make_distribution,
)
from agnostic_saliency.models.spec import InputSpec

SPEC = InputSpec((2, 6, 5), value_range=(-1.0, 3.0))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Constant(Distribution):
    def __init__(self, spec, value):
        super().__init__(spec)
        self.value = value

    def sample(self, n, generator, device="cpu"):
        return torch.full((n, *self.spec.shape), float(self.value), device=device)


@pytest.mark.parametrize("name", ["uniform", "uniform-flat", "gaussian"])
def test_noise_shape_range_and_seed(name):
    source = make_distribution(name, SPEC)
    a = source.sample(64, gen(1))
    b = source.sample(64, gen(1))
    c = source.sample(64, gen(2))
    assert a.shape == (64, 2, 6, 5)
    assert a.dtype == torch.float32
    assert a.min() >= -1.0 and a.max() <= 3.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # The noise uses the range, not just a corner of it.
    assert a.max() - a.min() > 0.5 * SPEC.span


def test_uniform_brightness_varies_per_sample():
    spec = InputSpec((1, 16, 16))
    varied = UniformNoise(spec, vary_brightness=True).sample(200, gen())
    flat = UniformNoise(spec, vary_brightness=False).sample(200, gen())
    varied_means = varied.flatten(1).mean(1)
    flat_means = flat.flatten(1).mean(1)
    # Flat noise: every sample's mean is close to mid-range; varied: dark and bright samples.
    assert flat_means.std() < 0.05
    assert varied_means.std() > 0.1
    assert varied_means.min() < 0.3 and varied_means.max() > 0.7
    # Contrast varies too: some samples are nearly flat, some span most of the range.
    spread = varied.flatten(1).amax(1) - varied.flatten(1).amin(1)
    assert spread.min() < 0.3 and spread.max() > 0.8


def test_gaussian_brightness_varies_per_sample():
    means = GaussianNoise(InputSpec((1, 16, 16))).sample(200, gen()).flatten(1).mean(1)
    assert means.std() > 0.1


def test_describe_names():
    assert make_distribution("uniform", SPEC).describe() == "uniform"
    assert make_distribution("uniform-flat", SPEC).describe() == "uniform-flat"
    assert make_distribution(None, SPEC).describe() == make_distribution(DEFAULT_DISTRIBUTION, SPEC).describe()
    assert make_distribution(None, SPEC).describe() != "uniform"
    assert make_distribution("uniform+gaussian", SPEC).describe() == "uniform+gaussian"


def test_instance_passes_through():
    source = Constant(SPEC, 0.5)
    assert make_distribution(source, SPEC) is source


def test_mixture_weights_choose_parts():
    low, high = Constant(SPEC, -1.0), Constant(SPEC, 3.0)
    only_low = Mixture(SPEC, [low, high], weights=[1, 0]).sample(50, gen())
    assert torch.all(only_low == -1.0)
    both = Mixture(SPEC, [low, high]).sample(400, gen())
    values = both.flatten(1)[:, 0]
    share_high = (values == 3.0).float().mean()
    assert set(values.unique().tolist()) == {-1.0, 3.0}
    assert 0.4 < share_high < 0.6
    skewed = Mixture(SPEC, [low, high], weights=[1, 3]).sample(400, gen()).flatten(1)[:, 0]
    assert 0.65 < (skewed == 3.0).float().mean() < 0.85


def test_mixture_from_names_and_reproducible():
    mixture = make_distribution("uniform+gaussian", SPEC)
    assert isinstance(mixture, Mixture)
    a, b = mixture.sample(32, gen(5)), mixture.sample(32, gen(5))
    assert torch.equal(a, b)
    assert a.shape == (32, 2, 6, 5)
    assert a.min() >= -1 and a.max() <= 3


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 2.0], [0.0, 0.0]])
def test_mixture_bad_weights(weights):
    with pytest.raises(InputError):
        Mixture(SPEC, [Constant(SPEC, 0), Constant(SPEC, 1)], weights=weights)


def test_mixture_needs_parts():
    with pytest.raises(InputError):
        Mixture(SPEC, [])


def test_image_distribution_draws_given_images():
    spec = InputSpec((1, 4, 4))
    values = [0.1, 0.4, 0.9]
    images = torch.stack([torch.full((1, 4, 4), v) for v in values])
    images[:, :, :, 0] = 0.0  # asymmetric, so a flip is visible
    source = ImageDistribution(spec, images, max_shift=0)
    batch = source.sample(60, gen())
    assert batch.shape == (60, 1, 4, 4)
    originals = list(images) + [im.flip(-1) for im in images]
    flipped = 0
    for sample in batch:
        matches = [torch.equal(sample, o) for o in originals]
        assert any(matches)
        flipped += any(matches[3:])
    assert 10 < flipped < 50
    drawn = {round(float(s.max()), 3) for s in batch}
    assert drawn == {0.1, 0.4, 0.9}


def test_image_distribution_shift_keeps_range_and_shape():
    spec = InputSpec((1, 6, 6))
    images = torch.rand(5, 1, 6, 6, generator=gen())
    batch = ImageDistribution(spec, images, max_shift=2).sample(20, gen())
    assert batch.shape == (20, 1, 6, 6)
    assert batch.min() >= 0 and batch.max() <= 1


def test_images_distribution_needs_images_and_shape():
    with pytest.raises(InputError, match="images"):
        make_distribution("images", SPEC)
    with pytest.raises(InputError):
        ImageDistribution(SPEC, torch.zeros(3, 1, 6, 5))
    with pytest.raises(InputError):
        ImageDistribution(SPEC, torch.zeros(0, 2, 6, 5))
    images = torch.zeros(3, 2, 6, 5)
    mixed = make_distribution("uniform+images", SPEC, images=images)
    assert isinstance(mixed, Mixture)
    assert mixed.describe() == "uniform+images"


def test_callable_distribution_is_checked_and_clamped():
    def good(n, generator):
        return 10 * torch.randn(n, 2, 6, 5, generator=generator)

    source = make_distribution(good, SPEC)
    assert isinstance(source, CallableDistribution)
    batch = source.sample(8, gen())
    assert batch.shape == (8, 2, 6, 5)
    assert batch.min() == -1.0 and batch.max() == 3.0  # clamped to the valid range
    assert source.describe() == "good"

    with pytest.raises(InputError, match="must return"):
        make_distribution(lambda n, g: torch.zeros(n, 1, 6, 5), SPEC).sample(4, gen())
    with pytest.raises(InputError, match="must return"):
        make_distribution(lambda n, g: torch.zeros(n + 1, 2, 6, 5), SPEC).sample(4, gen())
    with pytest.raises(InputError, match="list"):
        make_distribution(lambda n, g: [0.0] * n, SPEC).sample(4, gen())


@pytest.mark.parametrize("name", ["nosuch", "uniform+nosuch", "Gauss"])
def test_unknown_names(name):
    with pytest.raises(InputError, match="unknown distribution"):
        make_distribution(name, SPEC)
