"""Per-class signatures: balanced pools, the batched mask fit, the smallest sufficient region."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from agnostic_saliency.backdoor.signatures import (
    balanced_pool,
    blend_anomaly_index,
    box_spots,
    class_probabilities,
    compact_region,
    connected_parts,
    faint_blends,
    far_samples,
    fills_its_box,
    fit_patterns,
    fit_signatures,
    fitted_box,
    gradient_start,
    polished_pattern,
    smallest_box,
    smallest_region,
    weakest_blend,
    working_box,
)
from agnostic_saliency.backdoor.stamps import stamp_flips, stamped_share
from agnostic_saliency.method.distributions import make_distribution
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import FmnistLeNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"


def _model(name):
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / f"{name}.safetensors")))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class ByBrightness(torch.nn.Module):
    """Answers class 0 for dark and class 1 for bright samples, as a noise-loving model would."""

    def forward(self, x):
        mean = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - mean, mean - 0.5, torch.full_like(mean, -1.0)], 1) * 20


def test_balanced_pool_evens_out_the_models_answers():
    model = ByBrightness()
    generator = torch.Generator().manual_seed(0)
    # 90% bright, 10% dark candidates.
    candidates = torch.cat([0.8 + 0.1 * torch.rand(900, 1, 4, 4), 0.1 * torch.rand(100, 1, 4, 4)])
    pool = balanced_pool(model, candidates, 150, generator)
    answers = model(pool).argmax(1)
    assert len(pool) == 150
    assert (answers == 0).sum() == 75 and (answers == 1).sum() == 75


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


def test_far_samples_are_the_least_like_half_per_class():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    far = far_samples(probabilities, 0.5)
    assert far[:, 0].tolist() == [False, False, True, True]
    assert far[:, 1].tolist() == [True, True, False, False]


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


class CornerReader(torch.nn.Module):
    """Class 1 when the 4x4 top-left corner is bright on average, else class 0."""

    def forward(self, x):
        corner = x[:, 0, :4, :4].mean((1, 2))
        return torch.stack([0.5 - corner, corner - 0.5], 1) * 50


def test_connected_parts_labels_each_8_connected_part_once():
    region = torch.zeros(6, 6)
    region[0, 0] = region[1, 1] = 1  # diagonal neighbours: one part
    region[4:, 4:] = 1
    labels = connected_parts(region)
    assert labels[0, 0] == labels[1, 1] != labels[4, 4]
    assert len(labels.unique()) == 3 and (labels[region == 0] == 0).all()


def test_compact_region_fills_a_checkerboard_and_ignores_a_stray_pixel():
    samples = torch.zeros(32, 1, 12, 12)
    pattern = torch.ones(1, 12, 12)
    region = torch.zeros(12, 12)
    region[:4, :4] = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0  # the bright cells of a 4x4 checker
    region[10, 10] = 1  # a stray helper pixel
    box = compact_region(CornerReader(), region, pattern, samples, target=1)
    assert box[:4, :4].sum() == 16 and box.sum() == 16


def test_compact_region_keeps_the_region_when_the_box_would_not_flip_the_samples():
    samples = torch.zeros(32, 1, 12, 12)
    pattern = torch.zeros(1, 12, 12)  # a dark stamp never makes the corner bright
    region = torch.zeros(12, 12)
    region[:2, :2] = 1
    assert torch.equal(compact_region(CornerReader(), region, pattern, samples, target=1), region)


class ScatterReader(torch.nn.Module):
    """Class 1 only when four pixels nine apart, (1, 1), (1, 10), (10, 1) and (10, 10), are all
    bright: a class reached from a scatter of pixels, as an easy clean class is."""

    def forward(self, x):
        spots = x[:, 0, [1, 1, 10, 10], [1, 10, 1, 10]].min(1).values
        return torch.stack([0.5 - spots, spots - 0.5], 1) * 50


def test_smallest_box_is_the_trigger_for_a_compact_region_and_wide_for_a_scattered_one():
    samples = torch.zeros(16, 1, 12, 12)
    base = torch.full((16, 2), 0.5)
    pattern = torch.ones(1, 1, 12, 12)
    corner = torch.zeros(1, 12, 12)
    corner[0, :4, :4] = 1
    # the corner's mean passes 0.5 once a 3x3 box of it is bright
    assert smallest_box(CornerReader(), corner, pattern, [1], samples, base) == [9]
    scatter = torch.zeros(1, 12, 12)
    scatter[0, [1, 1, 10, 10], [1, 10, 1, 10]] = 1
    # the four spots fit only in a 10x10 box, however few pixels the region has
    assert smallest_box(ScatterReader(), scatter, pattern, [1], samples, base) == [100]
    dark = torch.zeros(1, 1, 12, 12)  # a stamp that never flips: wider than the image
    assert smallest_box(CornerReader(), corner, dark, [1], samples, base) == [12 * 12 + 1]


def test_smallest_box_finds_a_trigger_beside_a_denser_cluster_of_the_region():
    samples = torch.zeros(16, 1, 12, 12)
    base = torch.full((16, 2), 0.5)
    pattern = torch.ones(1, 1, 12, 12)
    region = torch.zeros(1, 12, 12)
    region[0, 6:10, 6:10] = 1  # a dense cluster of helper pixels the model does not look at
    region[0, 0, :3] = region[0, 1, 0] = region[0, 2, 0] = 1  # 5 of the trigger's 9 pixels (CornerReader)
    # the densest 3x3 spot is in the cluster and no box there flips anything; the next one is the trigger
    found = smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=3, every_side_up_to=16)
    assert found == [9]
    assert smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=1, every_side_up_to=16)[0] > 9
    # by halves alone, the search first tries a 6x6 box, whose spots all miss the corner, and steps over 3x3
    assert smallest_box(CornerReader(), region, pattern, [1], samples, base, placements=3)[0] > 9


def test_working_box_is_the_square_the_box_test_found_and_fills_its_box():
    samples = torch.zeros(16, 1, 12, 12)
    region = torch.zeros(12, 12)
    region[6:10, 6:10] = 1
    region[0, :3] = region[1, 0] = region[2, 0] = 1
    square = working_box(CornerReader(), region, torch.ones(1, 12, 12), samples, 1, side=3)
    assert square is not None and square[:3, :3].sum() == 9 and square.sum() == 9 and fills_its_box(square)
    assert not fills_its_box(region) and not fills_its_box(torch.zeros(4, 4))
    assert working_box(CornerReader(), region, torch.zeros(1, 12, 12), samples, 1, side=3) is None


def test_fitted_box_fits_the_pattern_inside_the_box_when_the_fitted_pattern_fails_there():
    samples = torch.zeros(16, 1, 12, 12)
    region = torch.zeros(12, 12)
    region[:4, :4] = 1
    dark = torch.zeros(1, 12, 12)  # the class's fitted pattern: stamped as it is, no box flips anything
    assert working_box(CornerReader(), region, dark, samples, 1, side=4) is None
    found = fitted_box(CornerReader(), region, dark, samples, samples, 1, 0.0, 1.0, largest_side=4, steps=60)
    assert found is not None
    pixels, mask, stamp, spent = found
    # 9 of the corner's 16 pixels bright pass its mean over 0.5; 4 do not
    assert pixels == 9 and mask[:3, :3].sum() == 9 and mask.sum() == 9
    assert stamp[0, :3, :3].min() > 0.5 and spent > 0
    assert fitted_box(CornerReader(), region, dark, samples, samples, 1, 0.0, 1.0, largest_side=2, steps=60) is None
    # under a memory cap the boxes are fitted a few per pass, to the same answer
    largest = [0]
    model = CornerReader()
    model.register_forward_hook(lambda _m, inputs, _o: largest.__setitem__(0, max(largest[0], len(inputs[0]))))
    capped = fitted_box(
        model,
        region,
        dark,
        samples,
        samples,
        1,
        0.0,
        1.0,
        largest_side=4,
        steps=60,
        batch_size=4,
        chunk=4,
        boxes_per_pass=1,
    )
    assert capped is not None and capped[0] == 9 and largest[0] == 4


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


def test_box_spots_are_the_densest_squares_that_do_not_overlap():
    region = torch.zeros(8, 8)
    region[:2, :2] = 1
    region[5, 5] = 1
    assert box_spots(region, 2, 3) == [(0, 0), (4, 4)]  # then nothing left with any of the region
    spots = box_spots(torch.ones(8, 8), 3, 4)
    squares = [{(top + i, left + j) for i in range(3) for j in range(3)} for top, left in spots]
    assert len(spots) == 4 and all(not a & b for n, a in enumerate(squares) for b in squares[n + 1 :])
    assert box_spots(torch.zeros(4, 4), 2, 3) == [(0, 0)]  # an empty region still gets one square


class BrightnessReader(torch.nn.Module):
    """Class 1 once the image's mean brightness passes 0.5."""

    def forward(self, x):
        mean = x.flatten(1).mean(1)
        return torch.stack([0.5 - mean, mean - 0.5], 1) * 50


def test_weakest_blend_is_the_faintest_whole_image_blend_that_flips():
    samples = torch.full((16, 1, 6, 6), 0.1)
    base = torch.full((16, 2), 0.5)
    bright, dark = torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6)
    # (1 - a) * 0.1 + a = 0.1 + 0.9 a passes 0.5 once a > 0.444: the grid's 0.45
    assert weakest_blend(BrightnessReader(), bright, [1, 1], samples, base) == [0.45, 0.45]
    # a dark pattern never brightens the image: no strength works
    assert weakest_blend(BrightnessReader(), dark, [1, 1], samples, base) == [None, None]
    # the share that must flip counts: half the samples already bright need no blend at all
    mixed = torch.cat([samples[:8], torch.full((8, 1, 6, 6), 0.9)])
    assert weakest_blend(BrightnessReader(), bright, [1], mixed, base, required=0.5) == [0.01]


def test_blend_anomaly_index_is_the_mad_index_of_log_strengths_ignoring_classes_without_one():
    strengths = [0.3, 0.32, 0.28, 0.3, 0.06, None, 0.35, 0.29]
    index = blend_anomaly_index(strengths)
    logs = np.log([s for s in strengths if s is not None])
    mad = 1.4826 * np.median(np.abs(logs - np.median(logs)))
    assert index[4] == pytest.approx((np.median(logs) - np.log(0.06)) / mad) and index[4] > 10
    assert index[5] == 0.0  # no working blend: not a faint one
    assert index[6] == 0.0  # a stronger blend than the median is on the harmless side
    # the same faint strength among widely spread blends stands out far less
    spread = blend_anomaly_index([0.06, 0.1, 0.2, 0.4, 0.8])
    assert 0 < spread[0] < 2
    assert blend_anomaly_index([0.1, None]) == [0.0, 0.0]  # one strength: nothing to compare


def test_a_faint_blend_is_faint_and_far_apart_from_every_other_class():
    compact = [False, False, False, True]
    # class 0 is faint and a third of the next class's strength: a blend
    assert faint_blends([0.06, 0.19, 0.3, None], compact, 0.14, 0.5) == [True, False, False, False]
    # an easy clean class, fainter than the rest but not far apart (0.12 against 0.19)
    assert faint_blends([0.12, 0.19, 0.3, None], compact, 0.14, 0.5) == [False, False, False, False]
    # a compact class is the box test's business, however faint its blend
    assert faint_blends([0.3, 0.19, 0.3, 0.05], compact, 0.14, 0.5) == [False, False, False, False]
    # too strong to be faint, however far apart
    assert faint_blends([0.2, 0.9, None, None], compact, 0.14, 0.5) == [False, False, False, False]


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
