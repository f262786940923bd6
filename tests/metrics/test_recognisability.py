import numpy as np
import pytest
import torch
from torch import nn

from agnostic_saliency.metrics.recognisability import (
    class_means,
    judge_reading,
    measure_recognisability,
    pearson_matrix,
)


def test_pearson_matrix_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 4, 4, generator=generator)
    references = torch.randn(5, 2, 4, 4, generator=generator)
    references[0] = 3 * maps[1] + 1  # perfectly correlated
    references[1] = -maps[2]  # perfectly anti-correlated
    matrix = pearson_matrix(maps, references)
    assert matrix.shape == (3, 5)
    full = np.corrcoef(np.concatenate([maps.flatten(1).numpy(), references.flatten(1).numpy()]))
    np.testing.assert_allclose(matrix.numpy(), full[:3, 3:], atol=1e-6)
    assert float(matrix[1, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(matrix[2, 1]) == pytest.approx(-1.0, abs=1e-6)


def test_pearson_of_constant_map_is_zero_not_nan():
    matrix = pearson_matrix(torch.ones(1, 1, 3, 3), torch.randn(2, 1, 3, 3))
    assert torch.all(matrix == 0)


def test_class_means():
    images = torch.arange(6.0).view(6, 1, 1, 1)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    means = class_means(images, labels, 3)
    assert means.flatten().tolist() == [1.0, 2.5, 4.0]


def test_measure_with_means_finds_own_class():
    generator = torch.Generator().manual_seed(1)
    means = torch.rand(4, 1, 6, 6, generator=generator)
    maps = torch.stack([means[2] + 0.05 * torch.randn(1, 6, 6, generator=generator), means[0]])
    result = measure_recognisability(maps, maps, [[2], [1, 3]], means=means)
    assert result.best_correlated_class == [2, 0]
    assert result.correlates_with_own_class == [True, False]
    assert len(result.mean_image_correlation) == 2 and len(result.mean_image_correlation[0]) == 4
    assert result.judge_label is None
    assert set(result.to_dict()) >= {"judge_label", "best_correlated_class"}


def test_judge_reading():
    class BrightnessJudge(nn.Module):
        def forward(self, x):  # class 1 for bright pictures, 0 for dark ones
            m = x.flatten(1).mean(1)
            return torch.stack([10 * (0.5 - m), 10 * (m - 0.5)], 1)

    displayed = torch.stack([torch.full((1, 3, 3), 0.9), torch.full((1, 3, 3), 0.1)])
    label, confidence, reads = judge_reading(BrightnessJudge(), displayed, [[1], [1]])
    assert label == [1, 0]
    assert reads == [True, False]
    assert confidence[0] == pytest.approx(torch.sigmoid(torch.tensor(8.0)).item(), rel=1e-5)
    result = measure_recognisability(displayed, displayed, [[0], [0, 1]], judge=BrightnessJudge())
    assert result.judge_reads_concept == [False, True]
    assert result.best_correlated_class is None
