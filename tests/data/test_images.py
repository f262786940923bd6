from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agnostic_saliency.data.images import load_image_folder
from agnostic_saliency.errors import InputError


@pytest.fixture
def folder(tmp_path):
    Image.new("L", (10, 12), 255).save(tmp_path / "white.png")
    rgb = np.zeros((20, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.jpg", quality=95)
    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    (tmp_path / "notes.txt").write_text("not an image, and not an image suffix")
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.new("L", (5, 5), 0).save(sub / "black.png")
    return tmp_path


def test_folder_reads_and_skips_junk(folder):
    with pytest.warns(UserWarning, match="junk.png"):
        result = load_image_folder(folder, (1, 7, 9))
    assert result.skipped == 1
    assert result.images.shape == (3, 1, 7, 9)
    assert result.images.dtype == torch.float32
    assert result.images.min() >= 0 and result.images.max() <= 1
    by_name = {p.rsplit("/", 1)[-1]: im for p, im in zip(result.paths, result.images)}
    assert set(by_name) == {"white.png", "red.jpg", "black.png"}
    assert torch.allclose(by_name["white.png"], torch.ones(1, 7, 9))
    assert torch.allclose(by_name["black.png"], torch.zeros(1, 7, 9))
    # Red in grey: ITU-R 601 luma 0.299.
    assert float(by_name["red.jpg"].mean()) == pytest.approx(0.299, abs=0.02)


def test_folder_in_colour(folder):
    with pytest.warns(UserWarning):
        result = load_image_folder(folder, (3, 4, 4))
    red = result.images[[p.endswith("red.jpg") for p in result.paths].index(True)]
    assert red.shape == (3, 4, 4)
    assert red[0].mean() > 0.9 and red[1].mean() < 0.1 and red[2].mean() < 0.1
    white = result.images[[p.endswith("white.png") for p in result.paths].index(True)]
    assert torch.allclose(white, torch.ones(3, 4, 4))


def test_limit_counts_files_in_sorted_order(folder):
    with pytest.warns(UserWarning):
        result = load_image_folder(folder, (1, 4, 4), limit=2)  # junk.png, red.jpg
    assert len(result.images) == 1 and result.skipped == 1
    assert result.paths[0].endswith("red.jpg")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no readable image"):
        load_image_folder(tmp_path, (1, 28, 28))


def test_folder_with_only_junk(tmp_path):
    """One error that names the first reason, and no warning per file: the error says it all."""
    import warnings

    (tmp_path / "a.png").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"1 unreadable files skipped; .*a\.png: cannot identify"):
            load_image_folder(tmp_path, (1, 28, 28))


def test_decompression_bombs_are_skipped_not_decoded(tmp_path, monkeypatch):
    Image.new("L", (8, 8), 50).save(tmp_path / "small.png")
    Image.new("L", (40, 40), 50).save(tmp_path / "warns.png")  # 1600 px: between the limit and twice it
    Image.new("L", (60, 60), 50).save(tmp_path / "raises.png")  # 3600 px: beyond twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(UserWarning, match="decompression bomb") as caught:
        result = load_image_folder(tmp_path, (1, 8, 8))
    assert result.skipped == 2 and [Path(p).name for p in result.paths] == ["small.png"]
    assert sorted(str(w.message).split(":")[0].rsplit("/", 1)[-1] for w in caught) == ["raises.png", "warns.png"]


def test_missing_folder_and_bad_channels(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image_folder(tmp_path / "missing", (1, 28, 28))
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="channel"):
        load_image_folder(tmp_path, (2, 28, 28))


def test_images_of_other_modes_are_converted(tmp_path):
    """Not bad input: 16-bit, palette, CMYK, RGBA and 1-bit images become the model's channels."""
    Image.new("I;16", (20, 20), 40000).save(tmp_path / "sixteen.png")
    Image.new("P", (20, 20), 3).save(tmp_path / "palette.png")
    Image.new("CMYK", (20, 20), (0, 0, 0, 255)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (20, 20), (255, 0, 0, 10)).save(tmp_path / "rgba.png")
    Image.new("1", (20, 20), 1).save(tmp_path / "bits.png")
    for channels in (1, 3):
        loaded = load_image_folder(tmp_path, (channels, 12, 12))
        assert loaded.images.shape == (5, channels, 12, 12) and loaded.skipped == 0
        assert 0 <= float(loaded.images.min()) and float(loaded.images.max()) <= 1
        assert float(loaded.images.max()) > 0.5  # the white 1-bit image is white, not clipped to black
