import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_saliency.metrics.anomaly import CONSISTENCY, flag_anomalies, mad_anomaly_index


def test_mad_index_by_hand():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    # median 3; absolute deviations 2, 1, 0, 1, 97 -> their median 1; MAD = 1.4826 * 1
    expected = [(1 - 3) / 1.4826, (2 - 3) / 1.4826, 0.0, (4 - 3) / 1.4826, (100 - 3) / 1.4826]
    np.testing.assert_allclose(mad_anomaly_index(values), expected)
    assert CONSISTENCY == 1.4826


def test_mad_index_even_length_by_hand():
    values = [10.0, 12.0, 11.0, 2.0]
    # median (10 + 11) / 2 = 10.5; deviations 0.5, 1.5, 0.5, 8.5 -> median (0.5 + 1.5) / 2 = 1
    expected = np.array([-0.5, 1.5, 0.5, -8.5]) / 1.4826
    np.testing.assert_allclose(mad_anomaly_index(values), expected)


def test_index_is_shift_and_scale_invariant():
    rng = np.random.default_rng(0)
    values = rng.normal(size=12)
    np.testing.assert_allclose(mad_anomaly_index(values), mad_anomaly_index(5 * values + 3))


def test_flag_low_side():
    norms = [50.0, 52.0, 48.0, 51.0, 49.0, 50.0, 5.0, 53.0]
    index, flagged = flag_anomalies(norms, side="low")
    assert flagged == [6]
    assert index[6] > 2
    assert np.all(index >= 0)
    assert index[7] == 0.0  # above the median: not suspicious on the low side
    _, high = flag_anomalies(norms, side="high")
    assert high == []


def test_flag_high_side_and_threshold():
    scores = [1.0, 1.1, 0.9, 1.0, 1.05, 3.0, 0.95, 1.6]
    index, flagged = flag_anomalies(scores, side="high")
    assert 5 in flagged
    signed = mad_anomaly_index(scores)
    np.testing.assert_allclose(index, np.clip(signed, 0, None))
    assert flag_anomalies(scores, threshold=index.max() + 1, side="high")[1] == []
    assert sorted(flag_anomalies(scores, threshold=0.0, side="high")[1]) == [int(i) for i in np.flatnonzero(signed > 0)]


def test_constant_vector_has_no_anomaly_and_no_nan():
    index = mad_anomaly_index([3.0] * 5)
    assert np.all(index == 0)
    spiked = mad_anomaly_index([3.0, 3.0, 3.0, 3.0, 4.0])
    assert np.isfinite(spiked).all() and spiked[-1] > 2


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]]])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        mad_anomaly_index(bad)


def test_bad_side():
    with pytest.raises(ValueError):
        flag_anomalies([1.0, 2.0], side="both")


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=40, unique=True),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_index_is_invariant_to_class_order_and_to_scaling(values, scale, seed):
    """The MAD index of a class does not depend on the order the classes come in, nor on the
    unit of the statistic (a positive scale)."""
    values = np.asarray(values)
    order = np.random.default_rng(seed).permutation(len(values))
    index = mad_anomaly_index(values)
    np.testing.assert_allclose(mad_anomaly_index(values[order]), index[order], rtol=1e-9, atol=1e-9)
    mad = 1.4826 * np.median(np.abs(values - np.median(values)))
    if mad * scale > 1e-9:  # below the eps floor the index is not scale-free by design
        np.testing.assert_allclose(mad_anomaly_index(scale * values), index, rtol=1e-6, atol=1e-6)
    flagged = flag_anomalies(values, 2.0, "low")[1]
    assert sorted(int(order[i]) for i in flag_anomalies(values[order], 2.0, "low")[1]) == flagged
