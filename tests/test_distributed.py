"""Maps in class chunks: the same maps from the local executor and from Ray, and a chunk whose
worker dies is run again."""

import textwrap

import pytest
import torch

from agnostic_saliency import api
from agnostic_saliency.distributed import attribute_in_chunks, chunk_seed, class_chunks
from agnostic_saliency.errors import InputError
from agnostic_saliency.executors import LocalExecutor, make_executor

# Ray's tests run in one pytest-xdist worker (one local Ray instance at a time).
pytestmark = pytest.mark.xdist_group("ray")

SETTINGS = dict(steps=3, batch_size=4, refine_steps=2, eval_samples=16)

# A 4-class net on 1x12x12 whose first nudging step (gradients on) kills its process once: the
# marker file says it has died already. The check and memory estimate run without gradients.
DYING_MODEL = textwrap.dedent("""
    import os
    import torch
    from torch import nn

    MARKER = {marker!r}


    class Net(nn.Module):
        input_shape = (1, 12, 12)

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 10 * 10, 4)

        def forward(self, x):
            if MARKER and torch.is_grad_enabled() and not os.path.exists(MARKER):
                open(MARKER, "w").close()
                os._exit(1)
            return self.fc(torch.relu(self.conv(x)).flatten(1))


    def build():
        return Net()
""")


def model_file(tmp_path, marker=""):
    path = tmp_path / f"net_{abs(hash(marker))}.py"
    path.write_text(DYING_MODEL.format(marker=marker))
    return path


def test_chunk_seeds_depend_on_the_seed_and_the_classes_only():
    assert chunk_seed(0, [[1], [2]]) == chunk_seed(0, [[1], [2]])
    assert len({chunk_seed(0, [[1], [2]]), chunk_seed(1, [[1], [2]]), chunk_seed(0, [[1], [3]])}) == 3
    assert class_chunks([[0], [1], [2], [3], [4]], 2) == [[[0], [1]], [[2], [3]], [[4]]]
    with pytest.raises(InputError, match="at least 1"):
        class_chunks([[0]], 0)


def test_local_chunks_equal_each_chunk_computed_alone(tmp_path):
    loaded = api.load(f"{model_file(tmp_path)}:build", device="cpu")
    merged = attribute_in_chunks(loaded, "all", LocalExecutor(), 3, seed=5, progress=False, **SETTINGS)
    assert merged.names == ["0", "1", "2", "3"] and merged.maps.shape == (4, 1, 12, 12)
    assert len(merged.fidelity.fooling_rate) == 4 and merged.config["chunk_seeds"][0] == chunk_seed(5, [[0], [1], [2]])
    # The last chunk is [[3]] alone: computed by itself, it gives the same map.
    alone = attribute_in_chunks(loaded, [3], LocalExecutor(), 3, seed=5, progress=False, **SETTINGS)
    assert torch.equal(alone.maps[0], merged.maps[3])
    # Other chunks, other seeds and other shared samples: other maps.
    pairs = attribute_in_chunks(loaded, "all", LocalExecutor(), 2, seed=5, progress=False, **SETTINGS)
    assert not torch.equal(pairs.maps, merged.maps)


def test_unknown_executor_and_address_without_ray_are_one_line_errors():
    with pytest.raises(InputError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(InputError, match="--address goes with --executor ray"):
        make_executor("local", "10.0.0.1:6379")


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_local_maps(ray_instance, tmp_path):
    loaded = api.load(f"{model_file(tmp_path)}:build", device="cpu")
    local = attribute_in_chunks(loaded, "all", LocalExecutor(), 2, seed=1, progress=False, **SETTINGS)
    remote = attribute_in_chunks(loaded, "all", make_executor("ray"), 2, seed=1, progress=False, **SETTINGS)
    assert remote.config["executor"] == "ray" and remote.config["chunk_seeds"] == local.config["chunk_seeds"]
    # Ray's workers run one thread, as the tests do: the same sums in the same order.
    torch.testing.assert_close(remote.maps, local.maps, rtol=0, atol=1e-6)
    assert remote.fidelity.fooling_rate == pytest.approx(local.fidelity.fooling_rate, abs=1e-6)


def test_a_chunk_whose_worker_dies_is_run_again(ray_instance, tmp_path):
    marker = tmp_path / "died-once"
    loaded = api.load(f"{model_file(tmp_path, str(marker))}:build", device="cpu")
    result = attribute_in_chunks(loaded, [0, 1], make_executor("ray"), 1, seed=0, progress=False, **SETTINGS)
    assert marker.exists()  # a worker died ...
    assert result.maps.shape == (2, 1, 12, 12) and torch.isfinite(result.maps).all()  # ... and the run completed


def test_map_command_with_ray_writes_the_folder(ray_instance, tmp_path):
    from agnostic_saliency.cli import main

    spec = f"{model_file(tmp_path)}:build"
    args = ["map", "--model", spec, "--steps", "3", "--batch-size", "4", "--refine-steps", "2", "--eval-samples", "16",
            "--classes-per-task", "2", "--quiet"]
    assert main([*args, "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    from safetensors.torch import load_file

    ray_maps = load_file(str(tmp_path / "ray" / "maps.safetensors"))["maps"]
    local_maps = load_file(str(tmp_path / "local" / "maps.safetensors"))["maps"]
    torch.testing.assert_close(ray_maps, local_maps, rtol=0, atol=1e-6)
