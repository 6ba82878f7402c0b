"""The run lock: an advisory lock beside the state file, so two runs of one job cannot overlap."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from importer.state.database import StateError, refuse_symlink


class RunLock:
    """An advisory lock beside the state file, so two runs of one job cannot overlap.

    flock is released by the kernel when the process dies, so a kill -9 leaves no stale lock.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            if self.path.is_symlink():
                refuse_symlink(self.path, "lock file")
            raise StateError(f"cannot open lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise StateError(
                f"another run of this job holds {self.path} ({holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        about = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, json.dumps(about).encode())
        self._fd = fd

    def is_held(self) -> bool:
        """Whether a run holds the lock now (checked by taking and dropping it)."""
        try:
            self.acquire()
        except StateError:
            return True
        except OSError:
            return False
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
