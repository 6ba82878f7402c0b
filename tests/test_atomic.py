"""The one atomic writer (importer.outputs.atomic): never through a symlink, mode kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from importer.outputs.atomic import write_atomically
from importer.outputs.metrics import write_metrics


def _planted(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    target.chmod(0o640)
    return target


def _untouched(target: Path) -> None:
    assert target.read_text() == "keep me"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path, mode: int) -> None:
    target = _planted(tmp_path)
    path = tmp_path / "out.json"
    path.symlink_to(target)
    write_atomically(path, b"new", mode=mode)
    _untouched(target)
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_symlink_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    target = _planted(tmp_path)
    path = tmp_path / "out.json"
    tmp = tmp_path / "out.json.tmp"
    tmp.symlink_to(target)
    write_atomically(path, b"new", mode=0o600, tmp=tmp)
    _untouched(target)
    assert path.read_bytes() == b"new" and not tmp.exists() and not tmp.is_symlink()


def test_metrics_never_write_through_a_planted_symlink(tmp_path: Path) -> None:
    target = _planted(tmp_path)
    path = tmp_path / "metrics.prom"
    (tmp_path / f".metrics.prom.{os.getpid()}.tmp").symlink_to(target)
    write_metrics(path, "moe_import_up 1\n")
    _untouched(target)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.unlink()
    path.symlink_to(target)
    write_metrics(path, "moe_import_up 1\n")
    _untouched(target)
    assert path.read_text() == "moe_import_up 1\n"


def test_the_umask_applies_unless_the_mode_is_exact(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomically(tmp_path / "a", b"x", mode=0o666, exact_mode=False, durable=False)
        write_atomically(tmp_path / "b", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o644
