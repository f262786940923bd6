"""The scan end to end on the fixture population, and through the CLI."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from agnostic_saliency.backdoor.scan import MAX_TRIGGER_AREA, attack_success, scan, scan_once
from agnostic_saliency.cli import main
from agnostic_saliency.errors import InputError
from agnostic_saliency.metrics.anomaly import flag_anomalies
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import FmnistLeNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"
SPEC = InputSpec((1, 28, 28))


def _model(name):
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / f"{name}.safetensors")))
    return model.eval()


def test_scan_flags_the_patch_target_and_recovers_a_working_trigger():
    model = _model("lenet-patch3-br-white")
    model.train()
    result = scan(model, SPEC, steps=100, progress=False)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert 0 in result.flagged and result.trojaned
    assert result.score == max(row["anomaly_index"] for row in result.classes if row["compact"] or row["faint_blend"])
    # a compact class is judged by the box its trigger needs, any other by its hard region
    assert all(
        row["anomaly_index"] == (row["box_index"] if row["compact"] else row["size_index"]) for row in result.classes
    )
    assert all(row["box_size"] == pytest.approx((row["mask_l1"] * row["box_pixels"]) ** 0.5) for row in result.classes)
    assert result.classes[0]["compact"] and result.classes[0]["box_pixels"] <= 16
    assert result.classes[0]["trigger_kind"] == "patch"
    mask, pattern = result.triggers[0]
    assert mask.shape == (28, 28) and pattern.shape == (1, 28, 28)
    assert result.trigger_asr[0] >= 0.8
    truth = load_file(str(FIXTURES / "lenet-patch3-br-white.trigger.safetensors"))["mask"]
    overlap = ((mask > 0.5) & (truth > 0.5)).sum() / ((mask > 0.5) | (truth > 0.5)).sum()
    assert overlap > 0.5
    # the 3x3 patch itself: the region is no larger than a 4x4 square, and much smaller than any clean class's
    assert result.classes[0]["region_pixels"] <= 16
    assert all(row["region_pixels"] >= 4 * result.classes[0]["region_pixels"] for row in result.classes[1:])
    assert all(row["start"] in ("uniform", "gradient") for row in result.classes)


def test_mixed_precision_scan_finds_the_same_patch_and_gives_the_model_back():
    model = _model("lenet-patch3-br-white")
    storage = [(p.data_ptr(), p.stride()) for p in model.parameters()]
    result = scan(model, SPEC, steps=100, precision="bf16", progress=False)
    assert result.flagged[0] == 0 and result.settings["precision"] == "bf16"
    assert result.classes[0]["region_pixels"] <= 16
    assert [(p.data_ptr(), p.stride()) for p in model.parameters()] == storage


def test_scan_batches_classes_and_samples_under_a_tiny_memory_cap():
    model = _model("lenet-clean-0")
    largest = [0]
    model.register_forward_hook(
        lambda _module, inputs, _output: largest.__setitem__(0, max(largest[0], len(inputs[0])))
    )
    # 0.5 MB holds one LeNet sample's forward and backward (about 0.3 MB), not two.
    result = scan(model, SPEC, steps=5, pool_size=64, exemplar_steps=3, batch_size=8, memory_cap_mb=0.5, progress=False)
    assert result.settings["class_chunks"] > 1
    assert len(result.classes) == 10
    # the fit takes one class's batch per pass, and every other pass (exemplars, regions, boxes) one sample
    assert largest[0] == 8


def test_the_default_box_bound_admits_an_8x8_box_on_28x28_but_not_9x9():
    # the largest target box seen was 64 px, easy clean classes took 81 (docs/design.md, the box bound)
    assert 8 * 8 <= int(MAX_TRIGGER_AREA * 28 * 28) < 9 * 9


def test_only_classes_whose_trigger_fits_the_box_are_flagged():
    model = _model("lenet-patch3-br-white")
    settings = dict(steps=5, pool_size=96, exemplar_steps=5, progress=False)
    anywhere = scan(model, SPEC, max_trigger_area=1.0, **settings)
    anomalous = [row["index"] for row in anywhere.classes if row["anomaly_index"] > 2]
    assert anywhere.flagged == [k for k in anomalous if anywhere.classes[k]["box_pixels"] <= 28 * 28]
    assert all(row["compact"] == (row["box_pixels"] <= 28 * 28) for row in anywhere.classes)
    # a one-pixel box fits no trigger here: nothing is flagged, whatever the anomaly index
    nowhere = scan(model, SPEC, max_trigger_area=1 / 784, max_blend_strength=0.0, **settings)
    # the signature's index does not depend on the bound (the box index does: the second look
    # searches every size up to the bound)
    assert [row["size_index"] for row in nowhere.classes] == [row["size_index"] for row in anywhere.classes]
    assert all(row["box_pixels"] > 1 for row in nowhere.classes)
    assert nowhere.flagged == [] and not nowhere.trojaned and nowhere.score == 0.0
    assert not any(row["compact"] for row in nowhere.classes)
    with pytest.raises(InputError, match="share of the image"):
        scan(model, SPEC, max_trigger_area=0, **settings)
    with pytest.raises(InputError, match="blend strength"):
        scan(model, SPEC, max_blend_strength=1.5, **settings)
    with pytest.raises(InputError, match="blend test's flip share"):
        scan(model, SPEC, blend_required=0, **settings)
    with pytest.raises(InputError, match="at least one placement"):
        scan(model, SPEC, box_placements=0, **settings)
    assert anywhere.settings["box_placements"] == 3
    with pytest.raises(InputError, match="polish's steps"):
        scan(model, SPEC, polish_steps=-1, **settings)


def test_the_trigger_polish_changes_only_the_flagged_classes_patterns():
    model = _model("lenet-patch3-br-white")
    settings = dict(steps=5, pool_size=96, exemplar_steps=5, max_trigger_area=1.0, progress=False)
    polished, plain = scan(model, SPEC, **settings), scan(model, SPEC, polish_steps=0, **settings)
    assert polished.settings["polish_steps"] == 100 and plain.settings["polish_steps"] == 0
    assert polished.flagged == plain.flagged and polished.flagged
    strip = lambda rows: [{k: v for k, v in row.items() if k != "trigger_polished"} for row in rows]  # noqa: E731
    assert strip(polished.classes) == strip(plain.classes)
    assert all(plain.classes[k]["trigger_polished"] is False for k in plain.flagged)
    for k in polished.flagged:
        (mask, pattern), (plain_mask, plain_pattern) = polished.triggers[k], plain.triggers[k]
        assert torch.equal(mask, plain_mask)
        assert torch.equal(pattern, plain_pattern) != polished.classes[k]["trigger_polished"]
        assert torch.equal(pattern[:, mask == 0], plain_pattern[:, mask == 0])  # only under the mask
    unflagged = [k for k in range(10) if k not in polished.flagged]
    assert torch.equal(polished.patterns[unflagged], plain.patterns[unflagged])
    # two fits per flagged class, on its exemplars and then on raw samples, of 100 steps of 32 samples each
    assert polished.sample_gradients - plain.sample_gradients == 2 * 100 * 32 * len(polished.flagged)


def test_scan_flags_a_blend_target_by_its_faint_whole_image_trigger():
    model = _model("lenet-blend-random")
    result = scan(model, SPEC, progress=False)
    target = result.classes[7]  # trained with a random pattern blended at 0.15
    assert 7 in result.flagged and target["trigger_kind"] == "blend" and not target["compact"]
    assert target["faint_blend"] and target["blend_strength"] <= 0.14
    # judged on how far its blend stands below the others', or on its signature if more anomalous
    assert target["blend_index"] > 2
    assert target["anomaly_index"] == max(target["size_index"], target["blend_index"])
    # the test asks half the held-out exemplars to flip; the trigger, 80% of them, so it is stronger
    mask, pattern = result.triggers[7]
    assert target["blend_strength"] <= target["trigger_strength"] <= 0.2
    assert torch.equal(mask, torch.full((28, 28), target["trigger_strength"]))
    assert result.trigger_asr[7] >= 0.8
    # every other class needs a far stronger blend of its pattern, if any works
    assert all(
        row["blend_strength"] is None or row["blend_strength"] > 2 * target["blend_strength"] or row["compact"]
        for row in result.classes
        if row["index"] != 7
    )
    assert all(row["trigger_strength"] is None for row in result.classes if row["index"] not in result.flagged)
    # with blend flagging off, the same anomalous class is not flagged: its trigger is not compact,
    # and it is judged on its signature alone (the fit is the same)
    off = scan(model, SPEC, max_blend_strength=0.0, draws=1, progress=False)  # its first draw is the one above
    assert 7 not in off.flagged and not off.classes[7]["faint_blend"]
    assert off.classes[7]["anomaly_index"] == off.classes[7]["size_index"] == target["size_index"] > 2


def test_scan_refuses_a_single_class_model():
    single = nn.Sequential(nn.Flatten(), nn.Linear(784, 1))
    with pytest.raises(InputError, match="at least 2 classes"):
        scan(single, SPEC, steps=1, progress=False)


def test_attack_success_is_none_when_every_sample_already_has_the_target():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 1.0]).expand(len(x), 2)

    samples = torch.rand(4, 1, 28, 28)
    mask, pattern = torch.ones(28, 28), torch.zeros(1, 28, 28)
    assert attack_success(Constant(), mask, pattern, samples, target=1) is None
    assert attack_success(Constant(), mask, pattern, samples, target=0) == 0.0


def test_scan_cli_writes_its_folder(tmp_path):
    factory = tmp_path / "lenet.py"
    factory.write_text(
        "from agnostic_saliency.models.architectures import FmnistLeNet\ndef build():\n    return FmnistLeNet()\n"
    )
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for i in range(3):
        Image.fromarray((torch.rand(28, 28, generator=generator) * 255).byte().numpy()).save(images / f"{i}.png")
    (images / "junk.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        [
            "scan",
            "--model",
            f"{factory}:build",
            "--weights",
            str(FIXTURES / "lenet-patch3-br-white.safetensors"),
            "--input-shape",
            "1,28,28",
            "--images",
            str(images),
            "--steps",
            "20",
            "--exemplar-steps",
            "5",
            "--precision",
            "bf16",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "scan.json").read_text())
    assert {"classes", "flagged", "trojaned", "score", "seconds", "trigger_asr"} <= set(report)
    assert report["unreadable_images_skipped"] == 1
    assert report["settings"]["precision"] == "bf16"
    assert {"index", "name", "mask_l1", "anomaly_index", "box_pixels", "compact"} <= set(report["classes"][0])
    assert (
        report["settings"]["max_trigger_area"] == MAX_TRIGGER_AREA and report["settings"]["max_blend_strength"] == 0.14
    )
    assert all(
        row["trigger_kind"] in ("patch", "blend") for row in report["classes"] if row["index"] in report["flagged"]
    )
    tensors = load_file(str(out / "triggers.safetensors"))
    for k in report["flagged"]:
        assert tensors[f"mask_{k}"].shape == (28, 28) and tensors[f"pattern_{k}"].shape == (1, 28, 28)
        assert (out / f"trigger_{k}.png").is_file()
    assert (out / "anomaly_index.png").is_file() and (out / "class_maps.png").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<tr class="flagged">') == len(report["flagged"]) and html.count("<h3>") == len(report["flagged"])
    assert ("Backdoor suspected" in html) == report["trojaned"]
    assert "1 unreadable files skipped" in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r' src="([^"]*)"', html))


def test_scan_cli_bad_input_is_one_line(tmp_path, capsys):
    code = main(["scan", "--model", "no-such-model", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("agnostic-saliency: error:")


def test_scan_reports_its_exemplars():
    result = scan(_model("lenet-clean-0"), SPEC, steps=5, pool_size=60, progress=False)
    assert result.settings["exemplar_steps"] == 30
    assert result.settings["exemplars_on_class"] >= 0.95
    raw = scan(_model("lenet-clean-0"), SPEC, steps=5, pool_size=60, exemplar_steps=0, progress=False)
    assert raw.settings["exemplars_on_class"] is None
    assert raw.sample_gradients < result.sample_gradients


def test_a_second_draw_runs_only_while_nothing_is_flagged():
    small = dict(steps=5, pool_size=60, exemplar_steps=3, progress=False)
    clean = _model("lenet-clean-0")
    both = scan(clean, SPEC, seed=3, **small)
    first, second = scan_once(clean, SPEC, seed=3, **small), scan_once(clean, SPEC, seed=4, **small)
    assert not first.flagged and not second.flagged  # a clean model: both draws run
    assert [d["seed"] for d in both.settings["draws"]] == [3, 4]
    assert both.score == max(first.score, second.score)
    assert both.sample_gradients == first.sample_gradients + second.sample_gradients
    one = scan(clean, SPEC, seed=3, draws=1, **small)
    assert [d["seed"] for d in one.settings["draws"]] == [3] and one.sample_gradients == first.sample_gradients
    # A flagged first draw ends the scan: its result is the first draw's.
    trojaned = _model("lenet-patch3-br-white")
    flagged = scan(trojaned, SPEC, seed=0, steps=30, progress=False)
    assert flagged.flagged and len(flagged.settings["draws"]) == 1
    assert flagged.settings["draws"][0]["flagged"] == flagged.flagged
    with pytest.raises(InputError):
        scan(clean, SPEC, draws=0, **small)


def test_scan_cli_takes_its_draws(tmp_path):
    # With nothing flagged (an unreachable threshold) every draw runs, at seeds N, N+1, ...
    factory = tmp_path / "lenet.py"
    factory.write_text(
        "from agnostic_saliency.models.architectures import FmnistLeNet\ndef build():\n    return FmnistLeNet()\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "scan",
            "--model",
            f"{factory}:build",
            "--weights",
            str(FIXTURES / "lenet-clean-0.safetensors"),
            "--input-shape",
            "1,28,28",
            "--steps",
            "2",
            "--exemplar-steps",
            "1",
            "--threshold",
            "1000",
            "--seed",
            "5",
            "--draws",
            "3",
            "--shortlist",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "scan.json").read_text())
    assert report["settings"]["small_box_look"] is False  # off unless asked for
    assert all(row["small_box_reach"] is None for row in report["classes"])  # the look never ran
    assert [draw["seed"] for draw in report["settings"]["draws"]] == [5, 6, 7]
    assert report["flagged"] == [] and report["settings"]["seed"] in (5, 6, 7)
    assert report["settings"]["shortlist"] == 0 and report["settings"]["shortlisted"] is None


def test_the_default_shortlist_leaves_a_ten_class_scan_as_it_was():
    model = _model("lenet-patch3-br-white")
    small = dict(steps=5, pool_size=60, exemplar_steps=3, polish_steps=5, progress=False)
    default, off = scan_once(model, SPEC, **small), scan_once(model, SPEC, shortlist=0, **small)
    assert default.settings["shortlist"] is None and off.settings["shortlist"] == 0
    assert default.classes == off.classes and default.flagged == off.flagged and default.score == off.score
    assert torch.equal(default.masks, off.masks) and torch.equal(default.patterns, off.patterns)
    assert default.sample_gradients == off.sample_gradients
    assert default.settings["shortlisted"] is None and default.settings["shortlist_shift"] is None
    assert all(row["shortlisted"] and row["full_fit"] and row["cheap_anomaly"] is None for row in default.classes)


def test_a_forced_shortlist_keeps_the_target_and_judges_only_the_fully_fitted_classes():
    model = _model("lenet-patch3-br-white")
    settings = dict(steps=20, pool_size=96, exemplar_steps=5, progress=False)
    result = scan_once(model, SPEC, shortlist=3, **settings)
    short, reference = result.settings["shortlisted"], result.settings["reference_classes"]
    assert len(short) == 3 and len(reference) == 5 and not set(short) & set(reference)
    rows = result.classes
    # the cheap pass ranks the patch target first, and the full fit still flags it
    assert max(rows, key=lambda row: row["cheap_anomaly"])["index"] == 0 and 0 in short
    assert 0 in result.flagged and result.classes[0]["trigger_kind"] == "patch" and result.trigger_asr[0] >= 0.8
    assert [row["shortlisted"] for row in rows] == [k in short for k in range(10)]
    assert [row["full_fit"] for row in rows] == [k in short or k in reference for k in range(10)]
    left_out = [row for row in rows if not row["full_fit"]]
    assert len(left_out) == 2
    for row in left_out:  # listed with their cheap figures, never judged
        assert not row["compact"] and not row["faint_blend"] and row["trigger_kind"] is None
        assert row["anomaly_index"] == row["size_index"] and row["region_pixels"] >= 1
    # the size index is taken over every class, the left-out ones moved onto the full fit's scale
    shift = result.settings["shortlist_shift"]["size"]
    logs = [math.log(row["signature_size"]) + (0.0 if row["full_fit"] else shift) for row in rows]
    assert [row["size_index"] for row in rows] == pytest.approx(list(flag_anomalies(logs)[0]))
    with pytest.raises(InputError, match="shortlist cannot be negative"):
        scan_once(model, SPEC, shortlist=-1, **settings)
    with pytest.raises(InputError, match="cheap pass needs at least one step"):
        scan_once(model, SPEC, shortlist=3, shortlist_steps=0, **settings)


def test_a_many_class_model_gets_the_full_fit_for_its_shortlist_and_references_only():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FmnistLeNet(num_classes=30)
    small = dict(steps=5, shortlist_steps=2, pool_size=64, exemplar_steps=2, draws=1, progress=False)
    small.update(polish_steps=0)  # not what this test checks
    result = scan(model.eval(), SPEC, **small)
    rows = result.classes
    assert len(rows) == 30 and result.settings["shortlist"] is None
    ranked = sorted(range(30), key=lambda k: (-rows[k]["cheap_anomaly"], k))
    assert result.settings["shortlisted"] == sorted(ranked[:10])  # max(10, ceil(sqrt(30))) = 10
    assert sum(row["full_fit"] for row in rows) == 15 and sum(row["shortlisted"] for row in rows) == 10
    assert set(result.flagged) <= {row["index"] for row in rows if row["full_fit"]}
    assert result.masks.shape == (30, 28, 28) and result.region_masks.shape == (30, 28, 28)


def test_the_small_box_look_is_asked_for_on_the_command_line():
    from agnostic_saliency.cli import _scan_settings, build_parser

    parser = build_parser()
    plain = parser.parse_args(["scan", "--model", "fmnist-lenet", "--out", "out"])
    asked = parser.parse_args(["scan", "--model", "fmnist-lenet", "--out", "out", "--small-box-look"])
    assert _scan_settings(plain)["small_box_look"] is False and _scan_settings(asked)["small_box_look"] is True
