import json
import math
import os

import pytest

from agnostic_saliency.errors import InputError
from agnostic_saliency.render.output import prepare_output_dir, staged_output, write_json


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_staged_output_moves_files_into_place(tmp_path):
    out = tmp_path / "new" / "out"
    with staged_output(out) as stage:
        (stage / "a.txt").write_text("A")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("B")
        assert not (out / "a.txt").exists()  # nothing visible before the end
    assert listing(out) == ["a.txt", "sub", "sub/b.txt"]
    assert (out / "sub" / "b.txt").read_text() == "B"


def test_staged_output_replaces_old_files_only_on_success(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    (tmp_path / "a.txt").write_text("old a")
    with staged_output(tmp_path) as stage:
        (stage / "a.txt").write_text("new a")
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert (tmp_path / "keep.txt").read_text() == "old"


def test_failure_leaves_old_files_untouched(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    before = listing(tmp_path)

    class Failure(Exception):
        pass

    with pytest.raises(Failure):
        with staged_output(tmp_path) as stage:
            (stage / "a.txt").write_text("half-written")
            (stage / "b.txt").write_text("partial")
            raise Failure()
    assert listing(tmp_path) == before
    assert (tmp_path / "a.txt").read_text() == "old a"


def test_prepare_output_dir(tmp_path):
    out = prepare_output_dir(tmp_path / "x" / "y")
    assert out.is_dir() and listing(out) == []  # the write test leaves nothing behind
    (tmp_path / "file.txt").write_text("I am a file")
    with pytest.raises(InputError, match="not a folder"):
        prepare_output_dir(tmp_path / "file.txt")
    with pytest.raises(InputError, match="not writable"):
        prepare_output_dir(tmp_path / "file.txt" / "out")
    with pytest.raises(InputError):
        with staged_output(tmp_path / "file.txt" / "out"):
            pytest.fail("must not get here")
    assert (tmp_path / "file.txt").read_text() == "I am a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            prepare_output_dir(locked)
    finally:
        locked.chmod(0o700)


def test_write_json(tmp_path):
    write_json({"a": [1, 2.5], "b": "x"}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": [1, 2.5], "b": "x"}
    with pytest.raises(ValueError):
        write_json({"a": math.nan}, tmp_path / "nan.json")
