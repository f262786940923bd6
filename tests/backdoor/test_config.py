"""ScanConfig: one frozen object of named groups, the flat names the CLI and the API take, and the
switches that turn each look, each polish and the second draw off."""

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agnostic_saliency.backdoor.config import FLAT, MAX_TRIGGER_AREA, ScanConfig
from agnostic_saliency.backdoor.looks import LOOKS
from agnostic_saliency.backdoor.scan import scan, scan_once
from agnostic_saliency.errors import InputError
from agnostic_saliency.models import InputSpec
from agnostic_saliency.models.architectures import FmnistLeNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"
SPEC = InputSpec((1, 28, 28))
SMALL = dict(steps=5, pool_size=96, exemplar_steps=5, progress=False)


def _model(name):
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / f"{name}.safetensors")))
    return model.eval()


def test_the_defaults_are_the_scans_and_every_switch_is_on():
    config = ScanConfig()
    assert (config.pool.distribution, config.pool.pool_size, config.pool.exemplar_steps) == ("shapes", 768, 30)
    assert (config.fit.steps, config.fit.batch_size, config.fit.far_batches, config.fit.shortlist) == (
        100,
        16,
        True,
        None,
    )
    assert (config.box.max_trigger_area, config.box.box_placements) == (MAX_TRIGGER_AREA, 3)
    assert (config.blend.max_blend_strength, config.blend.blend_gap, config.blend.blend_required) == (0.14, 0.5, 0.5)
    assert config.recovery.polish_steps == 100 and config.threshold == 2.0 and config.run.draws == 2
    switches = ("every_size_look", "polish_exemplars", "polish_raw")
    assert all(config.flat()[name] is True for name in switches)
    assert config.box.small_box_look is False  # opt-in: it flags the easy class of some clean nets
    assert [look.name for look in LOOKS] == ["every size", "small box"]
    box = config.box
    assert (box.small_box_share, box.small_box_steps, box.small_box_coarse_steps) == (1 / 7, 30, 10)
    assert (box.small_box_finalists, box.small_box_rank_tests, box.small_box_candidates) == (12, 64, 3)
    assert (box.small_box_required, box.small_box_grow) == (0.6, 1)
    # what the functions the scan calls used to take as their own defaults
    fit = config.fit
    assert (fit.step_size, fit.init_cost, fit.cost_up, fit.target_rate) == (0.1, 1e-3, 1.5, 0.95)
    assert fit.uniform_start == -2.0
    assert (fit.start_samples, fit.start_base, fit.start_gain, fit.start_cap) == (256, -3.0, 1.0, 4.0)
    assert (fit.reference_classes, fit.cheap_tests, fit.cheap_start_samples) == (5, 128, 64)
    assert (config.pool.exemplar_step_size, config.pool.exemplar_confidence) == (0.02, 0.999)
    assert config.blend.strengths() == tuple(round(0.01 * i, 2) for i in range(1, 101))
    assert config.recovery.attack_samples == 512


def test_the_search_grids_come_from_the_config():
    model = _model("lenet-clean-0")
    result = scan_once(model, SPEC, **SMALL, region_sizes=(9, 784), blend_resolution=0.25)
    assert {row["region_pixels"] for row in result.classes} <= {9, 784, 785}  # 785: no size works
    assert {row["blend_strength"] for row in result.classes} <= {0.25, 0.5, 0.75, 1.0, None}
    assert result.settings["region_sizes"] == (9, 784) and result.settings["blend_resolution"] == 0.25


def test_the_flat_names_round_trip_and_an_unknown_one_is_refused():
    config = ScanConfig.from_settings(steps=7, max_trigger_area=0.5, polish_raw=False, threshold=3.0, draws=1)
    assert (config.fit.steps, config.box.max_trigger_area, config.recovery.polish_raw) == (7, 0.5, False)
    assert config.threshold == 3.0 and config.run.draws == 1
    assert ScanConfig.from_settings(**config.flat()) == config and set(config.flat()) == set(FLAT)
    # over a base: the base's other settings stay
    assert ScanConfig.from_settings(config, steps=9).box.max_trigger_area == 0.5
    with pytest.raises(TypeError, match="no_such_setting"):
        ScanConfig.from_settings(no_such_setting=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fit.steps = 3


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(draws=0), "at least one draw"),
        (dict(max_trigger_area=0), "share of the image"),
        (dict(box_placements=0), "at least one placement"),
        (dict(polish_steps=-1), "polish's steps"),
        (dict(max_blend_strength=1.5), "blend strength"),
        (dict(blend_required=0), "blend test's flip share"),
        (dict(blend_gap=2), "blend gap"),
        (dict(shortlist=-1), "shortlist cannot be negative"),
        (dict(shortlist_steps=0), "cheap pass needs at least one step"),
        (dict(exemplar_confidence=1.5), "confidence is in"),
        (dict(cheap_tests=0), "cheap tests must be at least 1"),
        (dict(cost_up=1.0), "price's factor above 1"),
        (dict(region_sizes=(9, 4)), "increasing pixel counts"),
        (dict(blend_resolution=0), "blend test's resolution"),
        (dict(attack_samples=0), "at least one sample"),
    ],
)
def test_a_bad_setting_is_refused_before_any_work(settings, message):
    with pytest.raises(InputError, match=message):
        ScanConfig.from_settings(**settings)


def test_a_config_object_scans_as_its_keywords_do():
    model = _model("lenet-clean-0")
    config = ScanConfig.from_settings(**SMALL, draws=1)
    given = scan(model, SPEC, config=config)
    keywords = scan(model, SPEC, **SMALL, draws=1)
    assert given.classes == keywords.classes and torch.equal(given.masks, keywords.masks)
    assert len(given.settings["draws"]) == 1  # draws=1: no second draw


def test_the_look_switched_off_leaves_the_fit_and_only_widens_boxes():
    model = _model("lenet-patch3-br-white")
    # a low threshold and a 4x4 bound leave the target's first box too wide, so that the look runs
    settings = dict(SMALL, threshold=0.5, max_trigger_area=0.02)
    looked = scan_once(model, SPEC, **settings)
    plain = scan_once(model, SPEC, **settings, every_size_look=False)
    assert plain.settings["every_size_look"] is False
    assert [row["size_index"] for row in plain.classes] == [row["size_index"] for row in looked.classes]
    assert all(a["box_pixels"] >= b["box_pixels"] for a, b in zip(plain.classes, looked.classes))
    # the target's 3x3 patch: the first look's box at the densest spot is 7x7, every size finds 3x3
    assert (plain.classes[0]["box_pixels"], looked.classes[0]["box_pixels"]) == (49, 9)


def test_the_recovery_switches_change_the_triggers_never_the_verdict():
    model = _model("lenet-patch3-br-white")
    settings = dict(SMALL, max_trigger_area=1.0)
    full = scan_once(model, SPEC, **settings)
    off = scan_once(model, SPEC, **settings, polish_exemplars=False, polish_raw=False)
    verdict_columns = ("anomaly_index", "size_index", "box_index", "compact", "faint_blend", "box_pixels")
    assert full.flagged == off.flagged and full.flagged and full.score == off.score
    assert [[row[c] for c in verdict_columns] for row in full.classes] == [
        [row[c] for c in verdict_columns] for row in off.classes
    ]
    assert all(off.classes[k]["trigger_polished"] is False for k in off.flagged)
    # one polish off: one fit of 100 steps of 32 samples per flagged class fewer
    half = scan_once(model, SPEC, **settings, polish_exemplars=False)
    assert full.sample_gradients - half.sample_gradients == 100 * 32 * len(full.flagged)
