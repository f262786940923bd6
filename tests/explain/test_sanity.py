"""The sanity checks: similarity measures, cascading parameter randomisation through Quantus
(layer order, the trained model against itself, maps that do change), and model similarity."""

import copy

import numpy as np
import pytest
import torch

from agnostic_saliency.explain.sanity import (
    AGNOSTIC,
    explain_function,
    model_similarity,
    parameter_randomisation,
    spearman,
    ssim,
)

FAST = dict(steps=3, refine=False, batch_size=4, eval_samples=8, progress=False, seed=0)
NAMES = list("abcd")


def test_spearman_and_ssim():
    rng = np.random.default_rng(0)
    a = rng.random(64)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # ranks only
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.zeros(64)) == 0.0
    assert ssim(a, a, (8, 8)) == pytest.approx(1.0)
    assert ssim(a, 2 * a + 1, (8, 8)) == pytest.approx(1.0)  # each map scaled to [0, 1] first
    assert ssim(a, rng.random(64), (8, 8)) < 0.5


def test_cascading_randomisation_goes_top_down_and_changes_the_maps(tiny_model, tiny_spec):
    torch.manual_seed(0)
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    before = copy.deepcopy(tiny_model.state_dict())
    scores = parameter_randomisation(tiny_model, tiny_spec, NAMES, images, labels,
                                     methods=["gradient", AGNOSTIC], agnostic_settings=FAST)
    assert set(scores) == {"gradient", AGNOSTIC}
    for method, measures in scores.items():
        layers = list(measures["spearman"])
        assert layers == ["original", "head", "features.3", "features.1", "features.0"], method
        assert list(measures["ssim"]) == layers
        assert measures["spearman"]["original"] == pytest.approx(1.0)  # deterministic: the same maps
        assert measures["spearman"]["features.0"] < 0.9, method
    # Quantus randomises a copy: the caller's weights are untouched
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_the_agnostic_map_is_one_map_per_class_computed_once_per_model(tiny_model, tiny_spec):
    explain = explain_function(AGNOSTIC, tiny_spec, NAMES, FAST)
    maps = explain(tiny_model, torch.rand(3, 1, 8, 8).numpy(), np.array([2, 2, 1]))
    assert maps.shape == (3, 1, 8, 8)
    assert np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[0], maps[2])
    again = explain(tiny_model, torch.rand(1, 1, 8, 8).numpy(), np.array([2]))
    assert np.array_equal(again[0], maps[0])  # input-agnostic: another image, the same map


def test_model_similarity_of_a_model_with_itself_and_with_a_random_one(tiny_model, tiny_spec, tiny_conv_class):
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    same = model_similarity(tiny_model, copy.deepcopy(tiny_model), tiny_spec, NAMES, images, labels,
                            methods=["gradient", "grad-cam"])
    assert same["gradient"]["spearman"] == pytest.approx(1.0) and same["grad-cam"]["ssim"] == pytest.approx(1.0)
    torch.manual_seed(7)
    other = model_similarity(tiny_model, tiny_conv_class().eval(), tiny_spec, NAMES, images, labels,
                             methods=["gradient"])
    assert other["gradient"]["spearman"] < 0.9
