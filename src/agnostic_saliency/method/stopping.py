"""When a map is done: per-map early stopping of the nudge.

A map whose fooling rate on the running batches (the hits of the nudge's own samples, which cost
nothing extra) has stayed at or above a target for a window of consecutive steps stops moving:
it leaves the batch, so easy concepts cost less and the run ends when the last map ends. The
rates stay on the device; they are read once every ``CHECK_EVERY`` steps, so the loop does not
wait on the device every step. Fidelity is still measured on fresh samples afterwards.
"""

from __future__ import annotations

import torch

# Reading the streaks waits for the device; once every 10 steps keeps that off the step loop.
CHECK_EVERY = 10


class EarlyStop:
    """The streaks and stop steps of ``num_maps`` maps.

    Parameters
    ----------
    target : the fooling rate on the running batch a map must hold (0 to 1).
    window : for this many consecutive steps.
    enabled : False gives a stopper that never stops a map (and costs nothing).
    """

    def __init__(self, num_maps: int, target: float, window: int, device, enabled: bool = True):
        self.enabled = enabled
        self.target, self.window = float(target), int(window)
        self.streak = torch.zeros(num_maps, dtype=torch.long, device=device)
        self.stopped_at = [None] * num_maps  # the step after which each map stopped
        self.active: torch.Tensor | None = None  # indices of the moving maps; None: all of them

    @property
    def finished(self) -> bool:
        return self.active is not None and len(self.active) == 0

    def update(self, step: int, hits: torch.Tensor) -> None:
        """Fold in the (moving maps, batch) ``hits`` of ``step`` (1-based); every ``CHECK_EVERY``
        steps, maps whose streak reached the window stop."""
        if not self.enabled:
            return
        rows = slice(None) if self.active is None else self.active
        holding = hits.float().mean(1) >= self.target
        streak = self.streak[rows]
        self.streak[rows] = torch.where(holding, streak + 1, torch.zeros_like(streak))
        if step % CHECK_EVERY == 0:
            self._stop_done(step)

    def _stop_done(self, step: int) -> None:
        done = (self.streak >= self.window).tolist()
        for k, is_done in enumerate(done):
            if is_done and self.stopped_at[k] is None:
                self.stopped_at[k] = step
        moving = [k for k, stop in enumerate(self.stopped_at) if stop is None]
        if len(moving) < len(self.stopped_at):
            self.active = torch.tensor(moving, dtype=torch.long, device=self.streak.device)

    def steps_taken(self, steps: int) -> list[int]:
        """Nudge steps each map took, out of ``steps``."""
        return [steps if stop is None else stop for stop in self.stopped_at]

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        stopped = torch.tensor([-1 if s is None else s for s in self.stopped_at], dtype=torch.long)
        return {"stop_streak": self.streak, "stopped_at": stopped}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state_dict`: the same maps move and stop as in the saved run."""
        self.streak = state["stop_streak"].to(self.streak.device, torch.long)
        self.stopped_at = [None if s < 0 else int(s) for s in state["stopped_at"].tolist()]
        moving = [k for k, stop in enumerate(self.stopped_at) if stop is None]
        if len(moving) < len(self.stopped_at):
            self.active = torch.tensor(moving, dtype=torch.long, device=self.streak.device)
