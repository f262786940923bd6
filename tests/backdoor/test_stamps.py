"""The stamp's flip tests: every sample counted once, and early stopping that agrees."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_saliency.backdoor.stamps import stamp_flips, stamped_share
from tests.backdoor.readers import BrightnessReader


@settings(max_examples=25, deadline=None)
@given(count=st.integers(0, 40), chunk=st.integers(1, 50), seed=st.integers(0, 1000))
def test_stamped_share_counts_every_sample_once_whatever_the_chunk(count, chunk, seed):
    generator = torch.Generator().manual_seed(seed)
    samples = torch.rand(count, 1, 6, 6, generator=generator)
    mask = (torch.rand(6, 6, generator=generator) > 0.7).float()
    pattern = torch.ones(1, 6, 6)
    stamped = (1 - mask) * samples + mask * pattern
    expected = int((stamped.flatten(1).mean(1) > 0.5).sum()) / max(count, 1)
    assert stamped_share(BrightnessReader(), mask, pattern, samples, 1, chunk) == expected


class CountingReader(BrightnessReader):
    """BrightnessReader that counts the samples it is shown."""

    seen = 0

    def forward(self, x):
        self.seen += len(x)
        return super().forward(x)


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(1, 120),
    required=st.sampled_from([0.5, 0.8, 0.9, 1.0, 1 / 3]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_the_early_stopping_flip_test_answers_as_counting_every_sample_would(count, required, density, seed):
    generator = torch.Generator().manual_seed(seed)
    samples = torch.rand(count, 1, 6, 6, generator=generator)
    mask = (torch.rand(6, 6, generator=generator) < density).float()
    pattern = torch.ones(1, 6, 6)
    reader = CountingReader()
    full = stamped_share(BrightnessReader(), mask, pattern, samples, 1) >= required
    assert stamp_flips(reader, mask, pattern, samples, 1, required) == full
    assert reader.seen <= count


def test_a_stamp_that_clearly_fails_is_decided_on_a_fraction_of_the_samples():
    samples = torch.zeros(320, 1, 6, 6)  # dark: nothing flips without a mask
    reader = CountingReader()
    assert not stamp_flips(reader, torch.zeros(6, 6), torch.ones(1, 6, 6), samples, 1, 0.8)
    assert reader.seen <= 96  # 65 misses already rule out 256 hits of 320
