"""Reading the maps of an earlier ``map`` run, and computing them."""

import json

import pytest
import torch
from safetensors.torch import save_file

from agnostic_saliency.errors import InputError
from agnostic_saliency.explain.agnostic import compute_maps, read_map_run
from agnostic_saliency.models.spec import InputSpec

SPEC = InputSpec((1, 8, 8))


def fake_run(folder, maps, indices):
    folder.mkdir(exist_ok=True)
    save_file({"maps": maps, "unrefined_maps": maps.clone()}, str(folder / "maps.safetensors"))
    (folder / "summary.json").write_text(json.dumps({"classes": [{"index": i} for i in indices]}))
    return folder


def test_reads_single_class_maps_by_index_and_leaves_out_class_sets(tmp_path):
    maps = torch.randn(3, 1, 8, 8)
    found = read_map_run(fake_run(tmp_path / "run", maps, [2, [0, 1], 0]), SPEC, num_classes=4)
    assert sorted(found) == [0, 2]
    assert torch.equal(found[2], maps[0]) and torch.equal(found[0], maps[2])


@pytest.mark.parametrize("maps, indices, message", [
    (torch.randn(2, 1, 9, 9), [0, 1], "made for another model"),
    (torch.randn(2, 1, 8, 8), [0], "made for another model"),
    (torch.randn(1, 1, 8, 8), [7], "only 4 classes"),
])
def test_a_run_of_another_model_is_refused(tmp_path, maps, indices, message):
    with pytest.raises(InputError, match=message):
        read_map_run(fake_run(tmp_path / "run", maps, indices), SPEC, num_classes=4)


def test_a_folder_that_is_no_map_run_is_refused(tmp_path):
    with pytest.raises(InputError, match="not the folder of a map run"):
        read_map_run(tmp_path, SPEC, num_classes=4)
    (tmp_path / "maps.safetensors").write_bytes(b"junk")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="cannot read"):
        read_map_run(tmp_path, SPEC, num_classes=4)


def test_computed_maps_are_the_engines_for_the_requested_classes(tiny_model, tiny_spec):
    settings = dict(steps=3, refine_steps=2, batch_size=4, eval_samples=8, progress=False, seed=0)
    maps, fooling = compute_maps(tiny_model, tiny_spec, ["a", "b", "c", "d"], [3, 1, 3], **settings)
    assert sorted(maps) == sorted(fooling) == [1, 3]
    assert maps[1].shape == (1, 8, 8) and not torch.equal(maps[1], maps[3])
    again, _ = compute_maps(tiny_model, tiny_spec, ["a", "b", "c", "d"], [1, 3], **settings)
    assert torch.equal(again[1], maps[1])  # same seed, same classes: the same maps
