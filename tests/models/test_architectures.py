"""The Fashion-MNIST architectures: output shapes and the fresh split's all-convolutional net."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from agnostic_saliency.models import load_model
from agnostic_saliency.models.architectures import ARCHITECTURES, FmnistAllConv
from agnostic_saliency.population import read_population


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_maps_a_batch_to_class_scores(name):
    model = ARCHITECTURES[name](num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_allconv_is_strided_batch_norm_then_global_average_pooling():
    model = FmnistAllConv(num_classes=7, in_channels=3, width=8).eval()
    layers = list(model.net)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2), (1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 4
    assert not any(isinstance(m, nn.MaxPool2d) for m in layers)
    assert isinstance(layers[-3], nn.AdaptiveAvgPool2d) and layers[-3].output_size == 1
    assert layers[-1].in_features == 32 and layers[-1].out_features == 7
    features = nn.Sequential(*layers[:-3])
    with torch.no_grad():
        assert features(torch.rand(2, 3, 28, 28)).shape == (2, 32, 7, 7)
        assert model(torch.rand(2, 3, 28, 28)).shape == (2, 7)
        # Global average pooling: the head never sees the map's size, so other image sizes work.
        assert model(torch.rand(2, 3, 36, 36)).shape == (2, 7)


def test_allconv_loads_from_a_population_manifest(tmp_path):
    torch.manual_seed(0)
    trained = FmnistAllConv(num_classes=10)
    with torch.no_grad():  # non-default batch-norm statistics, so loading them is visible
        for module in trained.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "m.safetensors"))
    entry = {"name": "m", "file": "m.safetensors", "arch": "fmnist-allconv", "trojaned": False, "target": None}
    (tmp_path / "manifest.json").write_text(json.dumps({"input_shape": [1, 28, 28], "models": [entry]}))
    (record,) = read_population(tmp_path / "manifest.json")
    assert record.model == "fmnist-allconv"
    loaded = load_model(record.model, weights=record.weights)
    assert loaded.spec.shape == (1, 28, 28) and not loaded.model.training
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), trained.eval()(x), atol=1e-5)
