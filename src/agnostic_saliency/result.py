"""The result of an explanation: plain data (tensors, lists, numbers) that can be saved,
checkpointed and merged."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .metrics.fidelity import Fidelity


@dataclass
class SaliencyResult:
    """Maps and metrics for K concepts, in target order.

    Attributes
    ----------
    maps : (K, C, H, W) final signed maps in the model's pixel space (refined where accepted).
    unrefined_maps : the maps before refinement.
    displayed : the maps min-max scaled to the pixel range: what the PNGs show.
    concepts : the class indices of each concept.
    names : a display name per concept.
    fidelity, fidelity_unrefined : figures for the final and the unrefined maps.
    refined : per map, whether the refinement was accepted.
    config : every setting that produced the result.
    seconds : wall time of the whole computation; sample_gradients : per-sample forward+backward
        evaluations performed.
    nudge_steps : per map, the nudge steps it took (fewer than the run's where it stopped early).
    """

    maps: torch.Tensor
    unrefined_maps: torch.Tensor
    displayed: torch.Tensor
    concepts: list[list[int]]
    names: list[str]
    fidelity: Fidelity
    fidelity_unrefined: Fidelity
    refined: list[bool]
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    sample_gradients: int = 0
    nudge_steps: list[int] = field(default_factory=list)

    def per_class(self, class_names: list[str] | None = None) -> list[dict]:
        """One JSON-ready dict per concept."""
        rows = []
        final, before = self.fidelity, self.fidelity_unrefined
        for k, (concept, name) in enumerate(zip(self.concepts, self.names)):
            alone = final.map_alone_label[k]
            row = {
                "index": concept[0] if len(concept) == 1 else concept,
                "name": name,
                "fooling_rate": final.fooling_rate[k],
                "target_confidence": final.target_confidence[k],
                "map_alone_label": alone,
                "map_alone_name": class_names[alone] if class_names else str(alone),
                "map_alone_confidence": final.map_alone_confidence[k],
                "map_alone_in_concept": bool(final.map_alone_in_concept[k]),
                "rms": float(self.maps[k].pow(2).mean().sqrt()),
                "refined": bool(self.refined[k]),
                "nudge_steps": self.nudge_steps[k] if self.nudge_steps else self.config.get("steps"),
                "unrefined": {
                    "fooling_rate": before.fooling_rate[k],
                    "target_confidence": before.target_confidence[k],
                    "map_alone_label": before.map_alone_label[k],
                    "map_alone_confidence": before.map_alone_confidence[k],
                },
            }
            if final.real_fooling_rate is not None:
                row["real_fooling_rate"] = final.real_fooling_rate[k]
                row["real_target_confidence"] = final.real_target_confidence[k]
                row["unrefined"]["real_fooling_rate"] = before.real_fooling_rate[k]
            rows.append(row)
        return rows


def concatenate(
    results: list[SaliencyResult],
    config: dict | None = None,
    seconds: float | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> SaliencyResult:
    """One result from results over disjoint sets of concepts, in the given order: maps,
    figures and names are joined; sample gradients add up. ``config`` and ``seconds`` replace
    the first result's. ``tensors``: the joined ``maps``, ``unrefined_maps`` and ``displayed``
    where the caller already holds them (a run that streams its classes fills them chunk by
    chunk, so that no second copy is made)."""
    if not results:
        raise ValueError("nothing to concatenate")

    def joined(figures: list[Fidelity]) -> Fidelity:
        columns = {}
        for column in fields(Fidelity):
            parts = [getattr(f, column.name) for f in figures]
            columns[column.name] = None if any(p is None for p in parts) else [x for p in parts for x in p]
        return Fidelity(**columns)

    fidelity = {False: joined([r.fidelity for r in results]), True: joined([r.fidelity_unrefined for r in results])}
    if tensors is None:
        names = ("maps", "unrefined_maps", "displayed")
        tensors = {name: torch.cat([getattr(r, name) for r in results]) for name in names}
    return SaliencyResult(
        **tensors,
        concepts=[c for r in results for c in r.concepts],
        names=[n for r in results for n in r.names],
        fidelity=fidelity[False],
        fidelity_unrefined=fidelity[True],
        refined=[a for r in results for a in r.refined],
        config=dict(results[0].config if config is None else config),
        seconds=results[0].seconds if seconds is None else seconds,
        sample_gradients=sum(r.sample_gradients for r in results),
        nudge_steps=[s for r in results for s in r.nudge_steps],
    )
