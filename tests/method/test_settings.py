import pytest

from agnostic_saliency.errors import InputError
from agnostic_saliency.method.settings import (
    Evaluation,
    Nudging,
    Refinement,
    Sampling,
    check,
    preset_settings,
    with_overrides,
)


def groups():
    return {"sampling": Sampling(), "nudging": Nudging(), "refinement": Refinement(), "evaluation": Evaluation()}


def test_flat_overrides_go_to_the_group_that_owns_them():
    changed = with_overrides(groups(), {"steps": 7, "batch_size": 3, "refine_steps": 0, "eval_samples": 9,
                                        "refine": False, "precision": "bf16"})
    assert changed["nudging"].steps == 7 and changed["nudging"].precision == "bf16"
    assert changed["sampling"].batch_size == 3
    assert changed["refinement"].steps == 0 and changed["refinement"].enabled is False
    assert changed["evaluation"].samples == 9
    assert changed["nudging"].budget == Nudging().budget  # untouched fields keep their defaults


def test_overrides_leave_given_groups_and_their_other_fields_alone():
    given = groups() | {"nudging": Nudging(budget=0.1)}
    changed = with_overrides(given, {"steps": 5})
    assert changed["nudging"] == Nudging(budget=0.1, steps=5)
    assert changed["sampling"] is given["sampling"]


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="stepz"):
        with_overrides(groups(), {"stepz": 3})


@pytest.mark.parametrize("bad", [Nudging(steps=-1), Refinement(steps=-2)])
def test_negative_steps_are_refused(bad):
    settings = groups() | {type(bad).__name__.lower(): bad}
    with pytest.raises(InputError, match="steps"):
        check(**settings)


def test_zero_batch_is_refused():
    with pytest.raises(InputError, match="batch size"):
        check(**(groups() | {"sampling": Sampling(batch_size=0)}))


def test_readable_preset_sets_smooth_nudging_and_a_free_detail():
    changed = with_overrides(groups(), preset_settings("readable"))
    assert changed["nudging"].frequency_decay > 0
    assert changed["refinement"].frequency_decay == 0
    assert "uniform" not in changed["sampling"].distribution
    assert with_overrides(groups(), preset_settings("faithful")) == groups()


def test_keywords_win_over_the_preset():
    changed = with_overrides(groups(), {**preset_settings("readable"), "frequency_decay": 0.5})
    assert changed["nudging"].frequency_decay == 0.5


def test_unknown_preset_is_refused():
    with pytest.raises(InputError, match="unknown preset 'pretty'"):
        preset_settings("pretty")


def test_negative_frequency_decay_is_refused():
    with pytest.raises(InputError, match="frequency decay"):
        check(**(groups() | {"refinement": Refinement(frequency_decay=-1.0)}))


def test_negative_total_variation_weight_is_refused():
    with pytest.raises(InputError, match="total variation"):
        check(**(groups() | {"nudging": Nudging(tv_weight=-0.1)}))
