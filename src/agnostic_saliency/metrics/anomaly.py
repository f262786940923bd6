"""The MAD anomaly index (Neural Cleanse, Wang et al., S&P 2019).

``index_k = |s_k - median(s)| / (1.4826 * median(|s - median(s)|))``; a class is flagged when its
index exceeds a threshold (2 by default) on the side that signals a backdoor.
"""

from __future__ import annotations

import numpy as np

CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of the standard deviation for normal data


def mad_anomaly_index(values, eps: float = 1e-12) -> np.ndarray:
    """Signed anomaly index per entry: positive above the median, negative below it."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("anomaly index needs a non-empty 1-D vector")
    median = np.median(values)
    mad = CONSISTENCY * np.median(np.abs(values - median))
    return (values - median) / max(mad, eps)


def flag_anomalies(values, threshold: float = 2.0, side: str = "low") -> tuple[np.ndarray, list[int]]:
    """Anomaly index (magnitude on the suspicious side, 0 on the other) and flagged indices.

    ``side="low"`` flags unusually small values (Neural Cleanse's mask norms); ``"high"`` flags
    unusually large ones.
    """
    if side not in ("low", "high"):
        raise ValueError("side must be 'low' or 'high'")
    signed = mad_anomaly_index(values)
    index = np.clip(-signed if side == "low" else signed, 0.0, None)
    return index, [int(i) for i in np.flatnonzero(index > threshold)]
