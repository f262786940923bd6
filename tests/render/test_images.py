import numpy as np
import pytest
import torch
from PIL import Image

from agnostic_saliency.render import save_bar_chart, save_grid, save_png, to_image


def test_to_image_grey_and_rgb():
    grey = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])
    image = to_image(grey)
    assert image.mode == "L" and image.size == (2, 2)
    assert np.asarray(image).tolist() == [[0, 128], [255, 255]]  # rounded and clamped
    rgb = torch.zeros(3, 2, 3)
    rgb[1] = 1.0
    image = to_image(rgb, upscale=4)
    assert image.mode == "RGB" and image.size == (12, 8)
    assert np.asarray(image)[..., 1].min() == 255 and np.asarray(image)[..., 0].max() == 0
    other = to_image(torch.ones(2, 3, 3))
    assert other.mode == "L"


def test_save_png_round_trip(tmp_path):
    picture = torch.rand(1, 5, 7, generator=torch.Generator().manual_seed(0))
    save_png(picture, tmp_path / "map.png", upscale=3)
    with Image.open(tmp_path / "map.png") as image:
        assert image.format == "PNG" and image.size == (21, 15)
        array = np.asarray(image)[::3, ::3] / 255.0
    np.testing.assert_allclose(array, picture[0].numpy(), atol=1 / 255)


@pytest.mark.parametrize("count,columns", [(1, 5), (7, 3), (10, 5)])
def test_grid_layout_and_labels(tmp_path, count, columns):
    pictures = torch.ones(count, 1, 28, 28)  # white tiles on a white canvas: only text is dark
    path = tmp_path / "grid.png"
    save_grid(pictures, [f"class {i}" for i in range(count)], path, columns=columns,
              captions=[f"fool {i / 10:.2f}" for i in range(count)])
    with Image.open(path) as image:
        array = np.asarray(image.convert("L"))
        width, height = image.size
    rows = -(-count // columns)
    used_columns = min(columns, count)
    assert width >= used_columns * 112 and height >= rows * 112
    assert width < (used_columns + 1) * 112
    # Labels are drawn under the tiles: dark pixels exist below the first tile.
    assert array[6 + 112 :, :].min() < 128
    assert array[:6 + 112, :].min() > 128  # nothing dark on or above the first row's tiles


def test_grid_of_large_colour_pictures(tmp_path):
    save_grid(torch.rand(2, 3, 150, 120), ["a", "a very long name that must be cut"], tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "RGB" and image.width < 2 * 120 + 40


def test_bar_chart(tmp_path):
    path = tmp_path / "chart.png"
    save_bar_chart([0.5, 3.2, 1.0], ["a", "b", "c"], path, title="t", ylabel="index", threshold=2.0,
                   highlight=[1])
    with Image.open(path) as image:
        assert image.format == "PNG"
        array = np.asarray(image.convert("RGB")).reshape(-1, 3)
    red = (array[:, 0] > 180) & (array[:, 1] < 80) & (array[:, 2] < 80)
    assert red.sum() > 50  # the highlighted bar


def test_pictures_in_a_byte_range_are_mapped_not_clipped(tmp_path):
    # A model that takes raw bytes shows maps in [0, 255]: a [0, 1] writer would clip them to white.
    picture = torch.tensor([[[0.0, 63.75], [127.5, 255.0]]]).expand(3, 2, 2)
    image = to_image(picture, value_range=(0, 255))
    assert np.asarray(image)[..., 0].tolist() == [[0, 64], [128, 255]]
    save_grid(picture[None].repeat(2, 1, 1, 1), ["a", "b"], tmp_path / "grid.png", value_range=(0, 255))
    with Image.open(tmp_path / "grid.png") as grid:
        tile = np.asarray(grid.convert("L"))[6:6 + 112, 6:6 + 112]  # 2x2 enlarged to 112x112
    assert tile.min() == 0 and tile.max() == 255 and 60 < np.median(tile) < 200
    with pytest.raises(ValueError):
        to_image(picture, value_range=(1, 1))
