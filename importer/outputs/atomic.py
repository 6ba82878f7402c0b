"""The one atomic file writer: a temporary file beside the target, then a rename.

The temporary file is created with O_CREAT|O_EXCL|O_NOFOLLOW, so a symlink (or anything
else) planted at its name is never opened or written through; the rename replaces a link
at the target itself, never the file behind it. Readers see the old file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int,
    tmp: Path | None = None,
    exact_mode: bool = True,
    durable: bool = True,
) -> None:
    """Replace `path` with `data` (OSError naming the path on failure).

    `mode`: the new file's permissions; with `exact_mode` set regardless of the umask
    (`fchmod`), else as `open` gives them under the umask. `tmp`: the temporary file's
    name (default `.NAME.PID.tmp` beside `path`); a stale one (a crash mid-write) is
    removed first, a link there included, never followed. `durable`: fsync before the
    rename, so a power loss leaves the old file or the new one, not an empty one.
    """
    tmp = tmp if tmp is not None else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a stale temporary file; unlinking a symlink leaves its target alone
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
