from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from agnostic_saliency.data.fashion_mnist import FASHION_MNIST_CLASSES
from agnostic_saliency.errors import InputError
from agnostic_saliency.models import load_model, load_weights, read_class_names
from agnostic_saliency.models.architectures import ARCHITECTURES, FmnistLeNet
from agnostic_saliency.models.loading import ZOO, apply_weights
from agnostic_saliency.models.running import check_output
from agnostic_saliency.models.spec import InputSpec


@pytest.fixture
def factory_file(user_model_file) -> Path:
    return user_model_file


def trained_like_weights(path: Path):
    """A state dict of the user's architecture with non-default values."""
    model = load_model(f"{path}:build").model
    generator = torch.Generator().manual_seed(3)
    return {k: torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}


def test_builtin_fmnist_cnn_loads():
    assert (ZOO / "fmnist-cnn.safetensors").is_file(), "the shipped fmnist-cnn weights are missing"
    loaded = load_model("fmnist-cnn")
    assert loaded.name == "fmnist-cnn"
    assert loaded.spec.shape == (1, 28, 28)
    assert loaded.class_names == list(FASHION_MNIST_CLASSES)
    assert not loaded.model.training
    # The shipped weights are trained, not the architecture's random initialisation.
    fresh = ARCHITECTURES["fmnist-cnn"]()
    assert not torch.equal(fresh.state_dict()["features.0.weight"],
                           loaded.model.state_dict()["features.0.weight"])
    with torch.no_grad():
        logits = loaded.model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    card = ZOO / "fmnist-cnn.md"
    if card.exists():
        assert "accuracy" in card.read_text().lower()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_factory_file_with_state_dict_round_trip(factory_file, tmp_path, suffix):
    state = trained_like_weights(factory_file)
    weights = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(state, weights)
    else:
        save_file(state, str(weights))
    loaded = load_model(f"{factory_file}:build", weights=weights)
    # Declared by the model: input shape and class names.
    assert loaded.spec.shape == (1, 12, 12)
    assert loaded.class_names == ["a", "b", "c"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert load_weights(weights).keys() == state.keys()


def test_pt_with_wrapper_and_prefix(factory_file, tmp_path):
    state = trained_like_weights(factory_file)
    weights = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)
    loaded = load_model(f"{factory_file}:build", weights=weights)
    assert torch.equal(loaded.model.state_dict()["fc.bias"], state["fc.bias"])


def test_package_module_factory_and_overrides():
    with pytest.raises(InputError, match="input shape"):
        load_model("agnostic_saliency.models.architectures:FmnistLeNet")
    loaded = load_model("agnostic_saliency.models.architectures:FmnistLeNet", input_shape=(1, 28, 28),
                        mean=(0.5,), std=(0.25,), value_range=(0.0, 2.0),
                        class_names=[f"c{i}" for i in range(10)])
    assert isinstance(loaded.model, FmnistLeNet)
    assert loaded.spec == InputSpec((1, 28, 28), (0.0, 2.0), (0.5,), (0.25,))
    assert loaded.class_names[3] == "c3"
    with pytest.raises(InputError, match="class names"):
        load_model("agnostic_saliency.models.architectures:FmnistLeNet", input_shape=(1, 28, 28),
                   class_names=["only", "two"])


def test_pickled_module_is_refused(factory_file, tmp_path):
    whole = tmp_path / "whole_model.pt"
    torch.save(load_model(f"{factory_file}:build").model, whole)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_weights(whole)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_model(f"{factory_file}:build", weights=whole)


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/agnostic_saliency_pwned"),))


def test_pickled_object_is_refused_and_not_run(tmp_path):
    marker = Path("/tmp/agnostic_saliency_pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, path)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [[1, 2, 3], {"w": 3}, {1: torch.zeros(1)}])
def test_plain_pickles_that_are_not_state_dicts(tmp_path, content):
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_weights(path)


@pytest.mark.parametrize("name,data", [("junk.safetensors", b"\x00\x01not safetensors at all"),
                                       ("junk.pt", b"this is not a zip or pickle"),
                                       ("empty.pt", b""),
                                       ("empty.safetensors", b"")])
def test_corrupt_weights(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=str(path)):
        load_weights(path)


def test_truncated_pt(factory_file, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(trained_like_weights(factory_file), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt"):
        load_weights(path)


def test_missing_weights(factory_file, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(f"{factory_file}:build", weights=tmp_path / "nope.safetensors")


def test_weights_that_do_not_fit(factory_file, tmp_path):
    state = trained_like_weights(factory_file)
    wrong_shape = dict(state, **{"fc.bias": torch.zeros(5)})
    missing = {k: v for k, v in state.items() if k != "conv.weight"}
    extra = dict(state, extra=torch.zeros(1))
    for label, bad in [("shape of fc.bias", wrong_shape), ("missing conv.weight", missing),
                       ("unexpected extra", extra)]:
        path = tmp_path / "bad.safetensors"
        save_file(bad, str(path))
        with pytest.raises(InputError, match="do not fit") as info:
            load_model(f"{factory_file}:build", weights=path)
        assert label in str(info.value)
    lenet = tmp_path / "lenet.pt"
    torch.save(FmnistLeNet().state_dict(), lenet)
    with pytest.raises(InputError, match="do not fit"):
        load_model("fmnist-cnn", weights=lenet)


def test_wrong_input_shape(factory_file):
    with pytest.raises(InputError, match="input shape 3,12,12"):
        load_model(f"{factory_file}:build", input_shape=(3, 12, 12))
    with pytest.raises(InputError, match="input shape"):
        load_model(f"{factory_file}:build", input_shape=(1, 20, 20))


def test_output_not_n_by_classes(factory_file):
    with pytest.raises(InputError, match=r"\(N, classes\)"):
        load_model(f"{factory_file}:spatial", input_shape=(1, 12, 12))
    with pytest.raises(InputError, match=r"\(N, classes\)"):
        check_output(nn.Flatten(0), InputSpec((1, 4, 4)))


def test_check_output_keeps_training_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 7)).train()
    assert check_output(model, InputSpec((1, 4, 4))) == 7
    assert model.training


@pytest.mark.parametrize("spec,match", [
    ("nosuch-model", "unknown model spec"),
    ("{tmp}/missing.py:build", "not found"),
    ("{file}:nothing_here", "no callable"),
    ("{file}:NOT_CALLABLE", "no callable"),
    ("{file}:not_a_module", "not a torch.nn.Module"),
    ("{file}:broken", "factory exploded"),
    ("no_such_package_xyz.module:build", "cannot import"),
    ("torchvision:no_such_net", "unknown torchvision model"),
])
def test_bad_specs(factory_file, tmp_path, spec, match):
    with pytest.raises(InputError, match=match):
        load_model(spec.format(tmp=tmp_path, file=factory_file), input_shape=(1, 12, 12))


def test_factory_file_that_does_not_import(tmp_path):
    path = tmp_path / "syntax.py"
    path.write_text("def build(:\n")
    with pytest.raises(InputError, match="could not import"):
        load_model(f"{path}:build")


def test_torchvision_random_weights():
    loaded = load_model("torchvision:resnet18", random_weights=True, input_shape=(3, 32, 32))
    assert loaded.spec.shape == (3, 32, 32)
    assert loaded.spec.mean == (0.485, 0.456, 0.406)
    assert len(loaded.class_names) == 1000
    assert not loaded.model.training


def test_torchvision_pretrained_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match="--random-weights") as info:
        load_model("torchvision:resnet18", input_shape=(3, 32, 32))
    assert "not cached" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_read_class_names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("cat\n\n dog \nbird\n")
    assert read_class_names(path) == ["cat", "dog", "bird"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(InputError, match="empty"):
        read_class_names(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="not found"):
        read_class_names(tmp_path / "missing.txt")


def test_apply_weights_strips_compile_prefix():
    model = nn.Linear(2, 2)
    state = {f"_orig_mod.{k}": torch.ones_like(v) for k, v in model.state_dict().items()}
    apply_weights(model, state, "test")
    assert torch.all(model.weight == 1)
