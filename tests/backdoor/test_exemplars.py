from pathlib import Path

import torch
from safetensors.torch import load_file

from agnostic_saliency.backdoor.exemplars import class_exemplars, exemplar_quality
from agnostic_saliency.method.distributions import make_distribution
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import FmnistLeNet
from agnostic_saliency.models.spec import NormalizedModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"
SPEC = InputSpec((1, 28, 28))


def _model():
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / "lenet-clean-0.safetensors")))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return NormalizedModel(model.eval(), SPEC)


def test_exemplars_are_confident_members_of_every_class_in_turn():
    model = _model()
    source = make_distribution("shapes", SPEC)
    raw = source.sample(60, torch.Generator().manual_seed(3))
    before, _ = exemplar_quality(model, raw, torch.arange(60) % 10)
    exemplars, labels, spent = class_exemplars(model, source, 60, 10, 0.0, 1.0, torch.Generator().manual_seed(3))
    assert labels.tolist() == [i % 10 for i in range(60)]
    assert exemplars.shape == (60, 1, 28, 28)
    assert exemplars.min() >= 0 and exemplars.max() <= 1
    hit, confidence = exemplar_quality(model, exemplars, labels)
    assert before < 0.5  # raw shapes are not already their assigned class...
    assert hit >= 0.95 and confidence >= 0.9  # ...the nudged exemplars are
    assert 0 < spent <= 60 * 30


def test_zero_steps_leave_the_samples_as_drawn():
    source = make_distribution("shapes", SPEC)
    exemplars, _, spent = class_exemplars(_model(), source, 20, 10, 0.0, 1.0, torch.Generator().manual_seed(5), steps=0)
    assert spent == 0
    assert torch.equal(exemplars, source.sample(20, torch.Generator().manual_seed(5)))


def test_confident_samples_stop_moving():
    model = _model()
    source = make_distribution("shapes", SPEC)
    _, _, spent_strict = class_exemplars(
        model, source, 20, 10, 0.0, 1.0, torch.Generator().manual_seed(1), confidence=0.999
    )
    _, _, spent_loose = class_exemplars(
        model, source, 20, 10, 0.0, 1.0, torch.Generator().manual_seed(1), confidence=0.5
    )
    assert spent_loose < spent_strict


def test_progress_bar_completes_when_chunks_stop_early(capsys):
    model = _model()
    source = make_distribution("shapes", SPEC)
    # confidence 0 is met at once: every chunk stops before its first step, yet the bar ends full
    class_exemplars(
        model,
        source,
        20,
        10,
        0.0,
        1.0,
        torch.Generator().manual_seed(1),
        steps=7,
        chunk=8,
        confidence=0.0,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "exemplars" in err and "21/21" in err
