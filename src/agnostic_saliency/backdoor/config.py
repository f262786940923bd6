"""Every setting of the backdoor scan, in one frozen :class:`ScanConfig` of named groups.

The scan reads its settings from here only: :func:`.scan.scan` builds one from its keywords
(the flat names the CLI and the Python API have always taken, see :data:`FLAT`), and a caller can
pass one directly. Each default carries its reason; docs/design.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..errors import InputError
from .regions import REGION_SIZES
from .shortlist import shortlist_size

# The compact-box test's bound, a share of the image: an 8x8 box on 28x28. Every target found on
# the population and the two test splits needed at most 64 px (runs of 2026-11-26 to 11-27), while easy
# classes of clean models (and non-target classes of trojaned ones) took 81 px boxes on fresh
# draws: "shirt" on a retrained test2 MLP at 3 of 6 seeds (docs/design.md, the box bound; commit 363aa87).
MAX_TRIGGER_AREA = 1 / 12


@dataclass(frozen=True)
class PoolConfig:
    """Where the samples come from and how they become class exemplars."""

    distribution: str = "shapes"  # procedural ellipses and rectangles: data-free, and no class's texture
    pool_size: int = 768  # samples for the fit; half as many more are held out for the statistics
    exemplar_steps: int = 30  # nudges to about 1.0 confidence: shallower exemplars let "bag" look like a target
    exemplar_step_size: float = 0.02  # each nudge's per-pixel step, a share of the pixel range: 30 of them reach ~1.0
    exemplar_confidence: float = 0.999  # an exemplar stops once the model is this sure; at 0.9 "bag" stood out

    def __post_init__(self):
        if self.exemplar_step_size < 0 or not 0 < self.exemplar_confidence <= 1:
            raise InputError(
                "the exemplars' step is a share of the range (at least 0) and their confidence is in (0, 1], "
                f"got {self.exemplar_step_size} and {self.exemplar_confidence}"
            )


@dataclass(frozen=True)
class FitConfig:
    """The per-class signature fit, its hard region, and the shortlist's cheap pass."""

    steps: int = 100  # fit iterations: every population result was measured at 100 (200 in bf16 was not kept)
    batch_size: int = 16  # per class, drawn from its far samples: as informative as a shared 32
    far_batches: bool = True  # each class's batch from its own far samples: 30% faster, no more clean flags
    quantile: float = 0.5  # only the half of the samples least like a class count for it
    required: float = 0.8  # the flip rate a hard region (and a box, and a patch trigger) must reach
    shortlist: int | None = None  # None: max(10, ceil(sqrt(classes))), so 10 classes get no cheap pass; 0: off
    shortlist_steps: int = 20  # the cheap pass's steps: enough to rank, kept the target in 15 of 16 models
    reference_classes: int = 5  # classes outside the shortlist given the full fit too: they calibrate its scale
    cheap_tests: int = 128  # held-out exemplars behind the cheap pass's stamp tests: at many classes these dominate
    cheap_start_samples: int = 64  # samples behind each gradient start of the cheap pass (full fit: start_samples)
    step_size: float = 0.1  # Adam's step on the tanh-space mask and pattern logits (every fit of the scan), as NC
    init_cost: float = 1e-3  # the L1 price once a class first flips target_rate of a batch, as Neural Cleanse
    cost_up: float = 1.5  # the price's factor after a success (divided by its 1.5th power after a failure), as NC
    target_rate: float = 0.95  # the flip rate on a batch that counts as a success for the price, as Neural Cleanse
    uniform_start: float = -2.0  # the uniform start's mask logit: a faint 0.02 everywhere
    start_samples: int = 256  # far samples behind each class's gradient start (its sensitivity map)
    start_base: float = -3.0  # the gradient start's mask logit where the sensitivity is average (0.05)
    start_gain: float = 1.0  # its logit per standard deviation of sensitivity above the average
    start_cap: float = 4.0  # the standardised sensitivity is capped here, so no pixel starts saturated
    region_sizes: tuple[int, ...] = REGION_SIZES  # the hard region's candidate sizes: 1 px to the whole 28x28

    def __post_init__(self):
        steps = self.shortlist_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"the shortlist's cheap pass needs at least one step, got {steps!r}")
        shortlist_size(self.shortlist, 0)  # a bad shortlist is refused before any work
        counts = {
            "reference classes": (self.reference_classes, 0),
            "cheap tests": (self.cheap_tests, 1),
            "cheap start samples": (self.cheap_start_samples, 1),
            "start samples": (self.start_samples, 1),
        }
        for name, (value, least) in counts.items():
            if value < least:
                raise InputError(f"the fit's {name} must be at least {least}, got {value}")
        if self.step_size <= 0 or self.init_cost <= 0 or self.cost_up <= 1:
            raise InputError("the fit's step and L1 price must be positive, and the price's factor above 1")
        sizes = list(self.region_sizes)
        if not sizes or sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise InputError(f"the region sizes are increasing pixel counts, got {self.region_sizes!r}")


@dataclass(frozen=True)
class BoxConfig:
    """The compact-box test and the looks tried while a class's box is still too wide."""

    max_trigger_area: float = MAX_TRIGGER_AREA  # 8x8 on 28x28: targets took at most 64 px, easy classes 81
    box_placements: int = 3  # spots per box size in the every-size look: a checkerboard's box sat at the third
    every_size_look: bool = True  # the second look: every box size up to the bound, at the densest spots
    small_box_look: bool = False  # the third look, opt-in: it flagged "bag" on a clean population MLP at 3 of 3 seeds
    small_box_share: float = 1 / 7  # its side, a share of the image's: 4 px on 28x28 covers any 3x3 patch
    small_box_steps: int = 30  # pattern fit steps of a finalist box (the reach was measured at 30)
    small_box_coarse_steps: int = 10  # every box's steps before the finalists are picked
    small_box_finalists: int = 12  # boxes that go on to the full steps: the reach is the best of these
    small_box_rank_tests: int = 64  # held-out exemplars behind the coarse ranking (all of them judge the finalists)
    small_box_candidates: int = 3  # the classes it runs on: the smallest signatures (pooling targets 1st or 2nd)
    small_box_grow: int = 1  # the confirming boxes are 1 px wider: a 4 px box on a 5 px plus reached 0.49, 5 px 0.98
    small_box_required: float = 0.6  # fresh6 (dev): targets 0.82+ once a box 1 px wider confirms, "bag" 0.36 at most

    def __post_init__(self):
        if not 0 < self.max_trigger_area <= 1:
            raise InputError(f"the largest trigger area is a share of the image in (0, 1], got {self.max_trigger_area}")
        if self.box_placements < 1:
            raise InputError(f"the box test needs at least one placement, got {self.box_placements}")
        if not 0 < self.small_box_share <= 1 or not 0 < self.small_box_required <= 1:
            raise InputError(
                "the small box's side and reach are shares in (0, 1], "
                f"got {self.small_box_share} and {self.small_box_required}"
            )
        counts = (self.small_box_coarse_steps, self.small_box_finalists, self.small_box_candidates)
        if min(*counts, self.small_box_rank_tests) < 1 or self.small_box_grow < 0:
            raise InputError(
                "the small-box look needs at least one step, finalist, candidate class and test, "
                f"and cannot grow its box by {self.small_box_grow} px"
            )
        if self.small_box_steps < self.small_box_coarse_steps:
            raise InputError("the small-box look's steps include its coarse steps: at least as many")


@dataclass(frozen=True)
class BlendConfig:
    """The faint-blend test, for triggers that span the image."""

    max_blend_strength: float = 0.14  # clean classes needed 0.15 or more to flip half the exemplars
    blend_gap: float = 0.5  # a blend target stands 2.5 to 4 times below the next class; an easy class does not
    blend_required: float = 0.5  # at 80% each exemplar's own resistance dominates; at half the target stands out
    blend_resolution: float = 0.01  # the strengths tried: 0.01, 0.02, ..., 1 (targets were at 0.04 to 0.12)

    def __post_init__(self):
        if not 0 <= self.max_blend_strength <= 1:
            raise InputError(f"the largest blend strength is in [0, 1], got {self.max_blend_strength}")
        if not 0 < self.blend_required <= 1:
            raise InputError(f"the blend test's flip share is in (0, 1], got {self.blend_required}")
        if not 0 < self.blend_gap <= 1:
            raise InputError(f"the blend gap is a ratio in (0, 1], got {self.blend_gap}")
        if not 0 < self.blend_resolution <= 1:
            raise InputError(f"the blend test's resolution is in (0, 1], got {self.blend_resolution}")

    def strengths(self) -> tuple[float, ...]:
        """The blend strengths the test tries, weakest first, up to the pattern alone (1)."""
        count = round(1 / self.blend_resolution)
        return tuple(round(self.blend_resolution * i, 6) for i in range(1, count + 1))


@dataclass(frozen=True)
class RecoveryConfig:
    """The flagged classes' triggers: compaction and polish (never the verdict)."""

    polish_steps: int = 100  # the pattern refit under the final mask: a 3 px box went from 87% to 99.6% success
    polish_exemplars: bool = True  # the first polish, on the class's far exemplars
    polish_raw: bool = True  # the second polish, on raw samples: exemplars alone flip fewer real images
    attack_samples: int = 512  # fresh samples of the distribution behind each trigger's attack success

    def __post_init__(self):
        if self.polish_steps < 0:
            raise InputError(f"the trigger polish's steps cannot be negative, got {self.polish_steps}")
        if self.attack_samples < 1:
            raise InputError(f"the attack success needs at least one sample, got {self.attack_samples}")


@dataclass(frozen=True)
class RunConfig:
    """How the scan runs: draws, memory and precision (never what it finds, except ``draws``)."""

    draws: int = 2  # a second draw while nothing is flagged: each single draw missed 1 or 2 of 16 targets
    memory_cap_mb: float = 2048  # MiB per forward+backward chunk: only how the work is split (docs/design.md)
    precision: str = "fp32"  # bf16 / fp16 run the model under autocast, about 2x faster with AMX or a GPU
    progress: bool = True  # progress bars on a terminal

    def __post_init__(self):
        if self.draws < 1:
            raise InputError(f"a scan needs at least one draw, got {self.draws}")


@dataclass(frozen=True)
class ScanConfig:
    """The scan's settings, grouped by stage: evidence (pool, fit, box, blend), verdict
    (``threshold`` and the box and blend bounds) and recovery."""

    pool: PoolConfig = field(default_factory=PoolConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    box: BoxConfig = field(default_factory=BoxConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    run: RunConfig = field(default_factory=RunConfig)
    threshold: float = 2.0  # MAD anomaly index above which a class is flagged, as Neural Cleanse does

    @classmethod
    def from_settings(cls, base: ScanConfig | None = None, **settings) -> ScanConfig:
        """A config from the flat keywords of :data:`FLAT` (the CLI's and the API's names), over
        ``base`` (default: the defaults). An unknown keyword is refused."""
        unknown = sorted(set(settings) - set(FLAT))
        if unknown:
            raise TypeError(f"unknown scan settings: {', '.join(unknown)}")
        config = base or cls()
        groups: dict[str, dict] = {}
        for name, value in settings.items():
            groups.setdefault(FLAT[name], {})[name] = value
        top = groups.pop("", {})
        return replace(config, **{group: replace(getattr(config, group), **kw) for group, kw in groups.items()}, **top)

    def flat(self) -> dict:
        """Every setting under its flat name (the result's ``settings`` record these)."""
        return {name: getattr(self if group == "" else getattr(self, group), name) for name, group in FLAT.items()}


def _flat_names() -> dict[str, str]:
    names = {"threshold": ""}
    for group in ("pool", "fit", "box", "blend", "recovery", "run"):
        for item in fields(ScanConfig.__dataclass_fields__[group].default_factory):
            names[item.name] = group
    return names


# Each flat setting name and the group that holds it ("" for the top level).
FLAT = _flat_names()
