"""End-to-end tests of ``agnostic-saliency explain``: the folder it writes, with maps read from a
map run or computed, and one-line errors that write nothing."""

import json

import pytest
from PIL import Image

from agnostic_saliency.cli import main

FAST_MAP = ["--steps", "3", "--refine-steps", "2", "--batch-size", "4", "--quiet"]
METHODS = ["gradient", "integrated-gradients", "smoothgrad", "grad-cam"]


@pytest.fixture
def pictures(tmp_path) -> list[str]:
    paths = []
    for k, colour in enumerate((40, 200)):
        image = Image.new("L", (28, 28), 0)
        image.paste(colour, (6, 4, 22, 24))  # a bright block: something like an object
        paths.append(str(tmp_path / f"picture{k}.png"))
        image.save(paths[-1])
    return paths


def test_explain_with_maps_from_a_map_run(pictures, tmp_path):
    assert main(["map", "--model", "fmnist-cnn", "--eval-samples", "8", "--out", str(tmp_path / "run"), *FAST_MAP]) == 0
    args = [
        "explain",
        "--model",
        "fmnist-cnn",
        "--maps",
        str(tmp_path / "run"),
        "--quiet",
        "--out",
        str(tmp_path / "out"),
    ]
    for path in pictures:
        args += ["--image", path]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert summary["methods"] == METHODS and summary["agnostic_maps"] == str(tmp_path / "run")
    assert [row["source"] for row in summary["images"]] == pictures
    for row in summary["images"]:
        assert set(row["maps"]) == set(METHODS)
        for name in [row["image"], row["agnostic"], *row["maps"].values()]:
            assert (tmp_path / "out" / name).is_file()
    assert (tmp_path / "out" / "report.html").read_text().count("<img ") == 2 * (len(METHODS) + 2)


def test_explain_computes_the_maps_and_takes_a_method_list(pictures, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--model",
                "fmnist-cnn",
                "--image",
                pictures[0],
                "--methods",
                "gradient,grad-cam",
                "--layer",
                "features.4",
                "--out",
                str(out),
                *FAST_MAP,
            ]
        )
        == 0
    )
    summary = json.loads((out / "explain.json").read_text())
    assert summary["methods"] == ["gradient", "grad-cam"] and summary["grad_cam_layer"] == "features.4"
    assert summary["agnostic_maps"] == "computed" and summary["settings"]["steps"] == 3
    assert 0 <= summary["images"][0]["agnostic_fooling_rate"] <= 1


def test_a_non_empty_folder_needs_overwrite(pictures, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = [
        "explain",
        "--model",
        "fmnist-cnn",
        "--image",
        pictures[0],
        "--methods",
        "gradient",
        "--out",
        str(out),
        *FAST_MAP,
    ]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert (out / "image_000_gradient.png").is_file() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "missing.png"], "cannot read image"),
        (["--image", "PICTURE", "--methods", "lime"], "unknown attribution method"),
        (["--image", "PICTURE", "--layer", "nowhere"], "no layer"),
        (["--image", "PICTURE", "--maps", "NOT_A_RUN"], "not the folder of a map run"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(pictures, tmp_path, capsys, extra, message):
    extra = [pictures[0] if e == "PICTURE" else str(tmp_path) if e == "NOT_A_RUN" else e for e in extra]
    out = tmp_path / "out"
    assert main(["explain", "--model", "fmnist-cnn", "--out", str(out), *FAST_MAP, *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("agnostic-saliency: error: ") and message in error[0]
    assert not out.exists()
