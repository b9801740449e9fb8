"""Path confinement: which local files a tool may read, and which saved output a resource may serve.

Reads are confined to an allow-list of folders (``MEDIAMUX_ALLOWED_DIRS`` plus the output folder),
checked on the real path *and* again on the opened file descriptor, because a path that was fine
when validated can be swapped for a symlink before it is opened.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from mediamux.errors import MediamuxError

# Named for the package, not this module: "mediamux.files" is what log filters select.
logger = logging.getLogger("mediamux.files")

ALLOWED_DIRS_ENV = "MEDIAMUX_ALLOWED_DIRS"


class FileAccessError(MediamuxError):
    """Base: a message that tells the user what to do, always naming the allowed folders and the
    MEDIAMUX_ALLOWED_DIRS variable where confinement is the cause."""

    error_class = "invalid_input"


class PathNotAllowed(FileAccessError):
    """The path is outside the allowed folders, is not a regular file, or does not exist."""


# ---------------------------------------------------------------------------------------------
# Allowed folders
# ---------------------------------------------------------------------------------------------

# Where the home folders of every account live on common systems (Linux, macOS, Solaris, Silverblue, BSD).
_HOMES_PARENTS: Final = ("/home", "/Users", "/export/home", "/var/home", "/usr/home")
# Shared scratch space: every program and account writes here, so allowing it hands the model their files.
# (Named to be refused, never written to.)
_TEMP_ROOTS: Final = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108


class AllowedDirs(list[Path]):
    """The allowed folders, plus why a folder the user might expect is missing from them.

    A list, so it is used like one; ``notes`` ride along into every "not allowed" message, so a user
    who started mediamux in ``/tmp`` learns why nothing there can be read and what to set instead.
    """

    def __init__(self, dirs: Sequence[Path] = (), *, notes: Sequence[str] = ()) -> None:
        super().__init__(dirs)
        self.notes = tuple(notes)


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _account_homes() -> list[str]:
    """Every account's home folder from the password database (none where there is no such database)."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return []
    try:
        entries = pwd.getpwall()
    except OSError:  # pragma: no cover - a broken name service must not stop start-up
        return []
    return [entry.pw_dir for entry in entries if entry.pw_dir and os.path.isabs(entry.pw_dir)]


def too_wide(folder: Path, *, homes: Sequence[str] | None = None) -> str | None:
    """Why ``folder`` (a real path) is too wide to hand to a model, or None if it is not.

    Too wide: the root of the file system, a system temporary folder, or a folder holding the home
    folders of several accounts (``/home``, ``/Users``, or any folder with two or more account homes
    below it). A folder inside any of these is fine: that is where projects and pytest live.
    """
    real = os.fspath(folder)
    if real == os.path.realpath(Path(real).anchor or os.sep):
        return "it is the root of the file system"
    temp_roots = {os.path.realpath(t) for t in (*_TEMP_ROOTS, tempfile.gettempdir())}
    if real in temp_roots:
        return "it is a system temporary folder, which every program and account writes to"
    if real in {os.path.realpath(h) for h in _HOMES_PARENTS}:
        return "it holds every account's home folder"
    below = sorted(
        {
            home
            for home in (os.path.realpath(h) for h in (_account_homes() if homes is None else homes))
            if home != real and _within(home, real)
        }
    )
    if len(below) >= 2:
        shown = ", ".join(below[:3]) + (", …" if len(below) > 3 else "")
        return f"it holds the home folders of {len(below)} accounts ({shown})"
    return None


def _narrower(folder: Path, reason: str) -> str:
    if "temporary" in reason:
        return f"Make a folder of your own inside it (e.g. {Path(folder, 'my-media')}) and name that instead"
    return "Name the folder that holds your media instead (e.g. ~/Videos, or a project folder)"


def refuse_too_wide(folder: Path, *, setting: str, homes: Sequence[str] | None = None) -> None:
    """FileAccessError naming ``setting`` if ``folder`` is too wide (see :func:`too_wide`)."""
    reason = too_wide(folder, homes=homes)
    if reason is not None:
        raise FileAccessError(
            f"{setting} {folder} is refused: {reason}, so every file in it would be open to the model. "
            f"{_narrower(folder, reason)}, and restart mediamux."
        )


def default_allowed_dirs(
    *, output_dir: Path, cwd: Path | None = None, home: Path | None = None, homes: Sequence[str] | None = None
) -> AllowedDirs:
    """Unset MEDIAMUX_ALLOWED_DIRS: the output folder and the working directory — unless the working directory
    is the home folder itself (common under desktop hosts) or too wide (see :func:`too_wide`), in which case only
    the output folder, with a note saying why."""
    out = _real(output_dir)
    refuse_too_wide(out, setting="MEDIAMUX_OUTPUT_DIR (the output folder)", homes=homes)
    if cwd is None:
        try:
            cwd = Path.cwd()
        except FileNotFoundError:
            # The working directory was deleted under us; there is nothing sensible to allow there.
            return AllowedDirs([out])
    real_cwd = _real(cwd)
    if home is None:
        try:
            home = Path.home()
        except (RuntimeError, KeyError):  # no HOME and no passwd entry (minimal containers)
            home = None
    real_home = _real(home) if home is not None else None
    # Desktop hosts start servers in `/` or `~`, scripts in /tmp: allowing those would expose the whole
    # disk, every dotfile (SSH keys, cloud credentials) or every other program's scratch files.
    reason = too_wide(real_cwd, homes=homes)
    if reason is None and real_cwd == real_home:
        reason = "it is your home folder, which holds SSH keys and other credentials"
    if reason is not None:
        note = (
            f"The working directory {real_cwd} is not allowed automatically: {reason}. "
            f"{_narrower(real_cwd, reason)} in {ALLOWED_DIRS_ENV}"
        )
        logger.warning("%s; only the output folder %s may be read", note, out)
        return AllowedDirs([out], notes=[note])
    return AllowedDirs([real_cwd] if real_cwd == out else [real_cwd, out])


def parse_allowed_dirs(
    value: str | None,
    *,
    output_dir: Path,
    cwd: Path | None = None,
    home: Path | None = None,
    homes: Sequence[str] | None = None,
) -> AllowedDirs:
    """os.pathsep-separated list → resolved absolute dirs (expanduser), in order, output_dir appended (always allowed),
    duplicates dropped; None/empty → default_allowed_dirs. A folder that is too wide (see :func:`too_wide`) is
    refused with a FileAccessError saying which and what to name instead: set explicitly, it is a mistake to
    stop on, not to quietly work around."""
    entries = [part.strip() for part in (value or "").split(os.pathsep) if part.strip()]
    if not entries:
        return default_allowed_dirs(output_dir=output_dir, cwd=cwd, home=home, homes=homes)
    base = cwd if cwd is not None else Path.cwd()
    dirs = AllowedDirs()
    for entry in entries:
        expanded = Path(os.path.expanduser(entry))
        if not expanded.is_absolute():
            expanded = base / expanded
        real = _real(expanded)
        refuse_too_wide(real, setting=f"{ALLOWED_DIRS_ENV} entry", homes=homes)
        if not real.is_dir():
            # Kept, not dropped: the folder may be created later (a mounted drive), and dropping it
            # would silently shift which folder relative paths resolve against.
            logger.warning("%s entry %s is not an existing folder", ALLOWED_DIRS_ENV, real)
        if real not in dirs:
            dirs.append(real)
    out = _real(output_dir)
    refuse_too_wide(out, setting="MEDIAMUX_OUTPUT_DIR (the output folder)", homes=homes)
    if out not in dirs:
        dirs.append(out)
    return dirs


# ---------------------------------------------------------------------------------------------
# Path confinement
# ---------------------------------------------------------------------------------------------


def _show(raw: str, limit: int = 200) -> str:
    # repr() makes NUL, newlines and terminal escapes visible instead of letting them act.
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# NAME_MAX and PATH_MAX on every filesystem we run on; longer fails deeper down, less clearly.
NAME_MAX_BYTES: Final = 255
PATH_MAX_BYTES: Final = 4095


def _check_spelling(raw: str) -> None:
    """PathNotAllowed for a path no file can have: invalid Unicode, or a name or path too long."""
    try:
        encoded = os.fsencode(raw)
    except UnicodeEncodeError:
        raise PathNotAllowed(
            f"The path {_show(raw)} contains characters that are not valid Unicode, so no file has it."
        ) from None
    longest = max(encoded.split(os.fsencode(os.sep)), key=len)
    if len(longest) > NAME_MAX_BYTES:
        raise PathNotAllowed(
            f"The path {_show(raw, 60)} has a name of {len(longest)} bytes; file and folder names may be at "
            f"most {NAME_MAX_BYTES}."
        )
    if len(encoded) > PATH_MAX_BYTES:
        raise PathNotAllowed(
            f"The path {_show(raw, 60)} is {len(encoded)} bytes long; paths may be at most {PATH_MAX_BYTES}."
        )


def _allowed_hint(allowed: Sequence[Path]) -> str:
    folders = ", ".join(str(d) for d in allowed) or "(none configured)"
    notes = "".join(f" {note}." for note in getattr(allowed, "notes", ()))
    return (
        f"mediamux may only read files in: {folders}. Move the file into one of these folders, "
        f"or add its folder to {ALLOWED_DIRS_ENV} (folders separated by '{os.pathsep}') and restart mediamux."
        + notes
    )


def _within(path: str, root: str) -> bool:
    # commonpath, not startswith: '/data/allowed-evil' must not pass for '/data/allowed'.
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows, or a mix of absolute and relative
        return False


def _inside_any(path: str, roots: Sequence[str]) -> bool:
    return any(_within(path, root) for root in roots)


def _real_roots(allowed: Sequence[Path]) -> list[str]:
    return [os.path.realpath(os.path.expanduser(os.fspath(d))) for d in allowed]


def resolve_allowed_path(raw: str, allowed: Sequence[Path], *, must_exist: bool = True) -> Path:
    """User-supplied path → real absolute path of a regular file inside one of the allowed dirs.
    Relative paths resolve against allowed[0]; `~` is expanded. Rejects (PathNotAllowed, nothing read): NUL bytes,
    empty string, traversal that leaves the allowed dirs, prefix confusion (/data/allowed-evil vs /data/allowed),
    a symlink (file or any parent dir, including chains) whose target is outside, a directory, a missing file
    (with a 'file not found' message that still names the allowed dirs). Uses os.path.realpath + commonpath, not startswith."""
    if not isinstance(raw, str) or not raw.strip():
        raise PathNotAllowed(f"No file path given. {_allowed_hint(allowed)}")
    if "\x00" in raw:
        raise PathNotAllowed(f"The path {_show(raw)} contains a NUL byte, which no real file name has.")
    if not allowed:
        raise PathNotAllowed(f"Reading local files is disabled. {_allowed_hint(allowed)}")
    _check_spelling(raw)

    expanded = os.path.expanduser(raw)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.fspath(allowed[0]), expanded)
    # realpath on the unnormalised path, so 'link/..' means what the kernel means by it; the
    # real location, not the spelling, decides (allowed folders are stored resolved, and /tmp
    # vs /private/tmp must not matter).
    try:
        real = os.path.realpath(expanded)
    except (OSError, ValueError) as exc:
        # realpath reads links it has just seen: one swapped for a file in between gives EINVAL.
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PathNotAllowed(
            f"{_show(raw)} could not be resolved ({why}); it may have changed while it was being checked. "
            f"Try again once it stays put. {_allowed_hint(allowed)}"
        ) from None
    real_roots = _real_roots(allowed)
    if not _inside_any(real, real_roots):
        spelled_inside = _inside_any(os.path.normpath(expanded), real_roots) or _inside_any(
            os.path.normpath(expanded), [os.path.normpath(os.fspath(d)) for d in allowed]
        )
        how = (
            "leads outside the allowed folders through a symbolic link"
            if spelled_inside
            else "is outside the allowed folders"
        )
        raise PathNotAllowed(f"{_show(raw)} {how}. {_allowed_hint(allowed)}")

    try:
        st = os.stat(real)
    except FileNotFoundError:
        if not must_exist:
            return Path(real)
        raise PathNotAllowed(
            f"File not found: {_show(raw)} (relative paths are looked up in {allowed[0]}). {_allowed_hint(allowed)}"
        ) from None
    except OSError as exc:
        raise PathNotAllowed(
            f"Cannot access {_show(raw)}: {exc.strerror}. {_allowed_hint(allowed)}"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise PathNotAllowed(f"{_show(raw)} is a folder; give the path of a file inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise PathNotAllowed(
            f"{_show(raw)} is not a regular file (device, pipe or socket); give a media file."
        )
    return Path(real)


# For reads of a path that may have been swapped: a link in the last component fails (ELOOP). O_NONBLOCK
# only for the open itself, since a FIFO swapped in would otherwise block the thread for ever; clear it
# (os.set_blocking) once the descriptor is known to be a regular file.
READ_NOFOLLOW: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)


def _fd_path(fd: int) -> str | None:
    """Where the kernel says an open descriptor lives, or None when the platform cannot tell."""
    if os.path.isdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        # Anything else ('anon_inode:…', 'pipe:[…]') is not a file path we could have allowed.
        return target if target.startswith("/") else None
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        import fcntl

        raw = fcntl.fcntl(fd, fcntl.F_GETPATH, b"\0" * 1024)
        return raw.split(b"\0", 1)[0].decode(errors="surrogateescape")
    return None


def open_confined(path: Path, allowed: Sequence[Path]) -> BinaryIO:
    """Open for reading, defeating TOCTOU swaps: open with O_NOFOLLOW (and O_NONBLOCK off), then check the
    opened fd (os.fstat + re-resolving /proc/self/fd/N or comparing st_dev/st_ino with a fresh os.stat of the
    realpath) is still a regular file inside the allowed dirs; otherwise close and raise PathNotAllowed."""
    shown = _show(os.fspath(path))
    try:
        fd = os.open(os.fspath(path), READ_NOFOLLOW)
    except FileNotFoundError:
        raise PathNotAllowed(f"File not found: {shown}. {_allowed_hint(allowed)}") from None
    except OSError as exc:
        # ELOOP is how O_NOFOLLOW reports a symlink in the last component.
        raise PathNotAllowed(
            f"Refused to open {shown}: it changed into a symbolic link or is unreadable ({exc.strerror}). "
            f"{_allowed_hint(allowed)}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathNotAllowed(f"{shown} is not a regular file; give a media file.")
        opened = _fd_path(fd)
        if opened is None:
            # No way to ask the kernel: fall back to proving the realpath names the same inode.
            opened = os.path.realpath(path)
            fresh = os.stat(opened)
            if (fresh.st_dev, fresh.st_ino) != (st.st_dev, st.st_ino):
                raise PathNotAllowed(f"{shown} changed while it was being opened. {_allowed_hint(allowed)}")
        if not _inside_any(opened, _real_roots(allowed)):
            raise PathNotAllowed(
                f"{shown} was swapped for a link to a location outside the allowed folders after it was "
                f"checked; refusing to read it. {_allowed_hint(allowed)}"
            )
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
