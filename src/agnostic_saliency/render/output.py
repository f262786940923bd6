"""Writing an output folder safely: everything goes to a staging folder first and is moved into
place only when complete, so an error never leaves half-written files or clobbers old ones."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable folder, before any work is done."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InputError(f"output folder {out} is not writable: {error.strerror or error}") from None
    return out


@contextlib.contextmanager
def claimed_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Check ``path`` is writable before any work, and remove it again if this run created it
    and fails before writing anything into it."""
    existed = Path(path).exists()
    out = prepare_output_dir(path)
    try:
        yield out
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


@contextlib.contextmanager
def staged_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder inside ``path``; on success its files replace those in ``path``."""
    out = prepare_output_dir(path)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        yield staging
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                target = out / item.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(data: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
