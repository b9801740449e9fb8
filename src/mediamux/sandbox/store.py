"""What an emulator keeps on disk so that a restarted sandbox finds it again, and its clock across restarts.

A real service does not forget its jobs, uploads, library or wallet when one of its servers restarts, so an
emulator given a state folder does not either: each record it would keep is a small JSON file, written whole
to a temporary file and renamed over the old one (a reader, or a process killed mid-write, only ever sees a
complete old or new record), and binary blobs (uploads, videos, covers) are plain files beside them. Folders
are 0700 and files 0600: they hold API keys and the user's media. An emulator given no folder keeps
everything in memory, in a scratch folder that goes when it is closed, as the tests expect.

Time across restarts
--------------------
Inside one process an emulator measures durations with its injected ``now()`` (monotonic, faked in tests).
A monotonic reading means nothing to another process, so every instant written to disk is wall-clock time:
``wall = now() + offset``, where ``offset = wall_clock() - now()`` is taken once when the emulator starts.
Reading a record back maps it into the new process's frame with the new offset. So a job keeps running
while the sandbox is down, exactly as it would on the real service, and one that was due meanwhile is
finished at the first look after the restart. If the wall clock is stepped while the sandbox is down, jobs
appear to have run for that much more (or less) time; within one process only ``now()`` counts. Tests pass
their fake clock as both ``now`` and ``wall_clock``, so advancing it between two emulators is downtime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mediamux.sandbox.common import scratch_dir

logger = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_TEMP_SUFFIX = ".tmp"


class Timeline:
    """Converts between an emulator's ``now()`` and the wall-clock seconds its state files hold."""

    def __init__(self, now: Callable[[], float], wall_clock: Callable[[], float] = time.time) -> None:
        self.now = now
        self.offset = wall_clock() - now()

    def to_wall(self, t: float) -> float:
        return t + self.offset

    def from_wall(self, wall: float) -> float:
        return wall - self.offset

    def wall_now(self) -> float:
        return self.now() + self.offset


def make_private_dirs(path: Path) -> None:
    """Create `path` and any missing parents as 0700 (``mkdir(parents=True)`` would use the umask)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another request or process
            os.mkdir(folder, FOLDER_MODE)


class StateStore:
    """JSON records and blob files under one folder, or (``folder`` None) a scratch folder and no records."""

    def __init__(self, folder: Path | None, prefix: str) -> None:
        self.folder = folder
        self._prefix = prefix
        self._files: Path | None = None
        self._cleanup: Callable[[], Any] | None = None
        if folder is None:
            return
        make_private_dirs(folder)
        os.chmod(folder, FOLDER_MODE)
        self._sweep_temporaries(folder)

    @property
    def files(self) -> Path:
        """Where blobs go: beside the records, or a scratch folder; made on first use."""
        if self._files is None:
            if self.folder is not None:
                self._files = self.folder / "files"
                make_private_dirs(self._files)
            else:
                # Goes with the store, which lives exactly as long as the emulator that made it.
                self._files, self._cleanup = scratch_dir(self, self._prefix)
        return self._files

    @property
    def persistent(self) -> bool:
        return self.folder is not None

    def close(self) -> None:
        """Remove a scratch folder now; a state folder stays for the next start."""
        if self._cleanup is not None:
            self._cleanup()

    # -- records -----------------------------------------------------------------------------------------

    def save(self, name: str, data: Any) -> None:
        """Replace record `name` (a relative path ending in .json) atomically; nothing in memory mode."""
        if self.folder is None:
            return
        target = self.folder / name
        make_private_dirs(target.parent)
        payload = json.dumps(data, separators=(",", ":")).encode()
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        # No fsync: the sandbox must survive its process being stopped or killed, which the page cache
        # does; surviving a power cut is not worth a disk flush on every poll of the event loop it shares.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def load(self, name: str) -> Any | None:
        if self.folder is None:
            return None
        return _read_json(self.folder / name)

    def load_all(self, folder: str) -> Iterator[Any]:
        """Every record directly in `folder`, in name order; unreadable ones are logged and skipped."""
        if self.folder is None:
            return
        base = self.folder / folder
        if not base.is_dir():
            return
        for path in sorted(base.glob("*.json")):
            data = _read_json(path)
            if data is not None:
                yield data

    def delete(self, name: str) -> None:
        if self.folder is not None:
            (self.folder / name).unlink(missing_ok=True)

    # -- blobs -------------------------------------------------------------------------------------------

    def seal(self, path: Path) -> None:
        """Make a blob written by ordinary means private (its folder already is; this is for the file)."""
        if self.folder is not None:
            os.chmod(path, FILE_MODE)

    def mkdir(self, path: Path) -> None:
        make_private_dirs(path)

    @staticmethod
    def _sweep_temporaries(folder: Path) -> None:
        # Left by a process killed between writing a record and renaming it; the old record is intact.
        for temp in folder.rglob(f".*{_TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # A record edited by hand or damaged on disk: the emulator starts without it rather than not at all.
        logger.warning("sandbox state %s is unreadable and was skipped: %s", path, exc)
        return None


__all__ = ["FILE_MODE", "FOLDER_MODE", "StateStore", "Timeline", "make_private_dirs"]
