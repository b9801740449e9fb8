"""The output folder: the one place mediamux writes, and what ``mediamux://outputs/…`` may serve.

Other programs can write into this folder while mediamux runs, so no path in it is trusted between
two system calls: reads open the name relative to the folder's own descriptor with ``O_NOFOLLOW``
and check what was opened; writes go to a fresh ``O_EXCL`` temp file in the folder and are renamed
over the final name, which replaces whatever is there (a planted link included) instead of writing
through it. The folder is 0700 and files 0600, because outputs hold prompts and transcripts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import BinaryIO, Final

from mediamux.files.confinement import READ_NOFOLLOW, FileAccessError, _fd_path, _show, refuse_too_wide

logger = logging.getLogger("mediamux.files")

# NAME_MAX on every filesystem we run on; a longer name can only fail deeper down, less clearly.
OUTPUT_NAME_MAX_BYTES: Final = 255
# Hosts accept results of about 1 MiB and base64 adds a third; bigger outputs are read from disk by path,
# or (S3 storage) fetched through the presigned link the error gives.
MAX_INLINE_OUTPUT_BYTES: Final = 768 * 1024
# A temp file this old belongs to a process that is gone: downloads give up after ``max_seconds``
# (600 by default), so an hour leaves room for a slower configuration without touching live work.
STALE_TEMP_AGE_S: Final = 3600.0

_TEMP_PREFIX: Final = ".mediamux-"
_TEMP_SUFFIX: Final = ".part"
_TEMP_NAME: Final = re.compile(r"\.mediamux-[0-9a-f]{16}\.part")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_DIR_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
# os.replace is os.rename with overwrite semantics, and shares its dir_fd support.
_HAS_DIR_FD: Final = {
    os.open,
    os.stat,
    os.rename,
    os.unlink,
} <= os.supports_dir_fd and os.listdir in os.supports_fd


def check_output_name(name: str) -> str:
    """``name`` if it can be a saved output's file name, else FileAccessError saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise FileAccessError("No output name given; use a name from a download result.")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise FileAccessError(
            f"{_show(name)} contains characters that are not valid Unicode, so it cannot name a file; "
            "use a name from a download result."
        ) from None
    if len(encoded) > OUTPUT_NAME_MAX_BYTES:
        raise FileAccessError(
            f"An output name may be at most {OUTPUT_NAME_MAX_BYTES} bytes; this one is {len(encoded)} "
            f"({_show(name, 60)}). Use a name from a download result."
        )
    if "/" in name or "\\" in name or _CONTROL.search(name):
        raise FileAccessError(
            f"{_show(name)} contains a path separator or control character, which output names never do; "
            "use a name from a download result."
        )
    # Leading dots are our in-progress temp files (and dotfiles are never outputs); '.'/'..' are not files.
    if name.startswith("."):
        raise FileAccessError(
            f"{_show(name)} is not the name of a saved output; use a name from a download result."
        )
    return name


def _real_dir(output_dir: Path) -> str:
    try:
        return os.path.realpath(os.path.expanduser(os.fspath(output_dir)))
    except (OSError, ValueError) as exc:
        raise FileAccessError(
            f"The output folder {_show(os.fspath(output_dir))} cannot be used: {exc}"
        ) from None


class _Folder:
    """The output folder, held open where the platform can look names up relative to a descriptor, so a
    name is found in *this* folder even if its path is swapped meanwhile; by path elsewhere (Windows)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # O_NOFOLLOW: the path was just resolved, so a link here now means it was swapped under us.
        self.fd: int | None = os.open(path, _DIR_FLAGS) if _HAS_DIR_FD else None

    def __enter__(self) -> _Folder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        if self.fd is None:
            return os.open(os.path.join(self.path, name), flags, mode)
        return os.open(name, flags, mode, dir_fd=self.fd)

    def lstat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.lstat(os.path.join(self.path, name))
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def replace(self, src: str, dst: str) -> None:
        if self.fd is None:
            os.replace(os.path.join(self.path, src), os.path.join(self.path, dst))
        else:
            os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        # Durability of the rename itself; some filesystems refuse to fsync a folder.
        with contextlib.suppress(OSError):
            if self.fd is not None:
                os.fsync(self.fd)

    def unlink(self, name: str) -> None:
        if self.fd is None:
            os.unlink(os.path.join(self.path, name))
        else:
            os.unlink(name, dir_fd=self.fd)

    def names(self) -> list[str]:
        return os.listdir(self.path if self.fd is None else self.fd)


def _opened_inside(fd: int, directory: str) -> bool:
    """Whether the kernel places an open descriptor directly in ``directory`` (True when it cannot say:
    openat with a plain name and O_NOFOLLOW already pins it there)."""
    where = _fd_path(fd)
    return where is None or os.path.dirname(where) == directory


def open_output(output_dir: Path, name: str) -> BinaryIO:
    """A saved output opened for reading, or FileAccessError: never a link, never anything but a regular file
    directly inside the output folder, however the folder changes while this runs."""
    check_output_name(name)
    directory = _real_dir(output_dir)
    try:
        folder = _Folder(directory)
    except OSError as exc:
        raise FileAccessError(f"The output folder {directory} cannot be opened ({exc.strerror}).") from None
    with folder:
        try:
            fd = folder.open(name, READ_NOFOLLOW)
        except FileNotFoundError:
            raise FileAccessError(f"No saved output named {_show(name)} in {directory}.") from None
        except OSError as exc:
            # ELOOP (and EMLINK on some BSDs) is how O_NOFOLLOW reports a link in the last component.
            link = exc.errno in (errno.ELOOP, errno.EMLINK)
            what = "it is a symbolic link, which is never followed" if link else exc.strerror
            raise FileAccessError(
                f"{_show(name)} in {directory} is not a regular saved output file ({what})."
            ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _opened_inside(fd, directory):
            raise FileAccessError(f"{_show(name)} in {directory} is not a regular saved output file.")
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def output_path(output_dir: Path, name: str) -> Path:
    """Where the saved output ``name`` is, if it is a regular file (not a link) in the output folder; else
    FileAccessError. Only a hint: read it with :func:`open_output`, which re-checks what it opens."""
    check_output_name(name)
    directory = _real_dir(output_dir)
    candidate = os.path.join(directory, name)
    try:
        st = os.lstat(candidate)
    except FileNotFoundError:
        raise FileAccessError(f"No saved output named {_show(name)} in {directory}.") from None
    except OSError as exc:
        raise FileAccessError(f"Cannot look up {_show(name)} in {directory} ({exc.strerror}).") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise FileAccessError(f"{_show(name)} in {directory} is not a regular saved output file.")
    return Path(candidate)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def ensure_output_dir(output_dir: Path) -> Path:
    """The output folder's real path, creating it (and any missing parent) 0700 first."""
    directory = Path(os.path.expanduser(output_dir))
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        # Path.mkdir(parents=True) would create the parents 0777-minus-umask; they may hold the journal.
        with contextlib.suppress(FileExistsError):
            os.mkdir(candidate, 0o700)
    return Path(os.path.realpath(directory))


class TempOutput:
    """A temp file in the output folder, created exclusively (so nothing planted there is reused) and
    private, that becomes an output only by an atomic rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = os.fspath(directory)
        self.name = f"{_TEMP_PREFIX}{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        self._folder: _Folder | None = _Folder(self.directory)
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        try:
            self._fd: int | None = self._folder.open(self.name, flags, 0o600)
        except BaseException:
            self._folder.close()
            raise
        self._hash = hashlib.sha256()

    @property
    def path(self) -> Path:
        return Path(self.directory, self.name)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, final: str, *, keep_same_size: bool = False) -> Path:
        """Rename into place as ``final`` (a plain name) and return its path. ``keep_same_size``: for
        content-addressed names, a regular file already there with the same size holds these bytes."""
        assert self._fd is not None
        assert self._folder is not None
        check_output_name(final)
        size = os.fstat(self._fd).st_size
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        try:
            existing: os.stat_result | None = self._folder.lstat(final)
        except FileNotFoundError:
            existing = None
        if (
            keep_same_size
            and existing is not None
            and stat.S_ISREG(existing.st_mode)
            and existing.st_size == size
        ):
            # Keeping the old file leaves its inode alone for anyone reading it right now.
            self.discard()
        else:
            # rename(2) replaces a link at the final name with our file; it never writes through it.
            self._folder.replace(self.name, final)
            self._folder.close()
            self._folder = None
        return Path(self.directory, final)

    def reopen_for_reading(self) -> int:
        """Stop writing and return a read-only descriptor of the finished temp file (an object store
        uploads it from there); the temp file stays until :meth:`discard`."""
        assert self._fd is not None
        assert self._folder is not None
        os.close(self._fd)
        self._fd = None
        fd = self._folder.open(self.name, READ_NOFOLLOW)
        os.set_blocking(fd, True)
        return fd

    def discard(self) -> None:
        """Close and remove the temp file; synchronous so it also runs during cancellation."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._folder is not None:
            with contextlib.suppress(FileNotFoundError):
                self._folder.unlink(self.name)
            self._folder.close()
            self._folder = None


def write_output(output_dir: Path, name: str, data: bytes) -> Path:
    """Save ``data`` as ``name`` in the output folder, replacing any file or link of that name atomically;
    a reader never sees a half-written file and nothing outside the folder is ever written."""
    check_output_name(name)
    temp = TempOutput(ensure_output_dir(output_dir))
    try:
        temp.write(data)
        return temp.commit(name)
    except BaseException:
        temp.discard()
        raise


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------


def remove_stale_temp_files(
    output_dir: Path, *, older_than_s: float = STALE_TEMP_AGE_S, now: float | None = None
) -> list[str]:
    """Remove our own temp files (``.mediamux-<hex>.part``) last modified more than ``older_than_s`` ago.

    A download killed outright (SIGKILL, power loss) cannot clean up after itself; anything younger
    than the bound may belong to a download still running in another process, so it stays.
    """
    directory = os.path.realpath(os.path.expanduser(os.fspath(output_dir)))
    cutoff = (time.time() if now is None else now) - older_than_s
    removed: list[str] = []
    try:
        folder = _Folder(directory)
    except FileNotFoundError:
        return removed
    with folder:
        for name in folder.names():
            if not _TEMP_NAME.fullmatch(name):
                continue
            try:
                st = folder.lstat(name)
                if st.st_mtime > cutoff or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                folder.unlink(name)
            except FileNotFoundError:  # removed by another process's clean-up meanwhile
                continue
            removed.append(name)
    if removed:
        logger.info("removed %d unfinished download(s) left in %s", len(removed), directory)
    return removed


def prepare_output_dir(
    output_dir: Path, *, stale_after_s: float = STALE_TEMP_AGE_S, now: float | None = None
) -> Path:
    """Open the output folder at start-up: refuse one that is too wide (``/``, ``/tmp``, ``/home``, …),
    create it 0700 or take group/other access away from an existing one that is ours, and remove temp
    files that interrupted downloads left behind. Returns its real path; FileAccessError says what to change.
    """
    real = Path(_real_dir(output_dir))
    refuse_too_wide(real, setting="MEDIAMUX_OUTPUT_DIR (the output folder)")
    directory = ensure_output_dir(real)
    st = os.stat(directory)
    if st.st_mode & 0o077 and hasattr(os, "geteuid") and st.st_uid == os.geteuid():
        # Folders made by earlier versions were 0755: prompts and transcripts readable by every account.
        os.chmod(directory, stat.S_IMODE(st.st_mode) & 0o700)
        logger.info(
            "output folder %s was readable by other accounts (mode %o); it is now private (mode %o)",
            directory,
            stat.S_IMODE(st.st_mode),
            stat.S_IMODE(st.st_mode) & 0o700,
        )
    remove_stale_temp_files(directory, older_than_s=stale_after_s, now=now)
    return directory
