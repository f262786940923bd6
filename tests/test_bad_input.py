"""The catalogue of bad input (docs/bad_input.md): every case, through the command line, gives one
line on stderr, its documented exit status, no traceback, and leaves no partial file and no
staging or checkpoint folder behind. Most cases run in-process (fast); a few run in a real
process, to prove there is no traceback on the real stderr."""

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from agnostic_saliency.cli import main
from agnostic_saliency.models.architectures import FmnistLeNet

FAST = ["--steps", "2", "--refine-steps", "1", "--batch-size", "4", "--eval-samples", "8", "--quiet"]
SCAN_FAST = ["--steps", "2", "--exemplar-steps", "1", "--draws", "1", "--quiet"]
EXPLAIN_FAST = ["--steps", "2", "--refine-steps", "1", "--batch-size", "4", "--quiet"]
SETTINGS = {"map": FAST, "scan": SCAN_FAST, "scan-many": SCAN_FAST, "explain": EXPLAIN_FAST}

MODELS = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        input_shape = (1, 12, 12)

        def __init__(self, classes=3, fill=None, fail=False):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 10 * 10, classes)
            self.fill, self.fail = fill, fail

        def forward(self, x):
            if self.fail:
                raise RuntimeError("the model fell over")
            out = self.fc(torch.relu(self.conv(x)).flatten(1))
            return out if self.fill is None else torch.full_like(out, self.fill)


    def build():
        torch.manual_seed(0)
        return Net()


    def nan():
        return Net(fill=float("nan"))


    def inf():
        return Net(fill=float("inf"))


    def raises():
        return Net(fail=True)


    def one_class():
        return Net(classes=1)


    def spatial():
        return nn.Conv2d(1, 3, 3)


    def broken():
        raise RuntimeError("factory exploded")
""")


class Payload:
    """A pickle that would run a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    """Every file the catalogue needs, made once."""
    root = tmp_path_factory.mktemp("assets")
    models = root / "models.py"
    models.write_text(MODELS)
    net = {
        "conv.weight": torch.randn(2, 1, 3, 3),
        "conv.bias": torch.randn(2),
        "fc.weight": torch.randn(3, 200),
        "fc.bias": torch.randn(3),
    }
    save_file(net, str(root / "good.safetensors"))
    good = (root / "good.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (root / "empty.safetensors").write_bytes(b"")
    (root / "empty.pt").write_bytes(b"")
    (root / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    lying = json.dumps({"conv.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}})
    (root / "lying.safetensors").write_bytes(struct.pack("<Q", len(lying)) + lying.encode() + b"\x00" * 8)
    (root / "huge_header.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    torch.save(net, root / "good.pt")
    pt = (root / "good.pt").read_bytes()
    (root / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (root / "junk.pt").write_bytes(b"this is neither a zip archive nor a pickle")
    marker = root / "payload-ran"
    torch.save({"conv.weight": Payload(marker)}, root / "payload.pt")
    (root / "payload_raw.pt").write_bytes(pickle.dumps(Payload(marker)))
    with zipfile.ZipFile(root / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        with bomb.open("archive/data/0", "w") as entry:
            block = bytes(1 << 20)
            for _ in range(32):  # 32 MiB of zeros in a file of about 32 KiB
                entry.write(block)
        bomb.writestr("archive/data.pkl", pickle.dumps({}))
    torch.save(FmnistLeNet().state_dict(), root / "lenet.pt")
    torch.save(FmnistLeNet(), root / "module.pt")
    for name in ("empty_images", "junk_images", "bomb_images"):
        (root / name).mkdir()
    (root / "junk_images" / "a.png").write_bytes(b"not a png")
    Image.new("L", (64, 64), 128).save(root / "bomb_images" / "big.png")
    (root / "names.txt").write_text("a\nb\n")
    Image.new("L", (12, 12), 100).save(root / "image.png")
    (root / "partial.csv").write_text("model,weights\nmodels.py:build,good.safetensors\n")
    (root / "a_file").write_text("a regular file")
    return {"root": root, "models": models, "marker": marker}


def W(name):  # noqa: N802 - a file among the assets
    return lambda a: str(a["root"] / name)


def M(factory="build"):  # noqa: N802 - a factory in the models file
    return lambda a: f"{a['models']}:{factory}"


# (case, command, arguments (callables take the assets), a fragment of the message).
# Every case exits with status 2 (docs/bad_input.md).
CATALOGUE = [
    # weights files: missing, empty, truncated, corrupt, mismatched, hostile
    ("missing weights file", "map", ["--model", M(), "--weights", W("missing.safetensors")], "weights file not found"),
    ("empty safetensors", "map", ["--model", M(), "--weights", W("empty.safetensors")], "corrupt safetensors"),
    ("empty .pt", "map", ["--model", M(), "--weights", W("empty.pt")], "is empty"),
    ("truncated safetensors", "map", ["--model", M(), "--weights", W("truncated.safetensors")], "corrupt safetensors"),
    ("truncated .pt", "map", ["--model", M(), "--weights", W("truncated.pt")], "corrupt weights file"),
    ("corrupt safetensors header", "map", ["--model", M(), "--weights", W("junk.safetensors")], "corrupt safetensors"),
    (
        "safetensors header lies about sizes",
        "map",
        ["--model", M(), "--weights", W("lying.safetensors")],
        "corrupt safetensors",
    ),
    (
        "safetensors header length of 2**60",
        "map",
        ["--model", M(), "--weights", W("huge_header.safetensors")],
        "corrupt safetensors",
    ),
    ("junk .pt", "map", ["--model", M(), "--weights", W("junk.pt")], "corrupt weights file"),
    (
        "pickle that would run code (torch.save)",
        "map",
        ["--model", M(), "--weights", W("payload.pt")],
        "refused to unpickle",
    ),
    (
        "pickle that would run code (raw pickle)",
        "scan",
        ["--model", M(), "--weights", W("payload_raw.pt")],
        "refused to unpickle",
    ),
    ("zip bomb .pt", "map", ["--model", M(), "--weights", W("bomb.pt")], "zip bomb"),
    (
        "weights of another architecture",
        "map",
        ["--model", "fmnist-cnn", "--weights", W("lenet.pt")],
        "do not fit the architecture",
    ),
    (
        "pickled module instead of a state dict",
        "scan",
        ["--model", M(), "--weights", W("module.pt")],
        "not a plain state dict",
    ),
    # models
    ("unknown model spec", "map", ["--model", "no-such-model"], "unknown model spec"),
    ("missing factory file", "scan", ["--model", "missing.py:build"], "model file not found"),
    ("factory raises", "map", ["--model", M("broken")], "factory exploded"),
    ("model returns NaN", "map", ["--model", M("nan")], "not finite"),
    ("model returns Inf", "scan", ["--model", M("inf")], "not finite"),
    (
        "model output has the wrong dimensions",
        "map",
        ["--model", M("spatial"), "--input-shape", "1,12,12"],
        "must be (N, classes)",
    ),
    ("model raises on forward", "map", ["--model", M("raises")], "the model fell over"),
    ("scan of a one-class model", "scan", ["--model", M("one_class")], "at least 2 classes"),
    # input shapes and value ranges
    (
        "input shape the model cannot take",
        "map",
        ["--model", M(), "--input-shape", "3,12,12"],
        "cannot take input shape",
    ),
    ("malformed input shape", "map", ["--model", M(), "--input-shape", "12,12"], "C,H,W"),
    ("zero-sized input shape", "scan", ["--model", M(), "--input-shape", "1,0,12"], "positive integers"),
    ("value range high below low", "map", ["--model", M(), "--value-range", "1,0"], "high > low"),
    ("value range of one number", "map", ["--model", M(), "--value-range", "1"], "two numbers"),
    ("mean of the wrong length", "map", ["--model", M(), "--mean", "0.1,0.2"], "needs 1 or 1 values"),
    ("zero std", "scan", ["--model", M(), "--std", "0"], "std values must be positive"),
    # targets
    ("unknown class name", "map", ["--model", M(), "--target", "zebra"], "unknown class name"),
    ("class index out of range", "map", ["--model", M(), "--target", "7"], "out of range"),
    ("empty target", "map", ["--model", M(), "--target", ""], "no targets"),
    ("empty class in a concept", "map", ["--model", M(), "--target", "0+"], "unknown class name"),
    ("class names file of the wrong length", "map", ["--model", M(), "--classes", W("names.txt")], "class names"),
    # budgets, steps, batch sizes
    ("zero budget", "map", ["--model", M(), "--budget", "0"], "--budget"),
    ("negative budget", "map", ["--model", M(), "--budget", "-0.1"], "--budget"),
    ("NaN budget", "map", ["--model", M(), "--budget", "nan"], "--budget"),
    ("zero steps", "map", ["--model", M(), "--steps", "0"], "--steps"),
    ("negative steps", "map", ["--model", M(), "--steps", "-3"], "--steps"),
    ("zero batch size", "map", ["--model", M(), "--batch-size", "0"], "--batch-size"),
    ("non-integer batch size", "map", ["--model", M(), "--batch-size", "four"], "--batch-size"),
    ("zero memory cap", "map", ["--model", M(), "--memory-cap", "0"], "--memory-cap"),
    ("negative refine steps", "map", ["--model", M(), "--refine-steps", "-1"], "--refine-steps"),
    ("negative checkpoint interval", "map", ["--model", M(), "--checkpoint-every", "-1"], "--checkpoint-every"),
    ("scan with zero steps", "scan", ["--model", M(), "--steps", "0"], "--steps"),
    ("scan with zero draws", "scan", ["--model", M(), "--draws", "0"], "--draws"),
    ("scan with a trigger area of 0", "scan", ["--model", M(), "--max-trigger-area", "0"], "largest trigger area"),
    # images
    (
        "missing image folder",
        "map",
        ["--model", M(), "--distribution", "images", "--images", W("nowhere")],
        "image folder not found",
    ),
    ("empty image folder", "scan", ["--model", M(), "--images", W("empty_images")], "no readable image"),
    ("only unreadable images", "map", ["--model", M(), "--held-out", W("junk_images")], "no readable image"),
    (
        "decompression-bomb image",
        "map",
        ["--model", M(), "--distribution", "images", "--images", W("bomb_images")],
        "no readable image",
    ),
    (
        "images distribution without images",
        "map",
        ["--model", M(), "--distribution", "images"],
        "needs a folder of images",
    ),
    ("unknown distribution", "map", ["--model", M(), "--distribution", "plasma"], "plasma"),
    # output folders
    ("output folder under a regular file", "map", ["--model", M(), "--out", W("a_file/out")], "not writable"),
    ("output path is a regular file", "scan", ["--model", M(), "--out", W("a_file")], "not a folder"),
    ("existing output folder", "map", ["--model", M(), "--out", "EXISTING"], "pass --overwrite"),
    ("existing scan output folder", "scan", ["--model", M(), "--out", "EXISTING"], "pass --overwrite"),
    ("interrupted run's folder without --resume", "map", ["--model", M(), "--out", "CHECKPOINTED"], "pass --resume"),
    # explain
    ("explain of a missing image", "explain", ["--model", M(), "--image", W("nope.png")], "cannot read image"),
    (
        "explain of a file that is not an image",
        "explain",
        ["--model", M(), "--image", W("names.txt")],
        "cannot read image",
    ),
    (
        "explain with a folder that is no map run",
        "explain",
        ["--model", M(), "--image", W("image.png"), "--maps", W("empty_images")],
        "is not the folder of a map run",
    ),
    # populations and executors
    ("missing manifest", "scan-many", [W("nope.csv")], "manifest not found"),
    ("manifest without its columns", "scan-many", [W("partial.csv")], "lacks the column"),
    ("folder of weights without a factory", "scan-many", [W("empty_images")], "needs the factory"),
    ("unknown executor", "scan-many", [W("partial.csv"), "--executor", "dask"], "invalid choice"),
    ("zero classes per task", "map", ["--model", M(), "--classes-per-task", "0"], "--classes-per-task"),
    (
        "resume of maps in class chunks",
        "map",
        ["--model", M(), "--classes-per-task", "2", "--resume"],
        "not available for maps computed in class chunks",
    ),
    # devices
    ("unknown device", "map", ["--model", M(), "--device", "tpu"], "device"),
    ("CUDA device that does not exist", "scan", ["--model", M(), "--device", "cuda:99"], "cuda:99"),
]
IN_A_REAL_PROCESS = {"pickle that would run code (torch.save)", "zip bomb .pt", "existing output folder"}


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _arguments(case: str, command: str, arguments: list, assets: dict, tmp_path: Path) -> tuple[list[str], Path]:
    resolved = [item(assets) if callable(item) else item for item in arguments]
    out = tmp_path / "out"
    if "--out" in resolved:
        index = resolved.index("--out") + 1
        if resolved[index] == "EXISTING":
            out.mkdir()
            (out / "keep.txt").write_text("from an earlier run")
        elif resolved[index] == "CHECKPOINTED":
            (out / ".checkpoint").mkdir(parents=True)
            (out / ".checkpoint" / "map.safetensors").write_bytes(b"an earlier run's state")
        else:
            out = Path(resolved[index])
        resolved[index] = str(out)
    else:
        resolved += ["--out", str(out)]
    return [command, *resolved, *SETTINGS[command]], out


@pytest.mark.parametrize(("case", "command", "arguments", "fragment"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input(case, command, arguments, fragment, assets, tmp_path, capsys, monkeypatch):
    argv, out = _arguments(case, command, arguments, assets, tmp_path)
    before = listing(out) if out.is_dir() else None
    marker_before = assets["marker"].exists()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # makes the 64x64 image a decompression bomb
    if case in IN_A_REAL_PROCESS:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
        )
        process = subprocess.run(
            [sys.executable, "-c", "import sys; from agnostic_saliency.cli import main; sys.exit(main())", *argv],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        code, err = process.returncode, process.stderr
        assert process.stdout == ""
    else:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's errors
            code = exit_.code
        err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agnostic-saliency: error: ") and fragment in lines[0], lines[0]
    # Nothing half-written: a folder the run created is gone, an existing one is as it was.
    if before is None:
        assert not out.exists() or (out.is_file() and out.read_text() == "a regular file")
    else:
        assert listing(out) == before
    assert not marker_before and not assets["marker"].exists()  # no pickled payload ever ran
    assert (assets["root"] / "a_file").read_text() == "a regular file"


def test_catalogue_is_large_and_documented():
    documented = (Path(__file__).parents[1] / "docs" / "bad_input.md").read_text(encoding="utf-8")
    assert len(CATALOGUE) >= 30
    missing = [case for case, *_ in CATALOGUE if f"| {case} |" not in documented]
    assert not missing, missing
