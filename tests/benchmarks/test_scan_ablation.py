"""The ablation's shared fits give each variant what a scan with that switch alone gives."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from scan_ablation import scan_variants  # noqa: E402

from agnostic_saliency.backdoor.config import ScanConfig  # noqa: E402
from agnostic_saliency.backdoor.scan import scan  # noqa: E402
from agnostic_saliency.models import InputSpec  # noqa: E402
from agnostic_saliency.models.architectures import FmnistLeNet  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "population"
SPEC = InputSpec((1, 28, 28))
# Small enough to run in seconds; a 19 px bound leaves boxes too wide, so that the looks run (the
# small box's 16 px fit under it).
SMALL = dict(steps=8, pool_size=96, exemplar_steps=5, polish_steps=8, max_trigger_area=0.025, small_box_steps=12)
SWITCHES = {
    "default": {},
    "no every-size look": {"every_size_look": False},
    "small-box look": {"small_box_look": True},
    "no raw polish": {"polish_raw": False},
    "one draw": {"draws": 1},
}


def test_each_variant_equals_a_scan_with_that_switch_alone():
    torch.set_num_threads(1)
    model = FmnistLeNet()
    model.load_state_dict(load_file(str(FIXTURES / "lenet-patch3-br-white.safetensors")))
    model.eval()
    configs = {name: ScanConfig.from_settings(progress=False, **SMALL, **kw) for name, kw in SWITCHES.items()}
    shared = scan_variants(model, SPEC, configs, seed=3)
    for name, kw in SWITCHES.items():
        alone = scan(model, SPEC, seed=3, progress=False, **SMALL, **kw)
        got = shared[name]
        assert got.flagged == alone.flagged, name
        assert [c["anomaly_index"] for c in got.classes] == [c["anomaly_index"] for c in alone.classes], name
        assert torch.equal(got.region_masks, alone.region_masks), name
        assert torch.equal(got.patterns, alone.patterns), name
        assert got.trigger_asr == alone.trigger_asr, name
