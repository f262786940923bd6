"""The explain output folder: files, explain.json, the report's pictures (and that they load in
headless Chromium), escaping, and nothing half-written on failure."""

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agnostic_saliency.explain import METHODS, explain_images
from agnostic_saliency.method.scale import DEFAULT_SCALING, minmax, positive
from agnostic_saliency.output.explain import heatmap, write_explain_folder
from agnostic_saliency.render.images import to_image

FAST = dict(steps=3, refine_steps=2, batch_size=4, eval_samples=8, progress=False)
NAMES = ["a", "<b>", "c & d", "e"]


@pytest.fixture
def explained(tiny_model, tiny_spec, tmp_path):
    result = explain_images(tiny_model, tiny_spec, NAMES, torch.rand(3, 1, 8, 8), **FAST)
    summary = write_explain_folder(result, tmp_path / "out", "tiny", image_names=["x.png", "y.png", "z.png"])
    return result, summary, tmp_path / "out"


def test_files_and_summary(explained):
    result, summary, out = explained
    assert json.loads((out / "explain.json").read_text()) == summary
    assert summary["methods"] == list(METHODS) and summary["grad_cam_layer"] == "features.3"
    assert [row["predicted"] for row in summary["images"]] == result.predicted
    for row in summary["images"]:
        names = [row["image"], row["agnostic"], *row["maps"].values()]
        assert len(names) == len(METHODS) + 2
        assert all((out / name).is_file() for name in names)
    assert (out / "panels.png").is_file() and (out / "report.html").is_file()
    assert not list(out.glob(".staging-*"))


def test_report_embeds_every_picture(explained):
    _, summary, out = explained
    html = (out / "report.html").read_text()
    assert html.count("<img ") == len(summary["images"]) * (len(METHODS) + 2)
    assert html.count('src="data:image/png;base64,') == html.count("<img ")


def test_class_names_cannot_inject_markup(explained, tmp_path):
    result, _, _ = explained
    maps = next(iter(result.agnostic.values()))
    forged = dataclasses.replace(result, predicted=[1, 2, 1], agnostic={1: maps, 2: maps})
    write_explain_folder(forged, tmp_path / "forged", "tiny")
    html = (tmp_path / "forged" / "report.html").read_text()
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert "c &amp; d" in html


def test_the_agnostic_map_is_shown_as_map_shows_it(explained):
    result, summary, out = explained
    assert DEFAULT_SCALING == "positive" and result.display == summary["agnostic_display"] == "positive"
    for row in summary["images"]:
        signed = result.agnostic[row["predicted"]][None]
        written = np.asarray(Image.open(out / row["agnostic"]))
        assert np.array_equal(written, np.asarray(to_image(positive(signed)[0], upscale=14)))
        assert not np.array_equal(written, np.asarray(to_image(minmax(signed)[0], upscale=14)))


def test_heatmap_is_the_magnitude_in_a_colour_map():
    attribution = torch.tensor([[0.0, -2.0], [1.0, 2.0]])
    picture = heatmap(attribution)
    assert picture.shape == (3, 2, 2) and picture.min() >= 0 and picture.max() <= 1
    assert torch.equal(picture[:, 0, 1], picture[:, 1, 1])  # sign does not matter
    assert picture[:, 1, 1].sum() > picture[:, 1, 0].sum() > picture[:, 0, 0].sum()  # brighter with magnitude


def test_a_failure_leaves_nothing_half_written(explained, tmp_path, monkeypatch):
    result, _, _ = explained
    import agnostic_saliency.output.explain as folder

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(folder, "render_report", explode)
    with pytest.raises(RuntimeError):
        write_explain_folder(result, tmp_path / "fresh", "tiny")
    assert list((tmp_path / "fresh").iterdir()) == []


CHECK_IMAGES = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute("data-images-loaded", (images.length - broken.length) + "/" + images.length);
});
</script></body>"""


def loaded_images(html_file: Path, tmp_path: Path) -> str:
    """Open a copy of ``html_file`` in headless Chromium with a script that counts the images
    whose pixels arrived; returns "loaded/total" as the rendered DOM reports it."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_file.read_text().replace("</body>", CHECK_IMAGES))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
               "--dump-dom", probe.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    marker = 'data-images-loaded="'
    assert marker in dom, "Chromium did not run the check"
    return dom.split(marker, 1)[1].split('"', 1)[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get "
                                    "install chromium)")


@needs_chromium
def test_every_picture_of_the_report_loads_in_chromium(explained, tmp_path):
    _, summary, out = explained
    total = len(summary["images"]) * (len(METHODS) + 2)
    assert loaded_images(out / "report.html", tmp_path) == f"{total}/{total}"


@needs_chromium
def test_the_chromium_check_sees_a_broken_picture(explained, tmp_path):
    _, _, out = explained
    broken = tmp_path / "broken.html"
    broken.write_text((out / "report.html").read_text().replace(
        'src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1))
    loaded, total = loaded_images(broken, tmp_path).split("/")
    assert int(loaded) == int(total) - 1


def test_images_of_a_model_in_0_255_are_written_in_that_range(tiny_model, tmp_path):
    from agnostic_saliency.models.spec import InputSpec

    spec = InputSpec((1, 8, 8), value_range=(0.0, 255.0))
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    result = explain_images(tiny_model, spec, NAMES, images, methods=["gradient"], **FAST)
    summary = write_explain_folder(result, tmp_path / "out", "tiny")
    for i, row in enumerate(summary["images"]):
        written = np.asarray(Image.open(tmp_path / "out" / row["image"]), dtype=np.float64)[::14, ::14]
        assert np.abs(written - images[i, 0].numpy()).max() <= 1.0  # not saturated white
