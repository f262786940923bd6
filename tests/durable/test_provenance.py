"""Provenance in both JSON files and both reports: versions, device, the SHA-256 of the weights and
factory files (checked against the files themselves), the command line, and the times."""

import datetime
import hashlib
import json
from importlib.metadata import version

import pytest
import torch
from safetensors.torch import save_file

import agnostic_saliency
from agnostic_saliency.cli import main
from agnostic_saliency.durable.provenance import Provenance, file_sha256
from agnostic_saliency.models.loading import ZOO


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def weights(user_model_file, tmp_path):
    from agnostic_saliency.models import load_model

    torch.manual_seed(0)
    path = tmp_path / "net.safetensors"
    save_file(load_model(f"{user_model_file}:build").model.state_dict(), str(path))
    return path


def check(record: dict, argv: list[str], weights_path, factory_path) -> None:
    assert record["tool"] == "agnostic-saliency" and record["version"] == agnostic_saliency.__version__
    assert record["torch"] == torch.__version__ and record["torchvision"] == version("torchvision")
    assert record["device"] == "cpu"
    assert record["command"] == ["agnostic-saliency", *argv]
    assert (
        record["weights"]["sha256"] == sha256(weights_path)
        and record["weights"]["bytes"] == weights_path.stat().st_size
    )
    if factory_path is None:
        assert record["factory"] is None
    else:
        assert record["factory"]["sha256"] == sha256(factory_path)
    started, finished = (datetime.datetime.fromisoformat(record[key]) for key in ("started", "finished"))
    assert started.tzinfo is not None and started <= finished
    assert datetime.datetime.now(datetime.timezone.utc) - started < datetime.timedelta(minutes=10)
    assert record["settings"]["seed"] == 0 and "argv" not in record["settings"]
    assert record["resumed"] is None


def test_map_and_scan_record_provenance(user_model_file, weights, tmp_path):
    model = ["--model", f"{user_model_file}:build", "--weights", str(weights), "--quiet"]
    runs = {
        "map": (
            ["map", *model, "--steps", "2", "--refine-steps", "1", "--batch-size", "4", "--eval-samples", "8"],
            "summary.json",
        ),
        "scan": (["scan", *model, "--steps", "2", "--exemplar-steps", "1", "--draws", "1"], "scan.json"),
    }
    for name, (arguments, summary) in runs.items():
        argv = [*arguments, "--out", str(tmp_path / name)]
        assert main(argv) == 0
        record = json.loads((tmp_path / name / summary).read_text())["provenance"]
        check(record, argv, weights, user_model_file)
        report = (tmp_path / name / "report.html").read_text()
        assert "<h2>Provenance</h2>" in report
        for text in (
            record["weights"]["sha256"],
            record["factory"]["sha256"],
            record["started"],
            record["finished"],
            torch.__version__,
            "--draws 1" if name == "scan" else "--refine-steps 1",
        ):
            assert text in report, text


def test_builtin_model_records_its_zoo_file():
    record = Provenance("fmnist-cnn", device="cpu").finish()
    assert record["weights"]["path"] == str(ZOO / "fmnist-cnn.safetensors")
    assert record["weights"]["sha256"] == sha256(ZOO / "fmnist-cnn.safetensors") and record["factory"] is None
    assert record["command"] is None and record["finished"] is not None
    assert Provenance("torchvision:resnet18", random_weights=True).finish()["weights"] is None


def test_file_sha256_reads_in_chunks(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # more than one 1 MiB chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_an_api_call_records_its_settings_and_no_command(user_model_file, weights, tmp_path):
    from agnostic_saliency import api

    loaded = api.load(f"{user_model_file}:build", weights=weights, device="cpu")
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("L", (12, 12), 90).save(tmp_path / "images" / "a.png")
    summary = api.map_to_folder(
        loaded,
        tmp_path / "maps",
        targets="a",
        held_out=tmp_path / "images",
        steps=2,
        refine_steps=1,
        batch_size=4,
        eval_samples=8,
        progress=False,
    )
    record = summary["provenance"]
    assert record["command"] is None
    assert record["settings"]["steps"] == 2 and record["settings"]["targets"] == "a"
    assert record["settings"]["held_out"] == str(tmp_path / "images")  # a path, as JSON holds it
    assert record["weights"]["sha256"] == sha256(weights)
    assert json.loads((tmp_path / "maps" / "summary.json").read_text())["provenance"] == record
    with pytest.raises(agnostic_saliency.InputError, match="pass --overwrite"):
        api.map_to_folder(loaded, tmp_path / "maps", steps=2, progress=False)


def test_a_module_factory_records_its_file():
    import agnostic_saliency.models.architectures as architectures

    record = Provenance("agnostic_saliency.models.architectures:FmnistLeNet").finish()
    assert record["factory"]["path"] == architectures.__file__
    assert record["factory"]["sha256"] == file_sha256(architectures.__file__) and record["weights"] is None
