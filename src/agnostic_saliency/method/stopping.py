"""When a map is done: per-map early stopping of the nudge.

A map whose fooling rate on the running batches (the hits of the nudge's own samples, which cost
nothing extra), averaged over the last ``window`` steps, has reached a target stops moving: it
leaves the batch, so easy concepts cost less and the run ends when the last map ends. The mean
over a window rather than every step above the target: one batch of 64 samples has a rate with
a spread of about 0.03 at 0.95, so a streak of every step above it almost never happens. The
rates stay on the device; they are read once every ``CHECK_EVERY`` steps, so the loop does not
wait on the device every step. Fidelity is still measured on fresh samples afterwards.
"""

from __future__ import annotations

import torch

# Reading the streaks waits for the device; once every 10 steps keeps that off the step loop.
CHECK_EVERY = 10


class EarlyStop:
    """The recent fooling rates and stop steps of ``num_maps`` maps.

    Parameters
    ----------
    target : the mean fooling rate on the running batches a map must reach (0 to 1).
    window : over this many last steps.
    enabled : False gives a stopper that never stops a map (and costs nothing).
    """

    def __init__(self, num_maps: int, target: float, window: int, device, enabled: bool = True):
        self.enabled = enabled
        self.target, self.window = float(target), int(window)
        self.rates = torch.zeros(num_maps, self.window, device=device)  # a ring of the last rates
        self.stopped_at = [None] * num_maps  # the step after which each map stopped
        self.active: torch.Tensor | None = None  # indices of the moving maps; None: all of them

    @property
    def finished(self) -> bool:
        return self.active is not None and len(self.active) == 0

    def update(self, step: int, hits: torch.Tensor) -> None:
        """Fold in the (moving maps, batch) ``hits`` of ``step`` (1-based); every ``CHECK_EVERY``
        steps, maps whose mean rate over the window reached the target stop."""
        if not self.enabled:
            return
        column = (step - 1) % self.window
        if self.active is None:
            self.rates[:, column] = hits.float().mean(1)
        else:
            self.rates[self.active, column] = hits.float().mean(1)
        if step % CHECK_EVERY == 0 and step >= self.window:
            self._stop_done(step)

    def _stop_done(self, step: int) -> None:
        done = (self.rates.mean(1) >= self.target).tolist()
        for k, is_done in enumerate(done):
            if is_done and self.stopped_at[k] is None:
                self.stopped_at[k] = step
        self._set_active()

    def _set_active(self) -> None:
        moving = [k for k, stop in enumerate(self.stopped_at) if stop is None]
        if len(moving) < len(self.stopped_at):
            self.active = torch.tensor(moving, dtype=torch.long, device=self.rates.device)

    def steps_taken(self, steps: int) -> list[int]:
        """Nudge steps each map took, out of ``steps``."""
        return [steps if stop is None else stop for stop in self.stopped_at]

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        stopped = torch.tensor([-1 if s is None else s for s in self.stopped_at], dtype=torch.long)
        return {"stop_rates": self.rates, "stopped_at": stopped}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state_dict`: the same maps move and stop as in the saved run."""
        self.rates = state["stop_rates"].to(self.rates.device, self.rates.dtype)
        self.stopped_at = [None if s < 0 else int(s) for s in state["stopped_at"].tolist()]
        self._set_active()
