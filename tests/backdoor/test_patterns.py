"""Patterns fitted under a fixed mask: the trigger's polish."""

import torch

from agnostic_saliency.backdoor.patterns import fit_patterns, polished_pattern
from agnostic_saliency.backdoor.stamps import stamped_share
from tests.backdoor.readers import CornerReader


def test_fit_patterns_changes_the_pattern_only_under_each_mask():
    samples = torch.zeros(16, 1, 12, 12)
    masks = torch.zeros(2, 12, 12)
    masks[0, :4, :4] = 1  # the corner the model reads
    masks[1, 6:, 6:] = 1  # a square it never reads
    grey = torch.full((1, 12, 12), 0.5)
    fitted, spent = fit_patterns(CornerReader(), masks, grey, samples, 1, 0.0, 1.0, steps=20, batch_size=4)
    assert fitted.shape == (2, 1, 12, 12) and spent == 20 * 2 * 4
    assert fitted[0, 0, :4, :4].min() > 0.6  # the corner brightened well past class 1's edge (0.5)
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[:4, :4] = False
    assert torch.allclose(fitted[0, 0][outside], grey[0][outside], atol=1e-4)  # no gradient outside the mask
    assert torch.allclose(fitted[1], grey, atol=1e-4)  # a mask the model never reads learns nothing


class FlippedCornerReader(CornerReader):
    """CornerReader, with the classes swapped for samples whose bottom-right pixel is bright."""

    def forward(self, x):
        logits = super().forward(x)
        flipped = (x[:, 0, 11, 11] > 0.5)[:, None]
        return torch.where(flipped, logits.flip(1), logits)


def test_polished_pattern_makes_a_recovered_trigger_work_and_keeps_a_better_one():
    samples = torch.rand(64, 1, 12, 12) * 0.4
    mask = torch.zeros(12, 12)
    mask[:4, :4] = 1
    # a recovered trigger with the right mask and a pattern too grey to flip most samples
    grey = torch.full((1, 12, 12), 0.45)
    before = stamped_share(CornerReader(), mask, grey, samples, 1)
    pattern, kept, spent = polished_pattern(
        CornerReader(), mask, grey, samples[:32], samples[32:], 1, 0.0, 1.0, steps=30, batch_size=8
    )
    assert kept and spent == 30 * 8
    assert stamped_share(CornerReader(), mask, pattern, samples, 1) == 1.0 > before
    assert torch.equal(pattern[0, 6:, 6:], grey[0, 6:, 6:])  # outside the mask, as it was
    # a refit that flips fewer held-out samples than the pattern it replaces is dropped: here the
    # held-out samples want the corner dark, the fit samples bright
    fit, held = torch.zeros(32, 1, 12, 12), torch.zeros(32, 1, 12, 12)
    held[:, 0, 11, 11] = 1
    dark = torch.full((1, 12, 12), 0.4)
    assert stamped_share(FlippedCornerReader(), mask, dark, held, 1) == 1.0
    unchanged, kept, _ = polished_pattern(
        FlippedCornerReader(), mask, dark, fit, held, 1, 0.0, 1.0, steps=30, batch_size=8
    )
    assert not kept and torch.equal(unchanged, dark)
    assert polished_pattern(CornerReader(), mask, grey, samples[:32], samples[32:], 1, 0.0, 1.0, steps=0) == (
        grey,
        False,
        0,
    )
