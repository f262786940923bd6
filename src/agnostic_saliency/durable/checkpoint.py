"""Checkpoints: the state of a long run, saved at a fixed interval of steps (and when the run is
asked to stop), so that ``--resume`` continues it with the very numbers an uninterrupted run
would have produced.

A checkpoint is one safetensors file: its tensors (maps, moment estimates, the random
generators' states as uint8 tensors) and, in the header's metadata, a JSON record of the step,
the settings' fingerprint, the model's SHA-256 and the tool's and torch's versions. Resuming from a
checkpoint made with anything else is refused, with the first thing that differs named. Files
are written to a temporary name and moved into place with ``os.replace``, so a kill during the
write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InputError

FORMAT = 1


def tool_versions() -> dict:
    """The versions a checkpoint must share with the run that resumes it."""
    from .._version import __version__

    return {"agnostic_saliency": __version__, "torch": torch.__version__}


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state: every parameter's and buffer's name, dtype, shape and bytes.
    Two models with the same digest compute the same function (for the same code)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        value = value.reshape(-1)  # a 0-d tensor cannot be viewed as bytes
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor | None) -> str | None:
    """SHA-256 of a tensor's dtype, shape and bytes (images given to a run), or None."""
    if tensor is None:
        return None
    value = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{value.dtype}|{tuple(value.shape)}|".encode())
    value = value.reshape(-1)
    digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def plain(data):
    """``data`` as JSON gives it back (tuples as lists; dataclasses as dicts; anything else JSON
    cannot hold by its repr), so that a fresh identity compares equal to a loaded one."""
    import dataclasses

    def fallback(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        if isinstance(value, torch.Tensor):
            return tensor_digest(value)
        return repr(value)

    return json.loads(json.dumps(data, default=fallback))


def _first_difference(saved: dict, wanted: dict, prefix: str = "") -> str | None:
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "<absent>"), wanted.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} is {_short(a)} there, {_short(b)} here"
    return None


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:16] + "..." + text[-8:]


class Checkpoint:
    """Where and how often a run saves its state, and whether it resumes from a saved one.

    Parameters
    ----------
    path : the checkpoint file (for a scan, a folder: one file per finished draw).
    every : save every this many steps (default 25); a save costs one write of the maps and
        moments, small next to the steps between them.
    resume : continue from the checkpoint at ``path`` if one exists (default False: any
        checkpoint there is replaced).
    handle_signals : while the run's loop runs (in the main thread), SIGINT and SIGTERM only ask
        it to stop: it saves its state at the end of the current step, then raises
        ``KeyboardInterrupt``. A second signal stops it at once.
    """

    def __init__(self, path: str | os.PathLike, every: int = 25, resume: bool = False, handle_signals: bool = True):
        if every < 1:
            raise InputError(f"the checkpoint interval must be at least 1 step, got {every}")
        self.path = Path(path)
        self.every = int(every)
        self.resume = resume
        self.handle_signals = handle_signals
        self.stop_requested = False
        self.saved_step: int | None = None
        self.resumed_from: dict | None = None

    # -- files -----------------------------------------------------------------------------
    def save(self, tensors: dict[str, torch.Tensor], record: dict, path: Path | None = None) -> None:
        """Write ``tensors`` and the JSON ``record`` atomically (temporary file, then os.replace)."""
        path = path or self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        contiguous = {name: value.detach().cpu().contiguous().clone() for name, value in tensors.items()}
        save_file(contiguous, str(temporary), metadata={"checkpoint": json.dumps(plain({"format": FORMAT, **record}))})
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def load(self, identity: dict, path: Path | None = None) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The saved tensors and record, or None if there is no checkpoint (or ``resume`` is off).

        ``identity`` (settings fingerprint, model digest, versions) must equal the saved one;
        otherwise an :class:`InputError` names the first difference."""
        path = path or self.path
        if not self.resume or not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                record = json.loads((handle.metadata() or {})["checkpoint"])
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            raise InputError(
                f"the checkpoint {path} is unreadable ({error}); pass --overwrite to start again"
            ) from None
        if record.get("format") != FORMAT:
            raise InputError(f"the checkpoint {path} has format {record.get('format')}, this tool writes {FORMAT}")
        difference = _first_difference(record.get("identity", {}), plain(identity))
        if difference:
            raise InputError(
                f"the checkpoint in {path.parent} was made by another run ({difference}); "
                "pass --overwrite to start again"
            )
        self.resumed_from = record
        return tensors, record

    def part(self, number: int) -> Checkpoint:
        """The checkpoint of one chunk of classes of a run that streams its classes under the
        memory cap: a file of its own beside this one, with the same interval and resume flag."""
        name = f"{self.path.stem}.part{number}{self.path.suffix}"
        return Checkpoint(self.path.with_name(name), self.every, self.resume, self.handle_signals)

    # -- the loop's hook ---------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether the loop should save after ``step`` (1-based) steps of its current stage."""
        return self.stop_requested or step % self.every == 0

    def after_save(self) -> None:
        """Called by the loop once it saved: a requested stop now happens."""
        if self.stop_requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """While the loop runs, turn SIGINT/SIGTERM into a stop request (see ``handle_signals``)."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(number, frame):
            if self.stop_requested:  # the second signal: no waiting for the step to end
                raise KeyboardInterrupt
            self.stop_requested = True

        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def generator_state(generator: torch.Generator) -> torch.Tensor:
    return generator.get_state().clone()


class MapRun:
    """The checkpointed state of one :meth:`InputAgnosticSaliency.attribute` call.

    Two stages move maps: the nudge (``maps`` move) and the refinement (``moving``, the detail or
    the blurred map, moves while the nudge's result stays fixed). A checkpoint holds the stage,
    its step, the moving tensor with its moment estimates, the nudge's result, the random
    generator's state and the per-sample gradient counts: all a resumed run needs to take the
    very same steps.
    """

    def __init__(self, checkpoint: Checkpoint, identity: dict, generator: torch.Generator):
        self.checkpoint = checkpoint
        self.identity = identity
        self.generator = generator

    def restore(self) -> dict | None:
        """The saved state (and the generator set to its saved state), or None."""
        loaded = self.checkpoint.load(self.identity)
        if loaded is None:
            return None
        tensors, record = loaded
        self.generator.set_state(tensors["generator"])
        state = {key: record[key] for key in ("stage", "step", "nudge_count", "refine_count")}
        state["maps"] = tensors["maps"]
        state["moving"] = tensors.get("moving")
        state["stopping"] = {k: tensors[k] for k in ("stop_rates", "stopped_at") if k in tensors}
        state["integrator"] = {
            "first": tensors["first"],
            "second": tensors["second"],
            "count": record["integrator_count"],
        }
        return state

    def hook(
        self,
        stage: str,
        count_base: int,
        unrefined: torch.Tensor | None = None,
        nudge_count: int = 0,
        stopping: dict | None = None,
    ):
        """The ``on_step`` callback of the engine's loop for ``stage`` (``nudge`` or ``refine``).
        ``stopping``: the nudge's early-stop state, kept in the refinement's checkpoints."""

        def on_step(step: int, moving: torch.Tensor, integrator, count: int, stopper=None) -> None:
            if not self.checkpoint.due(step):
                return
            tensors = {"first": integrator.first, "second": integrator.second, "generator": self.generator.get_state()}
            if stopper is not None and stopper.enabled:
                tensors.update(stopper.state_dict())
            elif stopping:
                tensors.update(stopping)
            if stage == "nudge":
                tensors["maps"] = moving
                counts = {"nudge_count": count_base + count, "refine_count": 0}
            else:
                tensors.update(maps=unrefined, moving=moving)
                counts = {"nudge_count": nudge_count, "refine_count": count_base + count}
            self.checkpoint.save(
                tensors,
                {
                    "identity": self.identity,
                    "stage": stage,
                    "step": step,
                    "integrator_count": integrator.count,
                    **counts,
                },
            )
            self.checkpoint.saved_step = step
            self.checkpoint.after_save()

        return on_step


def save_scan_draw(checkpoint: Checkpoint, identity: dict, number: int, result) -> None:
    """A finished draw of the backdoor scan (a ``BackdoorResult``), as ``draw_<number>.safetensors``
    in the checkpoint folder. A scan is checkpointed draw by draw: each draw starts from its own
    seed, so a resumed scan redoes only the draw it was in."""
    tensors = {"masks": result.masks, "patterns": result.patterns}
    if result.region_masks is not None:
        tensors["region_masks"] = result.region_masks
    for k, (mask, pattern) in result.triggers.items():
        tensors[f"trigger_mask_{k}"], tensors[f"trigger_pattern_{k}"] = mask, pattern
    plain_fields = {name: getattr(result, name) for name in SCAN_FIELDS}
    record = {
        "identity": identity,
        "draw": number,
        "triggers": sorted(result.triggers),
        "trigger_asr": list(result.trigger_asr.items()),
        "trigger_asr_images": list(result.trigger_asr_images.items()),
        **plain_fields,
    }
    checkpoint.save(tensors, record, checkpoint.path / f"draw_{number}.safetensors")


# The result's JSON-ready fields (the tensors and the int-keyed dicts are stored apart).
SCAN_FIELDS = ("method", "classes", "flagged", "score", "seconds", "settings", "sample_gradients", "statistic")


def load_scan_draw(checkpoint: Checkpoint, identity: dict, number: int, result_type):
    """The saved draw ``number`` as a ``result_type`` (``BackdoorResult``), or None."""
    loaded = checkpoint.load(identity, checkpoint.path / f"draw_{number}.safetensors")
    if loaded is None:
        return None
    tensors, record = loaded
    triggers = {k: (tensors[f"trigger_mask_{k}"], tensors[f"trigger_pattern_{k}"]) for k in record["triggers"]}
    return result_type(
        masks=tensors["masks"],
        patterns=tensors["patterns"],
        region_masks=tensors.get("region_masks"),
        triggers=triggers,
        trigger_asr={int(k): v for k, v in record["trigger_asr"]},
        trigger_asr_images={int(k): v for k, v in record["trigger_asr_images"]},
        **{name: record[name] for name in SCAN_FIELDS},
    )
