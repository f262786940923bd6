"""Checkpoints: a resumed run equals an uninterrupted one (in-process at every step, and after a
real SIGKILL of the command line), and a checkpoint of another run is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from agnostic_saliency import InputAgnosticSaliency, InputError, InputSpec
from agnostic_saliency.backdoor.result import BackdoorResult
from agnostic_saliency.backdoor.scan import scan, scan_once
from agnostic_saliency.cli import main
from agnostic_saliency.durable import checkpoint as checkpoint_module
from agnostic_saliency.durable.checkpoint import Checkpoint, load_scan_draw, model_digest

RUN = dict(steps=6, refine_steps=4, batch_size=4, eval_samples=8, progress=False, seed=3)


class StopAt(Checkpoint):
    """A checkpoint that interrupts the run (as Ctrl-C would) right after its n-th save."""

    def __init__(self, path, stop_at: int):
        super().__init__(path, every=1)
        self.stop_at, self.saves = stop_at, 0

    def after_save(self):
        self.saves += 1
        if self.saves == self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def explainer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 4)
    ).eval()
    return InputAgnosticSaliency(model, InputSpec((1, 8, 8)))


@pytest.fixture(scope="module")
def uninterrupted(explainer):
    return explainer.attribute(**RUN)


@settings(max_examples=10, deadline=None)
@given(stop_at=st.integers(1, RUN["steps"] + RUN["refine_steps"]), refine_mode=st.sampled_from(["shape", "blur"]))
def test_resume_at_any_step_equals_no_interruption(explainer, tmp_path_factory, stop_at, refine_mode):
    path = tmp_path_factory.mktemp("checkpoint") / "map.safetensors"
    reference = explainer.attribute(refine_mode=refine_mode, **RUN)
    with pytest.raises(KeyboardInterrupt):
        explainer.attribute(checkpoint=StopAt(path, stop_at), refine_mode=refine_mode, **RUN)
    saved = json.loads(_metadata(path))
    assert (saved["stage"], saved["step"]) == (
        ("nudge", stop_at) if stop_at <= RUN["steps"] else ("refine", stop_at - RUN["steps"])
    )
    resumed_from = Checkpoint(path, resume=True)
    resumed = explainer.attribute(checkpoint=resumed_from, refine_mode=refine_mode, **RUN)
    assert resumed_from.resumed_from["step"] == saved["step"]
    assert torch.equal(resumed.maps, reference.maps)
    assert torch.equal(resumed.unrefined_maps, reference.unrefined_maps)
    assert resumed.refined == reference.refined
    assert resumed.sample_gradients == reference.sample_gradients
    assert resumed.fidelity == reference.fidelity


@pytest.mark.parametrize("stop_at", [4, 12, 27, 33])
def test_resume_with_early_stopping_equals_no_interruption(explainer, tmp_path, stop_at):
    """Maps that stopped early stay stopped after a resume, in the nudge and in the refinement."""
    run = dict(RUN, steps=30, early_stop=True, stop_target=0.5, stop_window=3)
    reference = explainer.attribute(**run)
    assert any(steps < 30 for steps in reference.nudge_steps)  # some maps stopped
    path = tmp_path / "map.safetensors"
    with pytest.raises(KeyboardInterrupt):
        explainer.attribute(checkpoint=StopAt(path, stop_at), **run)
    resumed = explainer.attribute(checkpoint=Checkpoint(path, every=1, resume=True), **run)
    assert resumed.nudge_steps == reference.nudge_steps
    assert torch.equal(resumed.maps, reference.maps)
    assert resumed.sample_gradients == reference.sample_gradients


class StopInPart(Checkpoint):
    """Saves every step; the second chunk of classes is interrupted after its third save."""

    def part(self, number):
        return (
            StopAt(self.path.with_name(f"part{number}.safetensors"), 3)
            if number == 1
            else Checkpoint(self.path.with_name(f"part{number}.safetensors"), every=1)
        )


def test_a_run_that_streams_its_classes_resumes_chunk_by_chunk(explainer, tmp_path):
    cap = (explainer.RESULT_COPIES * 4 + 8 + 4 + 2 * explainer.STATE_COPIES) * 64 * 4 + explainer.sample_bytes
    streaming = InputAgnosticSaliency(explainer.model, explainer.spec, memory_cap_mb=(cap + 1000) / 2**20)
    reference = streaming.attribute(**RUN)
    assert reference.config["classes_per_chunk"] == 1
    with pytest.raises(KeyboardInterrupt):
        streaming.attribute(checkpoint=StopInPart(tmp_path / "map.safetensors"), **RUN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part0.safetensors", "part1.safetensors"]
    finished = json.loads(_metadata(tmp_path / "part0.safetensors"))
    assert (finished["stage"], finished["step"]) == ("refine", RUN["refine_steps"])  # the first chunk ended

    class Resume(Checkpoint):
        def part(self, number):
            return Checkpoint(self.path.with_name(f"part{number}.safetensors"), every=1, resume=True)

    resuming = Resume(tmp_path / "map.safetensors", every=1, resume=True)
    resumed = streaming.attribute(checkpoint=resuming, **RUN)
    assert resuming.resumed_from["step"] == RUN["refine_steps"]  # the first chunk came back finished
    assert torch.equal(resumed.maps, reference.maps)
    assert resumed.sample_gradients == reference.sample_gradients


def _metadata(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()["checkpoint"]


def test_checkpoint_of_other_settings_model_or_version_is_refused(explainer, tmp_path, monkeypatch):
    path = tmp_path / "map.safetensors"
    with pytest.raises(KeyboardInterrupt):
        explainer.attribute(checkpoint=StopAt(path, 2), **RUN)
    with pytest.raises(InputError, match=r"settings\.nudging\.steps is 6 there, 7 here"):
        explainer.attribute(checkpoint=Checkpoint(path, resume=True), **{**RUN, "steps": 7})
    with pytest.raises(InputError, match=r"settings\.seed is 3 there, 4 here"):
        explainer.attribute(checkpoint=Checkpoint(path, resume=True), **{**RUN, "seed": 4})
    other = InputAgnosticSaliency(_perturbed(explainer.model), explainer.spec)
    with pytest.raises(InputError, match=r"^the checkpoint in .* was made by another run \(model is"):
        other.attribute(checkpoint=Checkpoint(path, resume=True), **RUN)
    monkeypatch.setattr(checkpoint_module, "tool_versions", lambda: {"agnostic_saliency": "9.9", "torch": "0"})
    from agnostic_saliency.method import engine

    monkeypatch.setattr(engine, "tool_versions", checkpoint_module.tool_versions)
    with pytest.raises(InputError, match=r"versions\.agnostic_saliency is .* there, 9\.9 here"):
        explainer.attribute(checkpoint=Checkpoint(path, resume=True), **RUN)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(InputError, match="unreadable"):
        explainer.attribute(checkpoint=Checkpoint(path, resume=True), **RUN)


def _perturbed(model):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert model_digest(other) != model_digest(model)
    return other


def test_without_resume_a_checkpoint_is_ignored_and_the_interval_is_checked(explainer, uninterrupted, tmp_path):
    path = tmp_path / "map.safetensors"
    with pytest.raises(KeyboardInterrupt):
        explainer.attribute(checkpoint=StopAt(path, 3), **RUN)
    fresh = explainer.attribute(checkpoint=Checkpoint(path, every=100), **RUN)
    assert torch.equal(fresh.maps, uninterrupted.maps)
    with pytest.raises(InputError, match="at least 1 step"):
        Checkpoint(path, every=0)


def test_interrupt_request_saves_then_stops(explainer, tmp_path):
    """SIGINT/SIGTERM during the loop only ask for a stop: the step ends, is saved, then the run stops."""
    path = tmp_path / "map.safetensors"
    checkpoint = Checkpoint(path, every=1000)
    checkpoint.stop_requested = True  # as the signal handler sets it
    with pytest.raises(KeyboardInterrupt):
        explainer.attribute(checkpoint=checkpoint, **RUN)
    assert json.loads(_metadata(path))["step"] == 1


def test_scan_draws_round_trip(tiny_model, tiny_spec, tmp_path):
    options = dict(
        steps=3,
        exemplar_steps=2,
        pool_size=24,
        polish_steps=2,
        threshold=1e9,
        progress=False,
        seed=5,
        draws=2,
    )
    reference = scan(tiny_model, tiny_spec, **options)
    saves = Checkpoint(tmp_path, resume=True)
    first = scan(tiny_model, tiny_spec, checkpoint=saves, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draw_0.safetensors", "draw_1.safetensors"]
    identity = json.loads(_metadata(tmp_path / "draw_0.safetensors"))["identity"]
    loaded = load_scan_draw(saves, identity, 0, BackdoorResult)
    alone = scan_once(tiny_model, tiny_spec, seed=5, **{k: v for k, v in options.items() if k not in ("draws", "seed")})
    assert torch.equal(loaded.masks, alone.masks) and torch.equal(loaded.patterns, alone.patterns)
    assert loaded.classes == alone.classes and loaded.score == alone.score and loaded.settings["seed"] == 5
    # Both draws saved: a resumed scan does no work and gives the same result.
    again = scan(tiny_model, tiny_spec, checkpoint=Checkpoint(tmp_path, resume=True), **options)
    for result in (first, again):
        assert torch.equal(result.masks, reference.masks) and torch.equal(result.patterns, reference.patterns)
        assert result.classes == reference.classes and result.flagged == reference.flagged
        assert [d["seed"] for d in result.settings["draws"]] == [5, 6]
    with pytest.raises(InputError, match=r"settings\.steps is 3 there, 4 here"):
        scan(tiny_model, tiny_spec, checkpoint=Checkpoint(tmp_path, resume=True), **{**options, "steps": 4})


# -- a real kill --------------------------------------------------------------------------------


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from agnostic_saliency.cli import main; sys.exit(main())", *arguments]


def _env() -> dict:
    # The same thread count in every process: intra-op parallelism changes the last bits.
    return dict(
        os.environ,
        OMP_NUM_THREADS=str(torch.get_num_threads()),
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    )


def _launch(arguments: list[str], out: Path) -> subprocess.Popen:
    """The CLI started in the background writing ``out``, its stderr kept as text."""
    return subprocess.Popen(
        _cli(*arguments, "--out", str(out)),
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_once_saved(arguments: list[str], out: Path, saved: str) -> None:
    """Start the CLI, SIGKILL it as soon as ``saved`` (under the checkpoint folder) exists."""
    process = _launch(arguments, out)
    target = out / ".checkpoint" / saved
    deadline = time.monotonic() + 120
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    assert target.exists()
    assert not (out / "summary.json").exists() and not (out / "scan.json").exists()


def _same_folders(a: Path, b: Path, summary: str) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no checkpoint, no staging folder
    for name in names:
        if name.endswith(".safetensors"):
            x, y = load_file(str(a / name)), load_file(str(b / name))
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
        elif name.endswith(".png"):
            with Image.open(a / name) as x, Image.open(b / name) as y:
                assert x.tobytes() == y.tobytes(), name
    first, second = (_without_times(json.loads((folder / summary).read_text())) for folder in (a, b))
    assert first.pop("provenance")["resumed"] is None
    assert second.pop("provenance")["resumed"] is not None
    assert first == second


def _without_times(data: dict) -> dict:
    data.pop("seconds")
    for draw in data.get("settings", {}).get("draws", []) if isinstance(data.get("settings"), dict) else []:
        draw.pop("seconds", None)
    for key in ("started", "finished", "command"):
        data["provenance"].pop(key)
    data["provenance"]["settings"].pop("resume")
    data["provenance"]["settings"].pop("out")
    return data


@pytest.fixture
def user_model(user_model_file, tmp_path) -> list[str]:
    """The user's model file with fixed weights (its factory alone draws new ones each time)."""
    from agnostic_saliency.models import load_model

    torch.manual_seed(0)
    weights = tmp_path / "net.safetensors"
    from safetensors.torch import save_file

    save_file(load_model(f"{user_model_file}:build").model.state_dict(), str(weights))
    return ["--model", f"{user_model_file}:build", "--weights", str(weights)]


def test_sigkill_then_resume_map_equals_uninterrupted(user_model, tmp_path, capsys):
    arguments = [
        "map",
        *user_model,
        "--steps",
        "80",
        "--refine-steps",
        "20",
        "--batch-size",
        "8",
        "--eval-samples",
        "16",
        "--checkpoint-every",
        "3",
        "--quiet",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*arguments, "--out", str(whole)]) == 0  # in-process, at the subprocesses' thread count
    _kill_once_saved(arguments, killed, "map.safetensors")
    step = json.loads(_metadata(killed / ".checkpoint" / "map.safetensors"))["step"]
    capsys.readouterr()
    assert main([*arguments, "--out", str(killed)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    subprocess.run(_cli(*arguments, "--resume", "--out", str(killed)), env=_env(), check=True, stdin=subprocess.DEVNULL)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["provenance"]["resumed"]["step"] >= step
    _same_folders(whole, killed, "summary.json")


def test_sigkill_then_resume_scan_equals_uninterrupted(user_model, tmp_path):
    # A threshold nothing reaches: every draw runs, so the kill lands between draws.
    arguments = [
        "scan",
        *user_model,
        "--steps",
        "5",
        "--exemplar-steps",
        "2",
        "--draws",
        "3",
        "--threshold",
        "1e9",
        "--quiet",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*arguments, "--out", str(whole)]) == 0
    assert len(json.loads((whole / "scan.json").read_text())["settings"]["draws"]) == 3
    _kill_once_saved(arguments, killed, "draw_0.safetensors")
    subprocess.run(_cli(*arguments, "--resume", "--out", str(killed)), env=_env(), check=True, stdin=subprocess.DEVNULL)
    _same_folders(whole, killed, "scan.json")


def test_sigterm_saves_a_checkpoint_and_exits_130(user_model, tmp_path):
    arguments = [
        "map",
        *user_model,
        "--steps",
        "2000",
        "--refine-steps",
        "0",
        "--batch-size",
        "16",
        "--eval-samples",
        "16",
        "--checkpoint-every",
        "0",
        "--quiet",
    ]
    out = tmp_path / "out"
    process = _launch(arguments, out)
    deadline = time.monotonic() + 120
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the folder is claimed once the imports are done
    time.sleep(3)  # the model's loading, then inside the loop
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and "rerun with --resume" in err and "Traceback" not in err
    saved = json.loads(_metadata(out / ".checkpoint" / "map.safetensors"))
    assert saved["stage"] == "nudge" and 0 < saved["step"] < 2000
