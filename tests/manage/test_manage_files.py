"""Generated files are written only when their content changed; stale ones are removed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nebula_manage.config import load_deployment
from nebula_manage.files import GENERATED_MARK, Rendering, sync
from nebula_manage.render import render


def rendering(root: Path, **files: str) -> Rendering:
    """conf.d/NAME.conf for each NAME=body."""
    text = {f"conf.d/{name}.conf": f"; {GENERATED_MARK}\n{body}\n" for name, body in files.items()}
    return Rendering(root=root, files=text, managed=("conf.d/*.conf",))


def test_only_changed_files_are_written(tmp_path: Path) -> None:
    first = sync(rendering(tmp_path, a="1", b="2"))
    assert first.written == first.created == ["conf.d/a.conf", "conf.d/b.conf"]
    os.utime(tmp_path / "conf.d" / "a.conf", (1, 1))

    second = sync(rendering(tmp_path, a="1", b="changed"))
    assert second.written == ["conf.d/b.conf"] and second.created == []
    assert second.unchanged == ["conf.d/a.conf"]
    assert (tmp_path / "conf.d" / "a.conf").stat().st_mtime == 1  # not even touched
    assert not sync(rendering(tmp_path, a="1", b="changed")).changed


def test_stale_generated_files_are_removed_and_foreign_ones_kept(tmp_path: Path) -> None:
    sync(rendering(tmp_path, a="1", b="2"))
    (tmp_path / "conf.d" / "mine.conf").write_text("; written by hand\n")
    result = sync(rendering(tmp_path, a="1"))
    assert result.removed == ["conf.d/b.conf"]
    assert (tmp_path / "conf.d" / "mine.conf").exists()


def test_force_rewrites_everything(tmp_path: Path) -> None:
    sync(rendering(tmp_path, a="1"))
    assert sync(rendering(tmp_path, a="1"), force=True).written == ["conf.d/a.conf"]


def test_files_are_private_and_left_without_temporaries(tmp_path: Path) -> None:
    sync(rendering(tmp_path, a="secret"))
    assert (tmp_path / "conf.d" / "a.conf").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "conf.d").iterdir()) == ["a.conf"]


def test_a_program_switched_off_loses_its_file(tmp_path: Path) -> None:
    config = tmp_path / "nebula.yml"
    config.write_text(f"nebula:\n  data_dir: {tmp_path / 'data'}\n")
    before = sync(render(load_deployment(config, {}, sys.executable, tmp_path)))
    assert "conf.d/beat.conf" in before.written
    config.write_text(config.read_text() + "processes:\n  beat:\n    enable: false\n")
    after = sync(render(load_deployment(config, {}, sys.executable, tmp_path)))
    assert after.removed == ["conf.d/beat.conf"] and after.written == []
