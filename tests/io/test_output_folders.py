"""io.atomic.output_folders: missing output folders are created, and removed again when the run fails."""

from __future__ import annotations

import pytest

from geolesf.errors import DataError
from geolesf.io.atomic import output_folders


def test_creates_missing_folders_and_keeps_them_on_success(tmp_path):
    out = tmp_path / "a" / "b" / "map.tif"
    with output_folders(out, None, tmp_path / "here.tif") as made:
        assert made == [tmp_path / "a", tmp_path / "a" / "b"]
        out.write_bytes(b"x")
    assert out.is_file()


def test_removes_the_folders_it_made_when_the_block_fails(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with output_folders(tmp_path / "kept" / "new" / "deeper" / "map.tif"):
            assert (tmp_path / "kept" / "new" / "deeper").is_dir()
            raise RuntimeError("run failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())


def test_a_folder_with_something_in_it_is_kept(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with output_folders(tmp_path / "new" / "map.tif"):
            (tmp_path / "new" / ".map.tif.resume").write_text("state")
            raise KeyboardInterrupt
    assert (tmp_path / "new" / ".map.tif.resume").is_file()


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        with output_folders(tmp_path / "file" / "sub" / "map.tif"):
            pass
    assert (tmp_path / "file").is_file()
