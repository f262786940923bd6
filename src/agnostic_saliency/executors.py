"""Where independent pieces of work run: one after the other in this process (``local``), or as
tasks on a Ray cluster (``ray``), one GPU each where the cluster has GPUs.

Both executors take the same work items and yield ``(index, result)`` as each finishes, so the
callers (class chunks of a map run, models of a population scan) merge results by index and do
not depend on the order or the number of workers. Ray retries a task whose worker dies and, with
``retry_exceptions``, one that raises; a task that keeps failing fails the run.

Ray is an optional extra: ``pip install 'agnostic-saliency[ray]'``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence

from .errors import InputError

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Runs every item in this process, in order."""

    name = "local"

    def run(self, function: Callable, items: Sequence[tuple], gpus: float = 0) -> Iterator[tuple[int, object]]:
        for index, item in enumerate(items):
            yield index, function(*item)

    def describe(self) -> dict:
        return {"executor": "local"}


class RayExecutor:
    """Runs each item as a Ray task.

    Parameters
    ----------
    address : a running cluster (``ray start --head`` prints it, e.g. ``10.0.0.5:6379``), or
        ``None`` to start a local instance on this machine (or join one already started in this
        process, as the tests do).
    max_retries : how often a task is run again after its worker dies or it raises (default 3).
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3):
        try:
            import ray
        except ImportError:
            raise InputError("the ray executor needs Ray: pip install 'agnostic-saliency[ray]'") from None
        self.ray = ray
        self.address = address
        self.max_retries = max_retries
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise InputError(
                    f"cannot reach the Ray cluster at {address or 'a new local instance'}: {first}"
                ) from None

    def run(self, function: Callable, items: Sequence[tuple], gpus: float = 0) -> Iterator[tuple[int, object]]:
        """Submit every item, then yield results as tasks finish. ``gpus`` per task; 0 where the
        cluster has none, so CPU-only clusters take one CPU per task."""
        ray = self.ray
        _ship_user_modules()
        remote = ray.remote(function).options(
            num_cpus=1, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=True
        )
        pending = {remote.remote(*item): index for index, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)

    def gpus_per_task(self) -> float:
        """One GPU per task where the cluster has any, else none."""
        return 1.0 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def describe(self) -> dict:
        resources = self.ray.cluster_resources()
        return {
            "executor": "ray",
            "address": self.address,
            "cluster_cpus": resources.get("CPU", 0),
            "cluster_gpus": resources.get("GPU", 0),
            "max_retries": self.max_retries,
        }


def move_to_assigned_gpu(model) -> None:
    """Inside a Ray task that was given a GPU, move ``model`` there; elsewhere leave it where the
    caller put it (a local run keeps the caller's device)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    try:
        gpus = ray.get_gpu_ids()
    except Exception:  # not inside a task
        return
    if gpus:
        model.to("cuda")


def make_executor(name: str = "local", address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``); ``address`` only goes with Ray."""
    if name not in EXECUTORS:
        raise InputError(f"unknown executor {name!r}: {' or '.join(EXECUTORS)}")
    if name == "local":
        if address:
            raise InputError("--address goes with --executor ray")
        return LocalExecutor()
    return RayExecutor(address)


def _ship_user_modules() -> None:
    """Models built by a ``file.py:factory`` spec live in modules that Ray's workers cannot import
    by name: have cloudpickle send those modules' code by value instead."""
    from ray import cloudpickle

    from .models.loading import USER_MODULE_PREFIX

    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX):
            cloudpickle.register_pickle_by_value(module)
