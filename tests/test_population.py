"""scan-many: a population from a manifest, scanned one model after the other or as Ray tasks,
one table with the detection figures, and a restarted run that skips the finished models."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from agnostic_saliency.cli import main
from agnostic_saliency.errors import InputError
from agnostic_saliency.executors import LocalExecutor
from agnostic_saliency.metrics.detection import detection_summary, roc_auc
from agnostic_saliency.population import read_population, scan_population

FIXTURES = Path(__file__).parent / "fixtures" / "population"
LENET = str(Path(__file__).parents[1] / "examples" / "fmnist_lenet.py") + ":build"
# Small and without the polishes: the table, not the detection, is under test here.
TINY_SCAN = dict(steps=5, pool_size=64, exemplar_steps=3, batch_size=8, draws=1, seed=0, polish_steps=0)
FAST_FLAGS = ["--steps", "5", "--exemplar-steps", "3", "--draws", "1", "--quiet"]  # the CLI keeps the default pool


def manifest(tmp_path, count: int = 4) -> Path:
    """Four models: the fixtures' clean LeNet twice (under two names) and both trojaned ones."""
    rows = [("clean-a", "lenet-clean-0", 0, ""), ("clean-b", "lenet-clean-0", 0, ""),
            ("patch", "lenet-patch3-br-white", 1, 0), ("blend", "lenet-blend-random", 1, 8)][:count]
    path = tmp_path / "models.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "model", "weights", "input_shape", "trojaned", "target"])
        for name, file, trojaned, target in rows:
            writer.writerow([name, LENET, str(FIXTURES / f"{file}.safetensors"), "1,28,28", trojaned, target])
    return path


def test_detection_summary():
    rows = [{"trojaned": True, "target": 1, "score": 3.0, "flagged": [1]},
            {"trojaned": True, "target": 2, "score": 1.0, "flagged": []},
            {"trojaned": False, "target": None, "score": 2.0, "flagged": [4]},
            {"trojaned": None, "target": None, "score": 9.0, "flagged": [0]}]
    summary = detection_summary(rows)
    assert summary["models"] == 3 and summary["roc_auc"] == roc_auc([3.0, 1.0], [2.0]) == 0.5
    assert summary["detection_rate"] == 0.5 and summary["target_flagged"] == 0.5 and summary["false_flag_rate"] == 1.0


def test_manifests_in_every_form(tmp_path):
    from_csv = read_population(manifest(tmp_path))
    assert [m.name for m in from_csv] == ["clean-a", "clean-b", "patch", "blend"]
    assert from_csv[2].trojaned is True and from_csv[2].target == 0 and from_csv[0].target is None
    records = [{"model": m.model, "weights": m.weights, "input_shape": m.input_shape, "name": m.name,
                "trojaned": m.trojaned, "target": m.target} for m in from_csv]
    (tmp_path / "models.json").write_text(json.dumps(records))
    assert read_population(tmp_path / "models.json") == from_csv
    ours = read_population(FIXTURES / "manifest.json")  # what scripts/make_population.py writes
    assert {m.name for m in ours} == {"lenet-clean-0", "lenet-patch3-br-white", "lenet-blend-random"}
    assert all(m.model == "fmnist-lenet" and Path(m.weights).is_file() for m in ours)
    folder = read_population(FIXTURES, model=LENET, input_shape="1,28,28")
    assert [m.name for m in folder] == ["lenet-blend-random", "lenet-clean-0", "lenet-patch3-br-white"]
    assert all(m.trojaned is None for m in folder)  # a folder carries no ground truth


@pytest.mark.parametrize("content, message", [
    ("model,weights\nx,y\n", "lacks the column"), ("[1, 2]", "has no model"), ("{", "not valid JSON"),
    ('[{"model": "a", "name": "m"}, {"model": "b", "name": "m"}]', "repeated: m"),
    ('[{"model": "a", "trojaned": "maybe"}]', "trojaned must be 0 or 1"),
])
def test_bad_manifests(tmp_path, content, message):
    path = tmp_path / ("m.csv" if content.startswith("model") else "m.json")
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_population(path)
    with pytest.raises(InputError, match="needs the factory"):
        read_population(FIXTURES)


def test_scan_many_table_matches_each_scan_and_a_restart_skips_finished_models(tmp_path):
    models = read_population(manifest(tmp_path))
    out = tmp_path / "run"
    table = scan_population(models, out, progress=False, **TINY_SCAN)
    rows = table["models"]
    assert [r["model"] for r in rows] == ["clean-a", "clean-b", "patch", "blend"]
    for row in rows:
        scan = json.loads((out / row["model"] / "scan.json").read_text())
        assert row["flagged"] == scan["flagged"] and row["score"] == scan["score"]
        assert row["verdict"] == ("trojaned" if scan["flagged"] else "clean")
    assert rows[0]["score"] == rows[1]["score"]  # the same weights and seed: the same scan
    assert table["summary"] == detection_summary(rows) and table["summary"]["models"] == 4
    with open(out / "population.csv") as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == ["clean-a", "clean-b", "patch", "blend"]

    # As if killed after two models: two folders and the tables are gone; a restart scans only those two.
    for name in ("patch", "blend"):
        shutil.rmtree(out / name)
    (out / "population.json").unlink()
    kept = (out / "clean-a" / "scan.json").stat().st_mtime_ns
    ran = []

    class Counting(LocalExecutor):
        def run(self, function, items, gpus=0):
            ran.extend(item[0].name for item in items)
            yield from super().run(function, items, gpus)

    again = scan_population(models, out, Counting(), progress=False, **TINY_SCAN)
    assert ran == ["patch", "blend"] and again["settings"]["skipped_as_done"] == 2
    assert (out / "clean-a" / "scan.json").stat().st_mtime_ns == kept
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["models"]] == strip


def test_scan_many_command_reports_a_bad_model_in_its_row(tmp_path, capsys):
    path = manifest(tmp_path, count=1)
    path.write_text(path.read_text() + f"broken,{LENET},{tmp_path / 'missing.safetensors'},1,28,28,0,\n".replace(
        "1,28,28", '"1,28,28"'))
    code = main(["scan-many", str(path), "--out", str(tmp_path / "run"), *FAST_FLAGS])
    table = json.loads((tmp_path / "run" / "population.json").read_text())
    broken = table["models"][-1]
    assert code == 1 and table["errors"] == 1 and broken["verdict"] == "error" and "not found" in broken["error"]
    assert table["models"][0]["verdict"] in ("clean", "trojaned")  # the good model was still scanned
    assert table["summary"]["models"] == 1 and table["summary"]["roc_auc"] is None  # no trojaned model known


@pytest.mark.xdist_group("ray")  # one local Ray instance at a time
def test_scan_many_on_ray_gives_the_local_table(tmp_path):
    ray = pytest.importorskip("ray")
    from agnostic_saliency.executors import make_executor

    models = read_population(manifest(tmp_path))[1:3]  # a clean and a trojaned model
    local = scan_population(models, tmp_path / "local", progress=False, **TINY_SCAN)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = scan_population(models, tmp_path / "ray", make_executor("ray"), progress=False, **TINY_SCAN)
    finally:
        ray.shutdown()
    assert remote["settings"]["executor"] == "ray"
    assert [(r["model"], r["flagged"], r["score"]) for r in remote["models"]] == \
        [(r["model"], r["flagged"], r["score"]) for r in local["models"]]
    assert remote["summary"] == local["summary"]
