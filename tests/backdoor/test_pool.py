"""The scan's samples: balanced over the model's answers, and each class's far ones."""

import torch

from agnostic_saliency.backdoor.pool import balanced_pool, far_samples
from tests.backdoor.readers import ByBrightness


def test_balanced_pool_evens_out_the_models_answers():
    model = ByBrightness()
    generator = torch.Generator().manual_seed(0)
    # 90% bright, 10% dark candidates.
    candidates = torch.cat([0.8 + 0.1 * torch.rand(900, 1, 4, 4), 0.1 * torch.rand(100, 1, 4, 4)])
    pool = balanced_pool(model, candidates, 150, generator)
    answers = model(pool).argmax(1)
    assert len(pool) == 150
    assert (answers == 0).sum() == 75 and (answers == 1).sum() == 75


def test_far_samples_are_the_least_like_half_per_class():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    far = far_samples(probabilities, 0.5)
    assert far[:, 0].tolist() == [False, False, True, True]
    assert far[:, 1].tolist() == [True, True, False, False]
