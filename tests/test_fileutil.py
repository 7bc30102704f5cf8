"""Input patterns expand the same way for jobs and commands."""

from __future__ import annotations

from pathlib import Path

from cim.fileutil import expand_patterns


def test_patterns_expand_sorted_once_each_and_keep_what_matches_nothing(tmp_path: Path) -> None:
    for name in ("b.laz", "a.laz", "c.las"):
        (tmp_path / name).write_bytes(b"")
    found = expand_patterns([str(tmp_path / "*.laz"), str(tmp_path / "a.laz"), str(tmp_path / "missing*.laz")])
    assert found == [tmp_path / "a.laz", tmp_path / "b.laz", tmp_path / "missing*.laz"]
