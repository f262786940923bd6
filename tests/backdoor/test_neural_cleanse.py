"""Neural Cleanse baseline on the cached population fixtures."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agnostic_saliency.backdoor.neural_cleanse import ORIGINAL_SETTINGS, neural_cleanse
from agnostic_saliency.errors import InputError
from agnostic_saliency.models.architectures import ARCHITECTURES
from testbed.triggers import attack_success_rate, load_trigger

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"


def _load(name):
    manifest = {m["name"]: m for m in json.loads((FIXTURES / "manifest.json").read_text())["models"]}
    entry = manifest[name]
    model = ARCHITECTURES[entry["arch"]](num_classes=10)
    model.load_state_dict(load_file(str(FIXTURES / entry["file"])))
    return model.eval(), entry


@pytest.fixture(scope="module")
def clean_images():
    # Neural Cleanse needs clean data: 300 Fashion-MNIST test images (skip where not installed).
    from agnostic_saliency.data import load_fashion_mnist

    torch.set_num_threads(1)
    try:
        x, y = load_fashion_mnist("test")
    except InputError:
        pytest.skip("Fashion-MNIST is not installed")
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:300]
    return x[index], y[index]


def test_fixture_trojan_is_real(clean_images):
    model, entry = _load("lenet-patch3-br-white")
    trigger = load_trigger(FIXTURES / entry["trigger"]["file"])
    x, y = clean_images
    assert attack_success_rate(model, trigger, x, y, entry["target"]) > 0.9


def test_flags_the_target_of_a_patch_trojan(clean_images):
    model, entry = _load("lenet-patch3-br-white")
    x, _ = clean_images
    # A shortened schedule (12 epochs, patience 2) keeps the test near 15 s of CPU.
    result = neural_cleanse(model, x, epochs=12, patience=2, early_stop_patience=4, seed=0, progress=False)
    target = entry["target"]
    assert result.masks.shape == (10, 28, 28) and result.patterns.shape == (10, 1, 28, 28)
    assert 0 <= result.masks.min() and result.masks.max() <= 1
    assert 0 <= result.patterns.min() and result.patterns.max() <= 1
    norms = [row["mask_norm"] for row in result.classes]
    assert int(np.argmin(norms)) == target
    assert target in result.flagged
    assert result.anomaly_index[target] > 2
    # the shared result type: a flagged class's trigger is its reverse-engineered stamp
    assert torch.equal(result.triggers[target][0], result.masks[target]) and result.trigger_asr[target] > 0.5
    # The recovered trigger concentrates where the true 3x3 patch is (bottom-right corner).
    mask = result.masks[target]
    assert mask[20:, 20:].sum() > 0.5 * mask.sum()
    summary = result.to_dict()
    json.dumps(summary)
    assert summary["flagged"] == result.flagged and len(summary["classes"]) == 10
    assert summary["trojaned"] and summary["score"] == pytest.approx(result.anomaly_index.max())


def test_leaves_the_model_as_given(clean_images):
    model, _ = _load("lenet-clean-0")
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = neural_cleanse(model, clean_images[0][:64], epochs=1, steps_per_epoch=1, progress=False)
    assert model.training
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(model.parameters())[1:])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(result.classes) == 10 and result.seconds > 0 and result.method == "neural-cleanse"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_leaves_the_model_as_given_at_either_precision(clean_images, precision):
    model, _ = _load("lenet-clean-0")
    storage = [(p.data_ptr(), p.stride()) for p in model.parameters()]
    result = neural_cleanse(model, clean_images[0][:64], epochs=1, steps_per_epoch=1, progress=False,
                            precision=precision)
    assert [(p.data_ptr(), p.stride()) for p in model.parameters()] == storage
    assert result.settings["precision"] == precision and result.masks.dtype == torch.float32
    with pytest.raises(InputError, match="CUDA"):
        neural_cleanse(model, clean_images[0][:64], epochs=1, progress=False, precision="fp16")


def test_rejects_bad_images():
    model = ARCHITECTURES["fmnist-lenet"](num_classes=10)
    with pytest.raises(InputError):
        neural_cleanse(model, torch.rand(1, 28, 28), progress=False)
    with pytest.raises(InputError):
        neural_cleanse(model, torch.rand(4, 1, 28, 28) * 255, progress=False)
    with pytest.raises(InputError):
        neural_cleanse(model, torch.full((4, 1, 28, 28), float("nan")), progress=False)
    with pytest.raises(InputError):
        neural_cleanse(model, torch.rand(4, 1, 28, 28), epochs=0, progress=False)
    with pytest.raises(InputError):
        neural_cleanse(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 1)),
                       torch.rand(4, 1, 28, 28), progress=False)


def test_runs_at_the_original_example_settings():
    # The benchmark's "NC (original)" rows pass these straight through; each must be a setting of
    # neural_cleanse and reach the result (an epoch of 31 batches, up to 1,000 epochs).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.rand(40, 1, 4, 4)
    result = neural_cleanse(model, images, progress=False, **{**ORIGINAL_SETTINGS, "epochs": 2})
    for name, value in ORIGINAL_SETTINGS.items():
        assert result.settings[name] == (2 if name == "epochs" else value)
    assert result.settings["steps_per_epoch"] == 31 and result.settings["cost_multiplier"] == 2.0
    assert all(row["epochs"] <= 2 for row in result.classes) and result.masks.shape == (3, 4, 4)
