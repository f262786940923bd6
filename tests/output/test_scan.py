import re

import pytest
import torch

from agnostic_saliency.backdoor.result import BackdoorResult
from agnostic_saliency.output.scan import write_scan_folder


def _result(flagged):
    # "eel" is as anomalous as a flagged class, but its region is scattered: never flagged.
    classes = [
        {
            "index": k,
            "name": name,
            "signature_size": 10.0 + k,
            "mask_l1": 5.0,
            "region_pixels": 4,
            "flip_rate": 0.9,
            "start": "uniform",
            "anomaly_index": 3.0 if k in flagged or k == 2 else 0.5,
            "box_pixels": 16 if k < 2 else 17,
            "box_size": 8.9,
            "compact": k < 2,
            "blend_strength": None if k < 2 else 0.3,
            "blend_index": 0.0,
            "faint_blend": False,
            "trigger_strength": None,
            "trigger_kind": "patch" if k in flagged else None,
        }
        for k, name in enumerate(["cat", "<i>dog</i>", "eel"])
    ]
    masks, patterns = torch.rand(3, 4, 4), torch.rand(3, 1, 4, 4)
    triggers = {k: ((masks[k] > 0.5).float(), patterns[k]) for k in flagged}
    return BackdoorResult(
        "scan",
        classes,
        list(flagged),
        max(c["anomaly_index"] for c in classes),
        1.25,
        masks,
        patterns,
        triggers=triggers,
        trigger_asr={k: 0.97 for k in flagged},
        trigger_asr_images={k: None for k in flagged},
        settings={
            "threshold": 2.0,
            "max_trigger_area": 0.125,
            "max_blend_strength": 0.14,
            "distribution": "shapes",
            "seed": 0,
            "images": 0,
        },
    )


@pytest.mark.parametrize("flagged", [[], [1]])
def test_scan_report_states_the_verdict(tmp_path, flagged):
    result = _result(flagged)
    summary = {
        "model": "m",
        "weights": None,
        "input_shape": [1, 4, 4],
        **result.to_dict(),
        "unreadable_images_skipped": 0,
    }
    write_scan_folder(result, summary, tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert ("Backdoor suspected: &lt;i&gt;dog&lt;/i&gt;" in html) == bool(flagged)
    assert ("No class flagged" in html) == (not flagged)
    assert html.count('<tr class="flagged">') == len(flagged)
    assert html.count("17 (too wide)") == 1 and "16 (too wide)" not in html
    assert "0.30</td>" in html and "(faint)" not in html
    # the index is said to come from the box for the compact classes and from the region for "eel"
    assert html.count("(of the box size)") == 2 and html.count("(of the signature size)") == 1
    assert ("attack success on fresh samples 0.970" in html) == bool(flagged)
    assert "<i>dog</i>" not in html
    assert len(re.findall(r' src="data:image/png;base64,', html)) == 2 + len(flagged)
