"""End-to-end tests of the command line: the files it writes, and how it reports bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from agnostic_saliency.cli import main
from agnostic_saliency.models.architectures import FmnistLeNet

FAST = ["--steps", "3", "--refine-steps", "2", "--batch-size", "4"]
FMNIST = ["map", "--model", "fmnist-cnn", *FAST, "--target", "0,trouser", "--quiet"]
REQUIRED = {
    "model",
    "input_shape",
    "distribution",
    "norm",
    "budget",
    "steps",
    "batch_size",
    "seed",
    "seconds",
    "sample_gradients",
    "classes",
}
PER_CLASS = {
    "index",
    "name",
    "fooling_rate",
    "target_confidence",
    "map_alone_label",
    "map_alone_confidence",
    "unrefined",
}


def console_script() -> str:
    script = Path(sys.executable).parent / "agnostic-saliency"
    found = str(script) if script.exists() else shutil.which("agnostic-saliency")
    assert found, "the agnostic-saliency console script is not installed"
    return found


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_map_folder(out: Path, num_maps: int, shape: tuple[int, int, int], names: list[str]) -> dict:
    tensors = load_file(str(out / "maps.safetensors"))
    maps = tensors["maps"]
    assert maps.shape == (num_maps, *shape)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert maps.abs().max() > 0
    pngs = sorted(out.glob("map_*.png"))
    assert len(pngs) == num_maps
    for png, name in zip(pngs, names):
        assert name.replace("/", "-").replace(" ", "-") in png.name
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert image.width >= shape[2] and image.width / image.height == pytest.approx(shape[2] / shape[1])
    with Image.open(out / "grid.png") as grid:
        assert grid.format == "PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert REQUIRED <= set(summary)
    assert summary["input_shape"] == list(shape)
    assert len(summary["classes"]) == num_maps
    for row, name in zip(summary["classes"], names):
        assert PER_CLASS <= set(row)
        assert row["name"] == name
        assert 0.0 <= row["fooling_rate"] <= 1.0
        assert 0.0 <= row["target_confidence"] <= 1.0
        assert 0.0 < row["map_alone_confidence"] <= 1.0
        assert isinstance(row["map_alone_label"], int)
        assert {"fooling_rate", "target_confidence", "map_alone_label", "map_alone_confidence"} <= set(row["unrefined"])
    assert summary["seconds"] > 0
    # Stored maps respect the budget (l2: RMS as a fraction of the pixel range).
    if summary["norm"] == "l2":
        assert float(maps.flatten(1).pow(2).mean(1).sqrt().max()) <= summary["budget"] * (1 + 1e-4)
    assert not [p for p in listing(out) if p.startswith(".")]  # no staging leftovers
    return summary


@pytest.fixture(scope="module")
def fmnist_runs(tmp_path_factory):
    """The same fmnist-cnn run twice in-process, and once through the console script."""
    root = tmp_path_factory.mktemp("fmnist")
    outs = [root / "a", root / "b", root / "script"]
    codes = [main([*FMNIST, "--out", str(outs[0])]), main([*FMNIST, "--out", str(outs[1])])]
    # The same thread count as the in-process runs: intra-op parallelism changes the last bits.
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    process = subprocess.run(
        [console_script(), *FMNIST, "--out", str(outs[2])],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    return outs, codes, process


def test_map_fmnist_cnn(fmnist_runs):
    outs, codes, _ = fmnist_runs
    assert codes[0] == 0
    summary = check_map_folder(outs[0], 2, (1, 28, 28), ["t-shirt/top", "trouser"])
    assert summary["model"] == "fmnist-cnn"
    assert [row["index"] for row in summary["classes"]] == [0, 1]
    assert summary["steps"] == 3 and summary["batch_size"] == 4 and summary["seed"] == 0
    assert summary["norm"] == "l2" and summary["distribution"] == "dark2+uniform+shapes" and summary["budget"] == 0.25
    # Per-sample gradients: 2 maps x 4 samples x (3 nudging + 2 refinement) iterations.
    assert summary["sample_gradients"] == 2 * 4 * (3 + 2)


def test_same_seed_gives_identical_maps_file(fmnist_runs):
    outs, codes, process = fmnist_runs
    assert codes[1] == 0
    first = (outs[0] / "maps.safetensors").read_bytes()
    assert first == (outs[1] / "maps.safetensors").read_bytes()
    assert process.returncode == 0
    assert first == (outs[2] / "maps.safetensors").read_bytes()


def test_console_script(fmnist_runs):
    outs, _, process = fmnist_runs
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    check_map_folder(outs[2], 2, (1, 28, 28), ["t-shirt/top", "trouser"])


def test_other_seed_gives_other_maps(fmnist_runs, tmp_path):
    outs, _, _ = fmnist_runs
    assert main([*FMNIST, "--seed", "1", "--no-refine", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seed"] == 1
    assert not torch.equal(
        load_file(str(tmp_path / "maps.safetensors"))["maps"], load_file(str(outs[0] / "maps.safetensors"))["maps"]
    )


def test_torchvision_resnet18_end_to_end(tmp_path):
    code = main(
        [
            "map",
            "--model",
            "torchvision:resnet18",
            "--random-weights",
            "--input-shape",
            "3,64,64",
            "--target",
            "0,1",
            "--steps",
            "2",
            "--no-refine",
            "--batch-size",
            "2",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = check_map_folder(tmp_path, 2, (3, 64, 64), ["0", "1"])
    assert summary["model"] == "torchvision:resnet18"
    assert summary["input_spec"]["mean"] == [0.485, 0.456, 0.406]


def test_map_in_bf16_on_a_torchvision_model(tmp_path):
    code = main(
        [
            "map",
            "--model",
            "torchvision:resnet18",
            "--random-weights",
            "--input-shape",
            "3,32,32",
            "--target",
            "0",
            "--steps",
            "2",
            "--no-refine",
            "--batch-size",
            "2",
            "--precision",
            "bf16",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = check_map_folder(tmp_path, 1, (3, 32, 32), ["0"])
    assert summary["settings"]["precision"] == "bf16"
    assert torch.isfinite(load_file(str(tmp_path / "maps.safetensors"))["maps"]).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on CUDA; the CPU refuses it")
def test_map_in_fp16_on_the_cpu_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "map",
            "--model",
            "fmnist-mlp",
            "--target",
            "0",
            "--steps",
            "2",
            "--no-refine",
            "--precision",
            "fp16",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code != 0 and "fp16" in error and "\n" not in error and "Traceback" not in error
    assert not (out / "maps.safetensors").exists()


def test_map_compile_reaches_every_chunk_and_is_recorded(tmp_path, monkeypatch):
    """--compile compiles the model once per class chunk (stand-in compiler: the model as it is)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    arguments = ["map", "--model", "fmnist-mlp", "--target", "0,1,2", "--steps", "2", "--no-refine",
                 "--batch-size", "2", "--eval-samples", "4", "--quiet", "--compile"]
    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0
    assert len(compiled) == 1
    assert main([*arguments, "--classes-per-task", "2", "--out", str(tmp_path / "chunks")]) == 0
    assert len(compiled) == 3  # two chunks, one compiled model each
    summary = json.loads((tmp_path / "chunks" / "summary.json").read_text())
    assert summary["provenance"]["settings"]["compile"] is True


def test_map_preset_readable_sets_its_distribution_unless_one_is_given(tmp_path):
    arguments = ["map", "--model", "fmnist-mlp", "--target", "0", "--steps", "2", "--refine-steps", "1",
                 "--batch-size", "2", "--eval-samples", "4", "--quiet", "--preset", "readable"]
    assert main([*arguments, "--out", str(tmp_path / "preset")]) == 0
    summary = json.loads((tmp_path / "preset" / "summary.json").read_text())
    assert summary["distribution"] == "dark2+shapes" and summary["settings"]["frequency_decay"] == 1.0
    assert main([*arguments, "--distribution", "dark", "--out", str(tmp_path / "mine")]) == 0
    assert json.loads((tmp_path / "mine" / "summary.json").read_text())["distribution"] == "dark"
    assert main([*arguments, "--frequency-decay", "0.5", "--refine-frequency-decay", "0.25",
                 "--out", str(tmp_path / "decay")]) == 0
    settings = json.loads((tmp_path / "decay" / "summary.json").read_text())["settings"]
    assert settings["frequency_decay"] == 0.5 and settings["refine_frequency_decay"] == 0.25
    with pytest.raises(SystemExit) as refused:
        main([*arguments, "--frequency-decay", "-1", "--out", str(tmp_path / "bad")])
    assert refused.value.code == 2 and not (tmp_path / "bad").exists()
    assert main(["map", "--model", "fmnist-mlp", "--target", "0", "--steps", "1", "--no-refine", "--quiet",
                 "--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["distribution"] == "dark2+uniform+shapes"


def test_map_compile_failure_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    real_compile = torch.compile

    def broken_backend(graph, example_inputs):
        raise RuntimeError("the compiler is missing\nand more")

    monkeypatch.setattr(torch, "compile", lambda module: real_compile(module, backend=broken_backend))
    out = tmp_path / "out"
    code = main(["map", "--model", "fmnist-mlp", "--target", "0", "--steps", "2", "--no-refine", "--quiet",
                 "--compile", "--out", str(out)])
    torch._dynamo.reset()
    error = capsys.readouterr().err.strip()
    assert code == 2 and "torch.compile failed" in error and "the compiler is missing" in error
    assert "\n" not in error and "Traceback" not in error
    assert not (out / "maps.safetensors").exists()


@pytest.fixture
def user_model(user_model_file) -> Path:
    return user_model_file


def test_user_model_with_weights_classes_and_images(user_model, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    net_state = {
        "conv.weight": torch.randn(2, 1, 3, 3),
        "conv.bias": torch.randn(2),
        "fc.weight": torch.randn(3, 200),
        "fc.bias": torch.randn(3),
    }
    torch.save(net_state, weights)
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\nblue\n")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("L", (20 + i, 30), 60 * i).save(images / f"{i}.png")
    (images / "junk.png").write_bytes(b"junk")
    out = tmp_path / "out"
    code = main(
        [
            "map",
            "--model",
            f"{user_model}:build",
            "--weights",
            str(weights),
            "--classes",
            str(names),
            "--distribution",
            "uniform+images",
            "--images",
            str(images),
            "--held-out",
            str(images),
            "--target",
            "blue,red+green",
            "--norm",
            "linf",
            "--budget",
            "0.1",
            *FAST,
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in summary["classes"]] == ["blue", "red+green"]
    assert summary["classes"][1]["index"] == [0, 1]
    assert summary["distribution"] == "uniform+images"
    assert summary["unreadable_images_skipped"] == 2  # the junk file, seen in both folders
    assert "real_fooling_rate" in summary["classes"][0]
    maps = load_file(str(out / "maps.safetensors"))["maps"]
    assert maps.shape == (2, 1, 12, 12)
    assert float(maps.abs().max()) <= 0.1 + 1e-6


# -- bad input ------------------------------------------------------------------------------


def bad_inputs(tmp: Path, user: Path) -> dict[str, list[str]]:
    """Each bad input the map command must refuse, as map arguments (without --out)."""
    (tmp / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (tmp / "junk.pt").write_bytes(b"this is not a zip or pickle")
    torch.save(FmnistLeNet().state_dict(), tmp / "lenet.pt")
    torch.save(FmnistLeNet(), tmp / "module.pt")
    (tmp / "empty").mkdir(exist_ok=True)
    spec = f"{user}:build"
    return {
        "unknown model spec": ["--model", "no-such-model"],
        "unknown torchvision model": ["--model", "torchvision:no_such_net", "--random-weights"],
        "missing weights": ["--model", spec, "--weights", str(tmp / "missing.safetensors")],
        "corrupt safetensors": ["--model", spec, "--weights", str(tmp / "junk.safetensors")],
        "corrupt pt": ["--model", spec, "--weights", str(tmp / "junk.pt")],
        "weights do not fit": ["--model", "fmnist-cnn", "--weights", str(tmp / "lenet.pt")],
        "pickled module": ["--model", spec, "--weights", str(tmp / "module.pt")],
        "wrong input shape": ["--model", spec, "--input-shape", "3,12,12"],
        "malformed input shape": ["--model", spec, "--input-shape", "12,12"],
        "unknown class name": ["--model", spec, "--target", "zebra"],
        "class index out of range": ["--model", spec, "--target", "7"],
        "output not (N, classes)": ["--model", f"{user}:spatial", "--input-shape", "1,12,12"],
        "empty image folder": ["--model", spec, "--distribution", "images", "--images", str(tmp / "empty")],
        "empty held-out folder": ["--model", spec, "--held-out", str(tmp / "empty")],
        "images distribution without images": ["--model", spec, "--distribution", "images"],
        "unknown distribution": ["--model", spec, "--distribution", "plasma"],
        "missing class names file": ["--model", spec, "--classes", str(tmp / "missing.txt")],
        "class names do not match": ["--model", spec, "--classes", str(tmp / "user_model.py")],
        "non-positive budget": ["--model", spec, "--budget", "0"],
    }


BAD_CASES = [
    "unknown model spec",
    "unknown torchvision model",
    "missing weights",
    "corrupt safetensors",
    "corrupt pt",
    "weights do not fit",
    "pickled module",
    "wrong input shape",
    "malformed input shape",
    "unknown class name",
    "class index out of range",
    "output not (N, classes)",
    "empty image folder",
    "empty held-out folder",
    "images distribution without images",
    "unknown distribution",
    "missing class names file",
    "class names do not match",
    "non-positive budget",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_writes_nothing(case, user_model, tmp_path, capsys):
    arguments = bad_inputs(tmp_path, user_model)[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("from an earlier run")
    capsys.readouterr()
    try:  # --overwrite: an existing folder alone is refused, and each case's own error must show
        code = main(["map", *arguments, *FAST, "--overwrite", "--out", str(out)])
    except SystemExit as exit_:  # argparse's range checks
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("agnostic-saliency: error: ")
    assert len(lines[0]) > len("agnostic-saliency: error: ") + 10
    assert "Traceback" not in captured.err
    assert listing(out) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "from an earlier run"


def test_bad_input_does_not_create_the_out_folder(user_model, tmp_path, capsys):
    out = tmp_path / "new-out"
    assert main(["map", "--model", f"{user_model}:build", "--target", "zebra", "--out", str(out)]) == 2
    assert not out.exists() or listing(out) == []


def test_unwritable_out_folder(user_model, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file")
    code = main(["map", "--model", f"{user_model}:build", *FAST, "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("agnostic-saliency: error: ") and "not writable" in err
    assert blocker.read_text() == "a regular file"
    assert main(["map", "--model", f"{user_model}:build", *FAST, "--out", str(blocker)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_bad_input_through_the_console_script(user_model, tmp_path):
    """Real stderr of a real process: one line, no traceback, no warnings with source lines."""
    junk_only = tmp_path / "junk_only"
    junk_only.mkdir()
    (junk_only / "a.png").write_bytes(b"junk")
    torch.save(FmnistLeNet(), tmp_path / "module.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    # The same thread count as the in-process runs: intra-op parallelism changes the last bits.
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    for arguments, expected in [
        (["--model", f"{user_model}:build", "--weights", str(tmp_path / "module.pt")], "not a plain state dict"),
        (
            ["--model", f"{user_model}:build", "--distribution", "images", "--images", str(junk_only)],
            "no readable image",
        ),
    ]:
        process = subprocess.run(
            [console_script(), "map", *arguments, "--overwrite", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert process.returncode == 2
        assert "Traceback" not in process.stderr
        lines = process.stderr.strip().splitlines()
        assert lines[-1].startswith("agnostic-saliency: error: ") and expected in lines[-1]
        # At most one-line warnings before the error (the skipped junk image), no source lines.
        assert all(line.startswith("agnostic-saliency: ") for line in lines), process.stderr
        assert listing(out) == ["keep.txt"]
