import base64
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from agnostic_saliency.metrics.fidelity import Fidelity
from agnostic_saliency.metrics.recognisability import Recognisability
from agnostic_saliency.output.maps import map_summary, safe_filename, write_map_folder
from agnostic_saliency.result import SaliencyResult


def make_result(same_tensor: bool) -> SaliencyResult:
    maps = torch.linspace(-0.2, 0.2, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    fidelity = Fidelity([0.9, 0.5], [0.8, 0.4], None, None, [1, 2], [0.7, 0.6], [True, False])
    before = Fidelity([0.95, 0.6], [0.85, 0.5], None, None, [1, 0], [0.75, 0.5], [True, False])
    config = {"input_spec": {"shape": [3, 4, 4]}, "distribution": "uniform", "norm": "l2", "budget": 0.2,
              "steps": 5, "batch_size": 8, "seed": 3}
    return SaliencyResult(maps=maps, unrefined_maps=maps if same_tensor else maps * 2, displayed=(maps + 0.2) / 0.4,
                          concepts=[[1], [0, 2]], names=["b", "a+c"], fidelity=fidelity,
                          fidelity_unrefined=before, refined=[True, False], config=config, seconds=1.5,
                          sample_gradients=80)


@pytest.mark.parametrize("text,expected", [("t-shirt/top", "t-shirt-top"), ("ankle boot", "ankle-boot"),
                                           ("a+b", "a-b"), ("///", "class"), ("ok_1.x", "ok_1.x")])
def test_safe_filename(text, expected):
    assert safe_filename(text) == expected


def test_summary_rows():
    result = make_result(False)
    judged = Recognisability([1, 1], [0.9, 0.8], [True, False], None, None, None)
    summary = map_summary(result, "m", ["a", "b", "c"], judged, extra={"weights": None})
    assert summary["sample_gradients"] == 80 and summary["seconds"] == 1.5 and summary["input_shape"] == [3, 4, 4]
    first, second = summary["classes"]
    assert first["index"] == 1 and second["index"] == [0, 2]
    assert first["map_alone_name"] == "b" and second["map_alone_name"] == "c"
    assert first["unrefined"]["fooling_rate"] == 0.95 and first["fooling_rate"] == 0.9
    assert first["judge_label"] == 1 and second["judge_reads_concept"] is False
    assert first["rms"] == pytest.approx(float(result.maps[0].pow(2).mean().sqrt()))
    assert summary["weights"] is None


@pytest.mark.parametrize("same_tensor", [True, False])
def test_write_map_folder(tmp_path, same_tensor):
    result = make_result(same_tensor)
    summary = map_summary(result, "m", ["a", "b", "c"])
    write_map_folder(result, summary, tmp_path)
    tensors = load_file(str(tmp_path / "maps.safetensors"))
    assert torch.equal(tensors["maps"], result.maps)
    assert torch.equal(tensors["unrefined_maps"], result.unrefined_maps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "map_000_b.png", "map_001_a-c.png",
                                                          "maps.safetensors", "report.html", "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text())["classes"][1]["name"] == "a+c"


def test_map_report_embeds_every_picture_and_escapes_names(tmp_path):
    result = make_result(False)
    result.names = ["<b>bold</b>", "a+c"]
    summary = map_summary(result, "m<script>", ["a", "b", "c"])
    write_map_folder(result, summary, tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]* src="([^"]*)"', html)
    assert len(sources) == 3  # the grid and one thumbnail per map
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == (tmp_path / "grid.png").read_bytes()
    assert "<script>" not in html and "m&lt;script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "0.900" in html and "0.950" in html  # the first map's fooling rate, before and after refinement


def test_maps_of_a_byte_range_model_are_readable_pictures(tmp_path, tiny_conv_class):
    """A colour model whose inputs are in [0, 255]: every PNG spans dark to bright instead of
    coming out white (the displayed maps are in the model's range, the PNG writers map it)."""
    import numpy as np
    from PIL import Image

    from agnostic_saliency.method.engine import InputAgnosticSaliency
    from agnostic_saliency.models.spec import InputSpec

    torch.manual_seed(0)
    model = tiny_conv_class(num_classes=3, in_channels=3).eval()
    spec = InputSpec((3, 8, 8), value_range=(0.0, 255.0))

    class Bytes(torch.nn.Module):  # the model expects raw bytes: it rescales them itself
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x / 255.0)

    result = InputAgnosticSaliency(Bytes().eval(), spec, ["a", "b", "c"]).attribute(
        targets="all", steps=3, batch_size=4, refine=False, eval_samples=8, progress=False)
    assert result.displayed.min() == 0 and result.displayed.max() == pytest.approx(255)
    write_map_folder(result, map_summary(result, "bytes", ["a", "b", "c"]), tmp_path)
    for k, name in enumerate(result.names):
        with Image.open(tmp_path / f"map_{k:03d}_{name}.png") as image:
            pixels = np.asarray(image.convert("RGB"))[::14, ::14]  # 8x8 shown 14 times larger
        expected = (result.displayed[k].permute(1, 2, 0).numpy() + 0.5).astype(np.uint8)
        np.testing.assert_allclose(pixels, expected, atol=1)
        assert (pixels == 255).mean() < 0.5  # not a white picture
    with Image.open(tmp_path / "grid.png") as grid:
        assert np.asarray(grid.convert("L")).std() > 30
