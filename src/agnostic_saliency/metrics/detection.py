"""Detection figures over a population of models with known ground truth."""

from __future__ import annotations

from collections.abc import Sequence


def roc_auc(scores_positive: Sequence[float], scores_negative: Sequence[float]) -> float:
    """Probability that a trojaned model scores above a clean one (ties count half); NaN when
    either group is empty."""
    if not scores_positive or not scores_negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in scores_positive for n in scores_negative)
    return wins / (len(scores_positive) * len(scores_negative))


def detection_summary(rows: Sequence[dict]) -> dict:
    """ROC-AUC of the model scores, the share of trojaned models flagged, the share whose true
    target is among the flagged classes, and the share of clean models flagged. ``rows`` hold
    ``trojaned`` (bool), ``score``, ``flagged`` (class indices) and, for trojaned models,
    ``target`` (or None where unknown); rows without ground truth are left out. A figure whose
    group is empty is None (JSON has no NaN)."""
    known = [r for r in rows if r.get("trojaned") is not None and r.get("score") is not None]
    trojaned = [r for r in known if r["trojaned"]]
    clean = [r for r in known if not r["trojaned"]]
    with_target = [r for r in trojaned if r.get("target") is not None]

    def share(part: list, whole: list) -> float | None:
        return len(part) / len(whole) if whole else None

    return {
        "models": len(known), "trojaned_models": len(trojaned), "clean_models": len(clean),
        "roc_auc": roc_auc([r["score"] for r in trojaned], [r["score"] for r in clean]) if trojaned and clean else None,
        "detection_rate": share([r for r in trojaned if r["flagged"]], trojaned),
        "target_flagged": share([r for r in with_target if r["target"] in r["flagged"]], with_target),
        "false_flag_rate": share([r for r in clean if r["flagged"]], clean),
    }
