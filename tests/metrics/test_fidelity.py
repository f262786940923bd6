import pytest
import torch
from torch import nn

from agnostic_saliency.concepts import concept_matrix
from agnostic_saliency.metrics.fidelity import fooling_statistics, map_alone, measure_fidelity


class Brightness(nn.Module):
    """Three classes by mean brightness: dark (0), mid (1), bright (2)."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([20 * (0.33 - m), torch.zeros_like(m), 20 * (m - 0.66)], 1)


def by_hand(model, maps, samples, concept):
    """Fooling rate and mean concept probability with an explicit loop."""
    rates, confidences = [], []
    for rho in maps:
        hits, probability = 0, 0.0
        for x in samples:
            p = model((x + rho).clamp(0, 1)[None]).softmax(-1)[0]
            hits += int(p.argmax()) in concept
            probability += float(p[concept].sum())
        rates.append(hits / len(samples))
        confidences.append(probability / len(samples))
    return rates, confidences


def test_fooling_statistics_match_a_loop():
    model = Brightness()
    samples = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    maps = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 0.3, -0.4)])
    concepts = concept_matrix([[2], [2], [0, 1]], 3)
    rates, confidence = fooling_statistics(model, maps, samples, concepts, 0.0, 1.0, chunk=7)
    for k, concept in enumerate([[2], [2], [0, 1]]):
        expected_rate, expected_confidence = by_hand(model, maps[k : k + 1], samples, concept)
        assert rates[k] == pytest.approx(expected_rate[0])
        assert confidence[k] == pytest.approx(expected_confidence[0], rel=1e-5)
    # A brightening map fools the model into "bright"; no map does not.
    assert rates[1] > 0.9 and rates[0] < 0.1


def test_map_alone():
    model = Brightness()
    displayed = torch.stack([torch.full((1, 4, 4), 0.95), torch.full((1, 4, 4), 0.5)])
    label, confidence, inside = map_alone(model, displayed, concept_matrix([[2], [2]], 3))
    assert label == [2, 1]
    assert inside == [True, False]
    assert confidence[0] == pytest.approx(float(model(displayed[:1]).softmax(-1).max()))


def test_measure_fidelity_with_real_images():
    model = Brightness()
    fresh = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    real = torch.zeros(10, 1, 4, 4)
    real[:5] = 0.5
    maps = torch.full((1, 1, 4, 4), 0.3)
    result = measure_fidelity(model, maps, torch.ones(1, 1, 4, 4), concept_matrix([[2]], 3), fresh, 0, 1, real)
    # Real images at 0 + 0.3 stay mid; those at 0.5 + 0.3 become bright: half are fooled.
    assert result.real_fooling_rate == [pytest.approx(0.5)]
    assert result.map_alone_label == [2] and result.map_alone_in_concept == [True]
    assert set(result.to_dict()) == {"fooling_rate", "target_confidence", "real_fooling_rate",
                                     "real_target_confidence", "map_alone_label", "map_alone_confidence",
                                     "map_alone_in_concept"}
    without = measure_fidelity(model, maps, maps, concept_matrix([[2]], 3), fresh, 0, 1)
    assert without.real_fooling_rate is None and without.fooling_rate == result.fooling_rate
