"""Claiming an output folder: existing results and checkpoints are never replaced by accident."""

import pytest

from agnostic_saliency.durable.folders import CHECKPOINT_DIR, claimed_run_folder
from agnostic_saliency.errors import InputError


def test_missing_and_empty_folders_are_used_and_the_checkpoint_removed_on_success(tmp_path):
    for out in (tmp_path / "new", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with claimed_run_folder(out) as saves:
            assert saves == out / CHECKPOINT_DIR and out.is_dir()
            saves.mkdir()
            (saves / "map.safetensors").write_bytes(b"state")
            (out / "result.json").write_text("{}")
        assert sorted(p.name for p in out.iterdir()) == ["result.json"]


def test_a_folder_with_files_needs_overwrite(tmp_path):
    (tmp_path / "old.json").write_text("old")
    with pytest.raises(InputError, match="exists and is not empty: pass --overwrite"):
        with claimed_run_folder(tmp_path):
            pass
    with claimed_run_folder(tmp_path, overwrite=True):
        pass
    assert (tmp_path / "old.json").read_text() == "old"  # only files the run writes are replaced


def test_a_checkpoint_needs_resume_or_overwrite_and_survives_interrupts(tmp_path):
    saves = tmp_path / CHECKPOINT_DIR
    saves.mkdir()
    (saves / "map.safetensors").write_bytes(b"state")
    with pytest.raises(InputError, match="interrupted run: pass --resume"):
        with claimed_run_folder(tmp_path):
            pass
    with pytest.raises(KeyboardInterrupt), claimed_run_folder(tmp_path, resume=True):
        raise KeyboardInterrupt
    assert (saves / "map.safetensors").read_bytes() == b"state"
    with pytest.raises(InputError, match="another run"), claimed_run_folder(tmp_path, resume=True):
        raise InputError("made by another run")  # a refused checkpoint is the user's: kept
    assert (saves / "map.safetensors").exists()
    with claimed_run_folder(tmp_path, overwrite=True) as fresh:
        assert not fresh.exists()  # --overwrite discards it


def test_a_failed_run_leaves_no_checkpoint_it_made_and_no_staging_leftovers(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".staging-abc").mkdir()  # from a run killed while it moved files into place
    with pytest.raises(RuntimeError), claimed_run_folder(out, overwrite=True) as saves:
        saves.mkdir()
        (saves / "map.safetensors").write_bytes(b"state")
        raise RuntimeError("the model fell over")
    assert list(out.iterdir()) == []  # the folder was there before: kept, without what this run made
