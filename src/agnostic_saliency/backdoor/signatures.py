"""Per-class trigger signatures: the input-agnostic map of every class in mask-and-pattern form,
fitted for all classes at once on samples from an unrestricted distribution (no clean data).

For class k the map is a mask ``m_k`` (H, W) in [0, 1] and a pattern ``p_k`` (C, H, W) in the
pixel range; the nudged sample is ``(1 - m_k) * x + m_k * p_k``. The objective is the method's
(nudge every sample toward the concept) plus an L1 price on the mask, whose weight adapts per
class so that the mask shrinks while the samples still flip. A backdoor target is reached by a
far smaller mask than any clean class: that is its signature.

Each class is fitted from the starts the caller gives: a faint uniform mask, or the class's
gradient start (:func:`gradient_start`), which begins where the model is most sensitive and is
what finds compact patch triggers; the scan fits both and keeps the smaller signature.

Only the half of the samples that the model finds least like class k count for class k: samples
near k's boundary carry no information about how hard k is to reach, and on noise most models sit
near one "easy" class (for Fashion-MNIST, "bag") for nearly every sample, which otherwise looks
like a backdoor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..method.integrate import MomentIntegrator
from .pool import class_probabilities, far_samples
from .stamps import from_tanh, stamp, stamped_share

UNIFORM_START = -2.0  # tanh-space mask logit of the default start: a faint 0.02 everywhere


@dataclass
class Signatures:
    """Per-class fitted masks and patterns with their statistics (all in class order)."""

    masks: torch.Tensor  # (K, H, W)
    patterns: torch.Tensor  # (K, C, H, W)
    mask_l1: list[float]  # pixels covered by the best mask (sum of mask values)
    flip_rate: list[float | None]  # share of other-class samples the best mask sends to the class
    baseline_share: list[float]  # share of unperturbed samples the model already assigns to it
    reached: list[bool]  # whether the flip-rate target was reached
    sample_gradients: int


def fit_signatures(
    model: nn.Module,
    samples: torch.Tensor,
    num_classes: int,
    low: float,
    high: float,
    steps: int = 150,
    batch_size: int = 32,
    step_size: float = 0.1,
    init_cost: float = 1e-3,
    cost_up: float = 1.5,
    target_rate: float = 0.95,
    generator: torch.Generator | None = None,
    progress: bool = False,
    classes: list[int] | None = None,
    quantile: float = 0.5,
    probabilities: torch.Tensor | None = None,
    mask_init: float | torch.Tensor = UNIFORM_START,
    pattern_init: torch.Tensor | None = None,
    far_batches: bool = False,
    description: str = "signatures",
    chunk: int = 1024,
    measure_flips: bool = True,
) -> Signatures:
    """Fit a mask and pattern per class, all classes in one batched loop.

    Parameters
    ----------
    model : pixel-space model (normalisation inside), in eval mode with frozen parameters.
    samples : a pool of unperturbed samples (N, C, H, W) from the unrestricted distribution.
    steps, batch_size : iterations and samples per iteration (shared by all classes).
    step_size : Adam step of the tanh-space logits (Neural Cleanse uses 0.1).
    init_cost, cost_up : the L1 price's schedule (:class:`_Schedule`).
    target_rate : flip rate on a batch that counts as success.
    quantile : for class k only the samples the model finds *least* like k count: those whose
        probability of k is at most its ``quantile`` over the pool (default: the far half).
        Samples already near k's boundary say nothing about how hard k is to reach, and a
        fixed share keeps every class's statistic on the same footing.
    probabilities : the model's class probabilities for ``samples``, when the caller already
        has them (computed here otherwise).
    mask_init, pattern_init : the starting tanh-space logits: a number for a uniform mask (the
        default, a faint 0.02 everywhere), or tensors (K, 1, H, W) and (K, C, H, W), one row per
        entry of ``classes`` (see :func:`gradient_start`).
    far_batches : draw each class's batch from its own far samples (:class:`_Batches`); off by
        default here, on in the scan (docs/design.md, far batches).
    description : the progress bar's label.
    chunk : samples per forward pass when the fitted masks are checked.
    measure_flips : measure each fitted mask's flip rate (:func:`flip_rates`); a caller that keeps
        only some of the rows measures those afterwards instead (``flip_rate`` is then None).
    """
    generator = generator or torch.Generator().manual_seed(0)
    classes = list(range(num_classes)) if classes is None else list(classes)
    k, device = len(classes), samples.device
    base = class_probabilities(model, samples) if probabilities is None else probabilities
    target = torch.tensor(classes, device=device)
    far = far_samples(base, quantile)[:, target]  # (N, K): the samples that count for each class
    batches = _Batches(samples, far, far_batches, batch_size, generator)
    logits = _start_logits(mask_init, pattern_init, (k, *samples.shape[1:]), device)
    schedule = _Schedule.start((k, *samples.shape[1:]), device, init_cost, cost_up, target_rate)
    moments = MomentIntegrator(step_size), MomentIntegrator(step_size)
    for _ in tqdm(range(steps), disable=not progress, desc=description, unit="step"):
        logits = _fit_step(model, *batches.draw(), target, logits, moments, schedule, low, high)
    with torch.no_grad():
        never = schedule.finish(*logits, low, high)
        shares = [float((base.argmax(1) == c).float().mean()) for c in classes]
        flips = (
            flip_rates(model, schedule.best_mask, schedule.best_pattern, classes, samples, base, quantile, chunk)
            if measure_flips
            else [None] * k
        )
    return Signatures(
        schedule.best_mask.cpu(),
        schedule.best_pattern.cpu(),
        schedule.best_l1.tolist(),
        flips,
        shares,
        (~never).tolist(),
        steps * k * batch_size,
    )


class _Batches:
    """Each fit step's batch (K, B, C, H, W) and per-sample weights (K, B). With ``far_batches``
    each class draws ``batch_size`` of its own far samples (all weighted alike); otherwise one
    shared batch, of which each class weighs only its far samples. Far batches give the same
    number of informative samples at about half the forward and backward work; the scan's box
    test removes the extra clean-model flags they gave on their own."""

    def __init__(self, samples, far, far_batches: bool, batch_size: int, generator: torch.Generator):
        self.samples, self.far, self.far_batches = samples, far, far_batches
        self.batch_size, self.generator, self.classes = batch_size, generator, far.shape[1]
        if far_batches:  # per class, the indices of its far samples, padded to one table
            far_index = [far[:, row].nonzero()[:, 0] for row in range(self.classes)]
            self.far_count = torch.tensor([len(f) for f in far_index], device=samples.device).clamp_min(1)
            self.far_table = torch.nn.utils.rnn.pad_sequence(far_index, batch_first=True)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, size, device = self.classes, self.batch_size, self.samples.device
        if self.far_batches:
            draw = (torch.rand(k, size, generator=self.generator).to(device) * self.far_count[:, None]).long()
            x = self.samples[self.far_table.gather(1, draw)]  # every sample is far from its class
            return x, torch.full((k, size), 1 / size, device=device)
        index = torch.randint(0, len(self.samples), (size,), generator=self.generator).to(device)
        x, informative = self.samples[index][None], self.far[index].T.float()  # (K, B): which samples count
        return x, informative / informative.sum(1, keepdim=True).clamp_min(1)


def _start_logits(mask_init, pattern_init, shape: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tanh-space logits the fit starts from (``shape``: K, C, H, W): by default a faint
    uniform mask and a mid-grey pattern; tanh keeps both in range."""
    k, channels, height, width = shape
    if isinstance(mask_init, torch.Tensor):
        mask_logit = mask_init.to(device).float().reshape(k, 1, height, width).clone()
    else:
        mask_logit = torch.full((k, 1, height, width), mask_init, device=device)
    if pattern_init is not None:
        pattern_logit = pattern_init.to(device).float().reshape(k, channels, height, width).clone()
    else:
        pattern_logit = torch.zeros(k, channels, height, width, device=device)
    return mask_logit, pattern_logit


@dataclass
class _Schedule:
    """Neural Cleanse's adaptive L1 price per class, per step: it starts at ``init_cost`` once a
    class first reaches the target flip rate, then is multiplied by ``cost_up`` after each
    success and divided by ``cost_up ** 1.5`` after each failure. Also the smallest mask that
    reached the target so far."""

    cost: torch.Tensor
    best_l1: torch.Tensor
    best_mask: torch.Tensor
    best_pattern: torch.Tensor
    init_cost: float
    cost_up: float
    target_rate: float

    @classmethod
    def start(cls, shape: tuple, device, init_cost: float, cost_up: float, target_rate: float) -> _Schedule:
        k, channels, height, width = shape
        return cls(
            torch.zeros(k, device=device),
            torch.full((k,), float("inf"), device=device),
            torch.zeros(k, height, width, device=device),
            torch.zeros(k, channels, height, width, device=device),
            init_cost,
            cost_up,
            target_rate,
        )

    @torch.no_grad()
    def update(self, hit: torch.Tensor, l1: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> None:
        """After a step whose batches flipped ``hit`` (weighted share per class)."""
        success = hit >= self.target_rate
        improved = success & (l1 < self.best_l1)
        self.best_l1 = torch.where(improved, l1, self.best_l1)
        self.best_mask[improved] = mask[improved, 0]
        self.best_pattern[improved] = pattern[improved]
        start = success & (self.cost == 0)
        cost = torch.where(start, torch.full_like(self.cost, self.init_cost), self.cost)
        self.cost = torch.where(success & ~start, cost * self.cost_up, cost / self.cost_up**1.5)

    @torch.no_grad()
    def finish(self, mask_logit, pattern_logit, low: float, high: float) -> torch.Tensor:
        """Classes that never reached the target report their final mask; returns which."""
        mask, pattern = from_tanh(mask_logit), from_tanh(pattern_logit, low, high)
        never = torch.isinf(self.best_l1)
        self.best_mask[never] = mask[never, 0]
        self.best_pattern[never] = pattern[never]
        self.best_l1 = torch.where(never, mask.flatten(1).sum(1), self.best_l1)
        return never


def _fit_step(model, x, weight, target, logits, moments, schedule: _Schedule, low: float, high: float):
    """One step of every class's fit: the stamped batches' weighted cross-entropy plus the L1
    price, one Adam-like step of both logits, the schedule updated. Returns the new logits."""
    mask_logit, pattern_logit = (logit.requires_grad_(True) for logit in logits)
    k, batch_size = weight.shape
    height, width = mask_logit.shape[-2:]
    mask, pattern = from_tanh(mask_logit), from_tanh(pattern_logit, low, high)
    stamped = stamp(x, mask, pattern, batch_axis=1)  # (K, B, C, H, W)
    scores = model(stamped.flatten(0, 1)).reshape(k, batch_size, -1).float()
    ce = torch.nn.functional.cross_entropy(
        scores.flatten(0, 1), target.repeat_interleave(batch_size), reduction="none"
    ).view(k, batch_size)
    l1 = mask.flatten(1).sum(1)
    loss = ((ce * weight).sum(1) + schedule.cost * l1 / (height * width)).sum()
    mask_grad, pattern_grad = torch.autograd.grad(loss, [mask_logit, pattern_logit])
    with torch.no_grad():
        schedule.update(((scores.argmax(-1) == target[:, None]).float() * weight).sum(1), l1, mask, pattern)
        return (
            (mask_logit + moments[0].step(mask_grad)).detach(),
            (pattern_logit + moments[1].step(pattern_grad)).detach(),
        )


@torch.no_grad()
def flip_rates(
    model: nn.Module,
    masks: torch.Tensor,
    patterns: torch.Tensor,
    classes: list[int],
    samples: torch.Tensor,
    probabilities: torch.Tensor,
    quantile: float = 0.5,
    chunk: int = 1024,
) -> list[float]:
    """Per row, the share of the class's far ``samples`` (up to 1,024 of them) that its mask and
    pattern send to the class (1 where it has no far samples)."""
    far = far_samples(probabilities, quantile)
    rates = []
    for row, c in enumerate(classes):
        pool = samples[far[:, c]][:1024]
        rates.append(
            stamped_share(model, masks[row].to(samples.device), patterns[row].to(samples.device), pool, c, chunk)
            if len(pool)
            else 1.0
        )
    return rates


def gradient_start(
    model: nn.Module,
    samples: torch.Tensor,
    classes: list[int],
    probabilities: torch.Tensor,
    quantile: float = 0.5,
    count: int = 256,
    base: float = -3.0,
    gain: float = 1.0,
    cap: float = 4.0,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Starting logits for a mask fit that begins where the model is most sensitive.

    Per class: the mean absolute input gradient of the class's cross-entropy over up to ``count``
    of the samples the model finds least like the class (its input-agnostic sensitivity map). The
    mask logits start at ``base + gain * z`` (z: that map standardised over the pixels, capped at
    ``cap``), the pattern logits at the sign of the mean descent direction. On a trojaned model
    the target's sensitivity peaks on the trigger, so the fit starts near it instead of spreading
    a faint mask over the whole image, which the L1 price then cannot concentrate in the steps
    it has. Also returns the number of per-sample gradients spent. The gradients are taken
    ``chunk`` samples at a time (the caller sizes it to its memory cap).
    """
    far = far_samples(probabilities, quantile)
    masks, patterns, spent = [], [], 0
    for c in classes:
        chosen = samples[far[:, c]][:count]
        absolute, signed = 0.0, 0.0
        for i in range(0, len(chosen), chunk):
            x = chosen[i : i + chunk].detach().requires_grad_(True)
            with torch.enable_grad():
                # Each chunk's mean loss weighted by its share: the gradients of the mean loss over all samples.
                loss = torch.nn.functional.cross_entropy(model(x).float(), torch.full((len(x),), c, device=x.device))
                (gradient,) = torch.autograd.grad(loss * (len(x) / len(chosen)), x)
            absolute = absolute + gradient.abs().sum(0)
            signed = signed + gradient.sum(0)
        spent += len(chosen)
        sensitivity = (absolute / max(len(chosen), 1)).sum(0, keepdim=True)  # (1, H, W)
        z = (sensitivity - sensitivity.mean()) / sensitivity.std().clamp_min(1e-12)
        masks.append(base + gain * z.clamp(max=cap))
        patterns.append(-(signed / max(len(chosen), 1)).sign())
    return torch.stack(masks), torch.stack(patterns), spent
