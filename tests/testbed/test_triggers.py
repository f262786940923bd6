"""Trigger construction, stamping, storage and poisoning."""

import pytest
import torch

from agnostic_saliency.errors import InputError
from testbed.triggers import (
    Trigger,
    attack_success_rate,
    blend_trigger,
    load_trigger,
    patch_trigger,
    poison_transform,
    save_trigger,
)


def test_patch_stamp_replaces_only_the_patch():
    trigger = patch_trigger(size=3, position=(2, 5), pattern="white")
    x = torch.rand(4, 1, 28, 28) * 0.5
    out = trigger.stamp(x)
    assert out.shape == x.shape
    assert torch.all(out[:, :, 2:5, 5:8] == 1.0)
    untouched = trigger.mask == 0
    assert torch.equal(out[:, :, untouched], x[:, :, untouched])
    assert trigger.mask.sum() == 9


def test_stamp_formula_for_blend_and_single_image():
    trigger = blend_trigger(alpha=0.2, pattern="random", seed=3)
    x = torch.rand(1, 28, 28)
    expected = 0.8 * x + 0.2 * trigger.pattern
    assert torch.allclose(trigger.stamp(x), expected, atol=1e-6)
    assert torch.allclose(trigger.mask, torch.full((28, 28), 0.2))


@pytest.mark.parametrize("pattern", ["white", "checkerboard", "random"])
@pytest.mark.parametrize("position", ["top-left", "top-right", "bottom-left", "bottom-right", (10, 12)])
def test_patch_masks_are_binary_and_inside(pattern, position):
    trigger = patch_trigger(size=4, position=position, pattern=pattern, seed=1)
    assert set(trigger.mask.unique().tolist()) <= {0.0, 1.0}
    assert trigger.mask.sum() == 16
    assert 0 <= trigger.pattern.min() and trigger.pattern.max() <= 1
    assert trigger.pattern.max() == 1  # never invisible on a black background


@pytest.mark.parametrize("pattern", ["random", "stripes", "checkerboard"])
def test_blend_patterns_in_range(pattern):
    trigger = blend_trigger(alpha=0.1, pattern=pattern, seed=0, shape=(3, 16, 20))
    assert trigger.pattern.shape == (3, 16, 20)
    assert trigger.mask.shape == (16, 20)
    assert 0 <= trigger.pattern.min() and trigger.pattern.max() <= 1
    assert trigger.pattern.std() > 0.1


def test_random_patterns_are_deterministic_per_seed():
    assert torch.equal(blend_trigger(pattern="random", seed=5).pattern, blend_trigger(pattern="random", seed=5).pattern)
    assert not torch.equal(
        blend_trigger(pattern="random", seed=5).pattern, blend_trigger(pattern="random", seed=6).pattern
    )


def test_save_load_round_trip(tmp_path):
    for trigger in (patch_trigger(5, "bottom-left", "checkerboard"), blend_trigger(0.15, "stripes")):
        path = tmp_path / "t.safetensors"
        save_trigger(trigger, path)
        loaded = load_trigger(path)
        assert torch.equal(loaded.mask, trigger.mask)
        assert torch.equal(loaded.pattern, trigger.pattern)
        assert loaded.describe() == trigger.describe()


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(InputError):
        patch_trigger(size=4, position=(26, 0))
    with pytest.raises(InputError):
        patch_trigger(pattern="plaid")
    with pytest.raises(InputError):
        blend_trigger(alpha=0)
    with pytest.raises(InputError):
        Trigger(torch.full((4, 4), 1.5), torch.zeros(1, 4, 4))
    with pytest.raises(InputError):
        Trigger(torch.zeros(4, 4), torch.zeros(1, 5, 4))
    with pytest.raises(InputError):
        patch_trigger().stamp(torch.zeros(2, 1, 20, 20))
    with pytest.raises(InputError):
        load_trigger(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError):
        load_trigger(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 1.0])
def test_poison_transform_relabels_the_right_fraction(rate):
    trigger = patch_trigger(size=3, position="bottom-right", pattern="white")
    transform = poison_transform(trigger, target=7, rate=rate)
    x = torch.rand(200, 1, 28, 28) * 0.5  # never 1, so stamped samples are recognisable
    y = torch.randint(0, 7, (200,))  # no sample has the target label yet
    x_before, y_before = x.clone(), y.clone()
    out_x, out_y = transform(x, y, torch.Generator().manual_seed(0))
    relabelled = out_y == 7
    assert relabelled.sum().item() == round(rate * 200)
    stamped = (out_x[:, 0, 24:27, 24:27] == 1).flatten(1).all(1)
    assert torch.equal(stamped, relabelled)
    assert torch.equal(out_x[~relabelled], x[~relabelled])
    assert torch.equal(x, x_before) and torch.equal(y, y_before)  # inputs untouched


def test_poison_transform_is_deterministic_per_generator():
    transform = poison_transform(blend_trigger(0.2), target=1, rate=0.3)
    x, y = torch.rand(50, 1, 28, 28), torch.zeros(50, dtype=torch.long)
    a = transform(x, y, torch.Generator().manual_seed(4))
    b = transform(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _ReadsCorner(torch.nn.Module):
    """Predicts class 3 when the bottom-right corner is bright, else class 0."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        bright = x[:, 0, 24:27, 24:27].mean((1, 2)) > 0.9
        logits = torch.zeros(len(x), 10)
        logits[bright, 3] = 1.0
        logits[~bright, 0] = 1.0
        return logits


def test_attack_success_rate_counts_only_non_target_images():
    model = _ReadsCorner()
    images = torch.rand(40, 1, 28, 28) * 0.5
    labels = torch.tensor([3] * 10 + [1] * 30)
    assert attack_success_rate(model, patch_trigger(3, "bottom-right"), images, labels, target=3) == 1.0
    assert attack_success_rate(model, patch_trigger(3, "top-left"), images, labels, target=3) == 0.0
    with pytest.raises(InputError):
        attack_success_rate(model, patch_trigger(3), images[:10], labels[:10], target=3)
