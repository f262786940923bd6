"""What a backdoor scan found: one result type for the data-free scan and the Neural Cleanse
baseline, so that reports, benchmarks and users read both the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class BackdoorResult:
    """Per-class statistics, the verdict and the recovered triggers (tensors on the CPU).

    Attributes
    ----------
    method : ``"scan"`` or ``"neural-cleanse"``.
    classes : one dict per class with at least ``index`` and ``anomaly_index`` (the MAD anomaly
        index of the method's statistic, low side), plus the method's own statistics.
    flagged : the classes judged to be backdoor targets.
    score : model-level score, higher meaning more likely trojaned.
    seconds : wall time of the whole run.
    masks, patterns : (K, H, W) masks in [0, 1] and (K, C, H, W) patterns in pixel space: each
        class's fitted stamp ``(1 - m) * x + m * p``.
    triggers : the recovered trigger ``(mask, pattern)`` of each flagged class.
    trigger_asr : per flagged class, the share of samples the recovered trigger sends to it.
    settings : every setting that produced the result.
    sample_gradients : per-sample forward+backward evaluations performed.
    region_masks : (K, H, W) hardened smallest regions (the scan only).
    trigger_asr_images : per flagged class, attack success on caller-given images (the scan only).
    statistic : what ``anomaly_index`` is computed from, in words.
    """

    method: str
    classes: list[dict]
    flagged: list[int]
    score: float
    seconds: float
    masks: torch.Tensor
    patterns: torch.Tensor
    triggers: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    trigger_asr: dict[int, float | None] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    sample_gradients: int = 0
    region_masks: torch.Tensor | None = None
    trigger_asr_images: dict[int, float | None] = field(default_factory=dict)
    statistic: str = ""

    @property
    def trojaned(self) -> bool:
        """Whether any class is flagged."""
        return bool(self.flagged)

    @property
    def anomaly_index(self) -> np.ndarray:
        """(K,) the anomaly index of every class."""
        return np.asarray([row["anomaly_index"] for row in self.classes], dtype=np.float64)

    def to_dict(self) -> dict:
        """JSON-ready summary without the tensors."""
        return {
            "method": self.method,
            "classes": self.classes,
            "flagged": [int(k) for k in self.flagged],
            "trojaned": self.trojaned,
            "score": float(self.score),
            "seconds": float(self.seconds),
            "statistic": self.statistic,
            "trigger_asr": {str(k): v for k, v in self.trigger_asr.items()},
            "trigger_asr_images": {str(k): v for k, v in self.trigger_asr_images.items()},
            "sample_gradients": int(self.sample_gradients),
            "settings": self.settings,
        }
