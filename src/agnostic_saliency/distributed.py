"""Maps computed in chunks of classes, each chunk a task of an executor (local or Ray).

Each chunk gets its own seed, derived from the run's seed and the chunk's classes, so the merged
maps depend on the seed and the chunk size only: never on how many workers ran the chunks, or in
which order they finished. The local executor with the same chunk size gives the same maps (on
the CPU, bit-identical where both sides use the same number of threads; otherwise floating-point
sums in the model's backward pass may differ in the last bits).
"""

from __future__ import annotations

import time

from .concepts import chunk_seed
from .errors import InputError
from .executors import LocalExecutor, RayExecutor, move_to_assigned_gpu
from .models import LoadedModel
from .result import SaliencyResult, concatenate


def class_chunks(concepts: list[list[int]], classes_per_task: int) -> list[list[list[int]]]:
    """Consecutive chunks of at most ``classes_per_task`` concepts, in target order."""
    if classes_per_task < 1:
        raise InputError(f"classes per task must be at least 1, got {classes_per_task}")
    return [concepts[i : i + classes_per_task] for i in range(0, len(concepts), classes_per_task)]


def _attribute_chunk(loaded: LoadedModel, concepts: list[list[int]], seed: int, memory_cap_mb: float,
                     settings: dict, compile: bool = False) -> SaliencyResult:
    """One task: the maps of ``concepts`` at the chunk's own seed, on a GPU where the task has one."""
    from .method.engine import InputAgnosticSaliency

    move_to_assigned_gpu(loaded.model)
    explainer = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names, memory_cap_mb=memory_cap_mb,
                                      compile=compile)
    return explainer.attribute(targets=concepts, seed=chunk_seed(seed, concepts), progress=False, **settings)


def attribute_in_chunks(
    loaded: LoadedModel,
    targets,
    executor: LocalExecutor | RayExecutor,
    classes_per_task: int,
    seed: int = 0,
    memory_cap_mb: float = 2048,
    progress: bool = True,
    compile: bool = False,
    **settings,
) -> SaliencyResult:
    """The maps of ``targets``, computed in chunks of ``classes_per_task`` concepts as tasks of
    ``executor`` and merged in target order. ``settings`` go to
    :meth:`InputAgnosticSaliency.attribute` in every task; ``compile`` to its constructor (each
    task compiles its own copy of the model)."""
    from tqdm.auto import tqdm

    from .method.engine import InputAgnosticSaliency

    start = time.perf_counter()
    concepts = InputAgnosticSaliency(loaded.model, loaded.spec, loaded.class_names,
                                     memory_cap_mb=memory_cap_mb).resolve_targets(targets)
    chunks = class_chunks(concepts, classes_per_task)
    gpus = executor.gpus_per_task() if isinstance(executor, RayExecutor) else 0
    parts: dict[int, SaliencyResult] = {}
    items = [(loaded, chunk, seed, memory_cap_mb, settings, compile) for chunk in chunks]
    with tqdm(total=len(chunks), disable=not progress, desc=f"class chunks ({executor.name})", unit="chunk") as bar:
        for index, part in executor.run(_attribute_chunk, items, gpus=gpus):
            parts[index] = part
            bar.update(1)
    ordered = [parts[i] for i in range(len(chunks))]
    config = {**ordered[0].config, "seed": seed, "classes_per_task": classes_per_task,
              "chunk_seeds": [part.config["seed"] for part in ordered], **executor.describe()}
    return concatenate(ordered, config=config, seconds=time.perf_counter() - start)
