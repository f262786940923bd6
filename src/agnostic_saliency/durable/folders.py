"""Claiming an output folder for a run: an existing result is never replaced by accident, and a
killed run's checkpoint waits in the folder for ``--resume``.

The rules (``map`` and ``scan`` alike):

- a missing or empty folder is used;
- a folder with files in it is refused unless ``overwrite`` (files the run writes replace those of
  the same name; other files stay) or ``resume``;
- a folder holding a checkpoint (an interrupted run) is refused unless ``resume`` (continue from
  it) or ``overwrite`` (discard it and start again);
- the checkpoint lives in ``<out>/.checkpoint/``; it is removed when the run succeeds, kept when
  the run is interrupted, and removed on any other failure unless it was there before the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..render.output import claimed_output_dir

CHECKPOINT_DIR = ".checkpoint"


@contextlib.contextmanager
def claimed_run_folder(path: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Check and claim the output folder ``path`` under the rules above; yields the checkpoint
    folder (not created: the run creates it when it first saves)."""
    out = Path(path)
    checkpoints = out / CHECKPOINT_DIR
    if out.is_dir() and not (overwrite or resume):
        if checkpoints.exists():
            raise InputError(f"output folder {out} holds the checkpoint of an interrupted run: pass --resume to "
                             "continue it or --overwrite to start again")
        if any(out.iterdir()):
            raise InputError(f"output folder {out} exists and is not empty: pass --overwrite to replace its files")
    with claimed_output_dir(out):
        for leftover in out.glob(".staging-*"):  # a run killed while it moved its files into place
            shutil.rmtree(leftover, ignore_errors=True)
        if overwrite and not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        kept = checkpoints.exists()
        try:
            yield checkpoints
        except KeyboardInterrupt:
            raise  # interrupted: the checkpoint is what --resume continues from
        except BaseException:
            if not kept:
                shutil.rmtree(checkpoints, ignore_errors=True)
            raise
        shutil.rmtree(checkpoints, ignore_errors=True)
