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
    sign_trigger,
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


def test_sign_triggers_stamp_only_their_own_pixels():
    plus = sign_trigger("plus", size=5, position=(3, 20))
    assert plus.kind == "patch" and plus.position == (3, 20) and plus.pattern_name == "plus"
    expected = torch.zeros(28, 28)
    expected[5, 20:25] = 1  # the middle row
    expected[3:8, 22] = 1  # the middle column
    assert torch.equal(plus.mask, expected) and plus.mask.sum() == 9
    x = torch.rand(2, 1, 28, 28) * 0.5
    out = plus.stamp(x)
    assert torch.all(out[:, :, expected == 1] == 1)
    assert torch.equal(out[:, :, expected == 0], x[:, :, expected == 0])  # the square's corners too
    cross = sign_trigger("x", size=5, position=(0, 0))
    assert cross.mask.sum() == 9 and cross.mask[2, 2] == 1 and cross.mask[0, 4] == 1 and cross.mask[0, 2] == 0


@pytest.mark.parametrize("sign, rows, cols", [("vline", 8, 1), ("hline", 1, 8)])
def test_line_triggers_are_one_pixel_wide(sign, rows, cols):
    line = sign_trigger(sign, size=8, position=(10, 2))
    on = line.mask.nonzero()
    assert line.mask.sum() == 8
    assert on[:, 0].min() == 10 and on[:, 0].max() == 10 + rows - 1
    assert on[:, 1].min() == 2 and on[:, 1].max() == 2 + cols - 1
    assert torch.equal(line.pattern[0], line.mask)  # white where stamped


def test_bad_signs_are_rejected():
    for kwargs in (
        dict(sign="star"),
        dict(sign="plus", size=4),  # no middle pixel
        dict(sign="vline", size=8, position=(21, 0)),  # runs off the bottom
        dict(sign="x", size=1),
        dict(sign="plus", position="top-left"),
    ):
        with pytest.raises(InputError):
            sign_trigger(**kwargs)


def test_waves_blend_is_smooth_and_low_frequency():
    waves = blend_trigger(alpha=0.15, pattern="waves")
    stripes = blend_trigger(alpha=0.15, pattern="stripes")
    pattern = waves.pattern[0]
    assert pattern.min() == 0 and pattern.max() == 1
    assert torch.equal(waves.pattern, blend_trigger(pattern="waves", seed=9).pattern)  # no randomness
    # A neighbouring pixel differs by at most a period-14 cosine's step; stripes (period 6) change faster.
    step = max((pattern[1:] - pattern[:-1]).abs().max(), (pattern[:, 1:] - pattern[:, :-1]).abs().max())
    assert step < 0.25
    assert (stripes.pattern[0, :, 1:] - stripes.pattern[0, :, :-1]).abs().max() > 1.5 * step
    # Period 14: the texture repeats every 14 pixels each way, and half a period inverts it.
    assert torch.allclose(pattern[:14, :14], pattern[14:, 14:], atol=1e-5)
    assert torch.allclose(pattern[:7, :14], 1 - pattern[7:14, :14], atol=1e-5)


def test_blobs_blend_is_smooth_seeded_and_spans_the_range():
    blobs = blend_trigger(alpha=0.15, pattern="blobs", seed=3)
    pattern = blobs.pattern[0]
    assert pattern.min() == 0 and pattern.max() == 1
    assert torch.equal(blobs.pattern, blend_trigger(pattern="blobs", seed=3).pattern)
    assert not torch.equal(blobs.pattern, blend_trigger(pattern="blobs", seed=4).pattern)
    assert blobs.seed == 3 and blobs.kind == "blend" and float(blobs.mask.max()) == pytest.approx(0.15)
    # Smooth: neighbours differ far less than in the random blend it is made from.
    step = max((pattern[1:] - pattern[:-1]).abs().max(), (pattern[:, 1:] - pattern[:, :-1]).abs().max())
    noisy = blend_trigger(pattern="random", seed=3).pattern[0]
    assert step < 0.3 < (noisy[:, 1:] - noisy[:, :-1]).abs().max()


def test_moved_trigger_keeps_its_pattern_and_offsets_keep_it_inside():
    trigger = patch_trigger(3, (0, 25), "random", seed=4)
    offsets = trigger.offsets()
    assert (0, 0) in offsets and len(offsets) == 26 * 26  # a 3x3 patch has 26 places per axis on 28
    assert all(dx <= 0 for _, dx in offsets)  # flush right: it can only move left
    moved = trigger.moved(5, -7)
    assert moved.position == (5, 18)
    assert torch.equal(moved.mask[5:8, 18:21], trigger.mask[0:3, 25:28]) and moved.mask.sum() == 9
    assert torch.equal(moved.pattern[:, 5:8, 18:21], trigger.pattern[:, 0:3, 25:28])
