"""``explain_images``: predicted classes, one map per method and image, and the input-agnostic map
of each predicted class, computed or read; on tiny nets, fmnist-cnn, a user's net and ResNet-18."""

from pathlib import Path

import pytest
import torch

from agnostic_saliency import load_model
from agnostic_saliency.errors import InputError
from agnostic_saliency.explain import METHODS, explain_images
from agnostic_saliency.explain.agnostic import read_map_run
from agnostic_saliency.method.engine import InputAgnosticSaliency
from agnostic_saliency.output import map_summary, write_map_folder

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(steps=3, refine_steps=2, batch_size=4, eval_samples=8, progress=False)


def test_explains_the_predicted_class(tiny_model, tiny_spec):
    images = torch.rand(6, 1, 8, 8)
    result = explain_images(tiny_model, tiny_spec, list("abcd"), images, **FAST)
    assert result.predicted == tiny_model(images).argmax(1).tolist()
    assert sorted(result.agnostic) == sorted(set(result.predicted))
    assert list(result.attributions) == list(METHODS)
    assert all(p.shape == (6, 8, 8) for p in result.attributions.values())
    assert result.agnostic_source == "computed" and set(result.agnostic_fooling) == set(result.agnostic)
    assert all(0 < c <= 1 for c in result.confidence)


def test_maps_read_from_a_map_run_are_used_as_they_are(tiny_model, tiny_spec, tmp_path):
    names = list("abcd")
    run = InputAgnosticSaliency(tiny_model, tiny_spec, names).attribute(targets="all", **FAST)
    write_map_folder(run, map_summary(run, "tiny", names), tmp_path / "run")
    result = explain_images(tiny_model, tiny_spec, names, torch.rand(4, 1, 8, 8), maps_dir=tmp_path / "run")
    stored = read_map_run(tmp_path / "run", tiny_spec, 4)
    assert result.agnostic_source == str(tmp_path / "run") and result.agnostic_fooling == {}
    for label, picture in result.agnostic.items():
        assert torch.equal(picture, stored[label])


def test_the_agnostic_maps_are_displayed_as_their_map_run_displayed_them(tiny_model, tiny_spec, tmp_path):
    names, images = list("abcd"), torch.rand(4, 1, 8, 8)
    run = InputAgnosticSaliency(tiny_model, tiny_spec, names).attribute(targets="all", display="minmax", **FAST)
    write_map_folder(run, map_summary(run, "tiny", names), tmp_path / "run")
    assert explain_images(tiny_model, tiny_spec, names, images, maps_dir=tmp_path / "run").display == "minmax"
    chosen = explain_images(tiny_model, tiny_spec, names, images, maps_dir=tmp_path / "run", display="signed")
    assert chosen.display == "signed"
    assert explain_images(tiny_model, tiny_spec, names, images, **FAST).display == "positive"
    with pytest.raises(InputError, match="unknown display"):
        explain_images(tiny_model, tiny_spec, names, images, display="heat", **FAST)


def test_a_map_run_without_the_predicted_class_is_an_error(tiny_model, tiny_spec, tmp_path):
    names = list("abcd")
    images = torch.rand(8, 1, 8, 8)
    predicted = set(tiny_model(images).argmax(1).tolist())
    others = [c for c in range(4) if c not in predicted]
    run = InputAgnosticSaliency(tiny_model, tiny_spec, names).attribute(targets=others or [0], **FAST)
    write_map_folder(run, map_summary(run, "tiny", names), tmp_path / "run")
    with pytest.raises(InputError, match="no map of the predicted class"):
        explain_images(tiny_model, tiny_spec, names, images, maps_dir=tmp_path / "run")


def test_images_of_the_wrong_shape_are_refused(tiny_model, tiny_spec):
    with pytest.raises(InputError, match="the model takes"):
        explain_images(tiny_model, tiny_spec, list("abcd"), torch.rand(2, 3, 8, 8), **FAST)
    with pytest.raises(InputError, match="at least one image"):
        explain_images(tiny_model, tiny_spec, list("abcd"), torch.rand(0, 1, 8, 8), **FAST)


@pytest.mark.parametrize("spec, options, shape", [
    ("fmnist-cnn", {}, (1, 28, 28)),
    (f"{ROOT / 'examples/unseen_model.py'}:build", {}, (1, 28, 28)),
    ("torchvision:resnet18", {"random_weights": True, "input_shape": (3, 64, 64)}, (3, 64, 64)),
])
def test_fmnist_cnn_an_unseen_net_and_resnet18(spec, options, shape):
    loaded = load_model(spec, **options)
    torch.manual_seed(0)
    images = torch.rand(2, *shape)
    result = explain_images(loaded.model, loaded.spec, loaded.class_names, images, **FAST,
                            method_settings={"ig_steps": 4, "smoothgrad_samples": 2})
    assert list(result.attributions) == list(METHODS)
    assert all(p.shape == (2, *shape[1:]) for p in result.attributions.values())
    assert all(m.shape == shape for m in result.agnostic.values())
    assert result.layer is not None
