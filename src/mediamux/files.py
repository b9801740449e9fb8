"""Local file access and saved outputs: the two places where a tool touches the disk.

Reads are confined to an allow-list of folders (``MEDIAMUX_ALLOWED_DIRS`` plus the output folder),
checked on the real path *and* again on the opened file descriptor, because a path that was fine
when validated can be swapped for a symlink before it is opened. Uploads stream from disk so a
multi-gigabyte video never sits in memory. Downloads of provider outputs refuse anything that could
reach an internal network (SSRF), follow redirects by hand so each hop is re-checked and no
credential travels along, and write atomically under a content-addressed name, so a failed or
repeated download never leaves a partial or duplicate file behind.

This module knows nothing of MCP; tools adapt its exceptions into tool errors, which is why every
message says what went wrong *and* what the user can do about it.
"""

from __future__ import annotations

import collections.abc
import contextlib
import hashlib
import ipaddress
import logging
import mimetypes
import os
import re
import secrets
import socket
import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO, Final
from urllib.parse import unquote

import anyio
import anyio.to_thread
import httpx2
from pydantic import BaseModel

from mediamux import __version__
from mediamux.errors import MediamuxError

__all__ = [
    "ALLOWED_DIRS_ENV",
    "DownloadError",
    "FileAccessError",
    "MultipartUpload",
    "PathNotAllowed",
    "Resolver",
    "SavedOutput",
    "default_allowed_dirs",
    "download_output",
    "multipart_file_upload",
    "open_confined",
    "output_path",
    "parse_allowed_dirs",
    "resolve_allowed_path",
    "resolve_host",
]

logger = logging.getLogger(__name__)

ALLOWED_DIRS_ENV = "MEDIAMUX_ALLOWED_DIRS"

OUTPUT_URI_PREFIX: Final = "mediamux://outputs/"


class FileAccessError(MediamuxError):
    """Base: a message that tells the user what to do, always naming the allowed folders and the
    MEDIAMUX_ALLOWED_DIRS variable where confinement is the cause."""

    error_class = "invalid_input"


class PathNotAllowed(FileAccessError):
    """The path is outside the allowed folders, is not a regular file, or does not exist."""


class DownloadError(MediamuxError):
    """Refused or failed download: message names the URL's host (never query strings — they may hold
    tokens) and the reason."""

    # Every URL downloaded is one a provider handed back as its output, so a refusal or failure is the
    # provider's output being unusable; "provider_error" is also a class clients already know.
    error_class = "provider_error"

    def __init__(self, host: str, reason: str, *, refused: bool = False) -> None:
        self.host = host
        self.reason = reason
        self.refused = refused
        verb = "refused" if refused else "failed"
        super().__init__(f"download from {host or 'an unnamed host'} {verb}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the exception picklable (worker processes, some test runners) despite the keyword-only field.
        return (_rebuild_download_error, (self.host, self.reason, self.refused))


def _rebuild_download_error(host: str, reason: str, refused: bool) -> DownloadError:
    return DownloadError(host, reason, refused=refused)


# ---------------------------------------------------------------------------------------------
# Allowed folders
# ---------------------------------------------------------------------------------------------


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def default_allowed_dirs(
    *, output_dir: Path, cwd: Path | None = None, home: Path | None = None
) -> list[Path]:
    """Unset MEDIAMUX_ALLOWED_DIRS: the output folder and the working directory — unless the working directory
    is `/` or the home folder itself (common under desktop hosts), in which case only the output folder."""
    out = _real(output_dir)
    if cwd is None:
        try:
            cwd = Path.cwd()
        except FileNotFoundError:
            # The working directory was deleted under us; there is nothing sensible to allow there.
            return [out]
    real_cwd = _real(cwd)
    if home is None:
        try:
            home = Path.home()
        except (RuntimeError, KeyError):  # no HOME and no passwd entry (minimal containers)
            home = None
    real_home = _real(home) if home is not None else None
    # Desktop hosts start servers in `/` or `~`; allowing those would expose the whole disk or
    # every dotfile (SSH keys, cloud credentials) to whatever the model decides to upload.
    if real_cwd == Path(real_cwd.anchor) or real_cwd == real_home:
        return [out]
    return [real_cwd] if real_cwd == out else [real_cwd, out]


def parse_allowed_dirs(
    value: str | None, *, output_dir: Path, cwd: Path | None = None, home: Path | None = None
) -> list[Path]:
    """os.pathsep-separated list → resolved absolute dirs (expanduser), in order, output_dir appended (always allowed),
    duplicates dropped; None/empty → default_allowed_dirs."""
    entries = [part.strip() for part in (value or "").split(os.pathsep) if part.strip()]
    if not entries:
        return default_allowed_dirs(output_dir=output_dir, cwd=cwd, home=home)
    base = cwd if cwd is not None else Path.cwd()
    dirs: list[Path] = []
    for entry in entries:
        expanded = Path(os.path.expanduser(entry))
        if not expanded.is_absolute():
            expanded = base / expanded
        real = _real(expanded)
        if not real.is_dir():
            # Kept, not dropped: the folder may be created later (a mounted drive), and dropping it
            # would silently shift which folder relative paths resolve against.
            logger.warning("%s entry %s is not an existing folder", ALLOWED_DIRS_ENV, real)
        if real not in dirs:
            dirs.append(real)
    out = _real(output_dir)
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


def _allowed_hint(allowed: Sequence[Path]) -> str:
    folders = ", ".join(str(d) for d in allowed) or "(none configured)"
    return (
        f"mediamux may only read files in: {folders}. Move the file into one of these folders, "
        f"or add its folder to {ALLOWED_DIRS_ENV} (folders separated by '{os.pathsep}') and restart mediamux."
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

    expanded = os.path.expanduser(raw)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.fspath(allowed[0]), expanded)
    # realpath on the unnormalised path, so 'link/..' means what the kernel means by it; the
    # real location, not the spelling, decides (allowed folders are stored resolved, and /tmp
    # vs /private/tmp must not matter).
    real = os.path.realpath(expanded)
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


MEDIA_KINDS: tuple[str, ...] = ("image", "video", "audio")


def check_uploadable(
    path: Path,
    *,
    roots: Sequence[Path],
    kinds: Sequence[str] = MEDIA_KINDS,
    extensions: Sequence[str] = (),
    protected: Sequence[Path] = (),
    exempt: Sequence[Path] = (),
) -> Path:
    """Refuse to send a confined path to a third party unless it is plainly media.

    Uploads leave the machine and usually become public URLs, so a prompt-injected request for
    ``.env``, ``.git/config`` or a key file must fail even inside the allowed folders: hidden files
    and folders below the folder the user allowed (``roots``) never go, the state folder never goes
    (except ``exempt`` ones, the outputs), and the file's type must be one of ``kinds`` (by its
    name) or have one of ``extensions``.
    """
    real = Path(os.path.realpath(path))
    containing = [
        Path(os.path.realpath(r)) for r in (*exempt, *roots) if _within(str(real), os.path.realpath(r))
    ]
    below = (
        real.relative_to(max(containing, key=lambda r: len(r.parts))).parts if containing else real.parts[1:]
    )
    if any(part.startswith(".") for part in below):
        raise PathNotAllowed(f"{path} is a hidden file or inside a hidden folder; those are never uploaded")
    in_exempt = any(_within(str(real), os.path.realpath(e)) for e in exempt)
    if not in_exempt and any(_within(str(real), os.path.realpath(p)) for p in protected):
        raise PathNotAllowed(
            f"{path} is inside mediamux's state folder; only files in its outputs can be uploaded"
        )
    guessed = mimetypes.guess_type(real.name)[0] or ""
    if guessed.split("/")[0] in kinds or real.suffix.lower() in extensions:
        return real
    allowed = "/".join(kinds) + (f" or {', '.join(extensions)}" if extensions else "")
    raise PathNotAllowed(
        f"{real.name} does not look like {allowed or 'an accepted type'} (by its name); only media files are "
        "uploaded to providers"
    )


def open_confined(path: Path, allowed: Sequence[Path]) -> BinaryIO:
    """Open for reading, defeating TOCTOU swaps: open with O_NOFOLLOW (and O_NONBLOCK off), then check the
    opened fd (os.fstat + re-resolving /proc/self/fd/N or comparing st_dev/st_ino with a fresh os.stat of the
    realpath) is still a regular file inside the allowed dirs; otherwise close and raise PathNotAllowed."""
    shown = _show(os.fspath(path))
    # O_NONBLOCK only for the open itself: a FIFO swapped in after validation would otherwise
    # block this thread forever. It is cleared again once we know the file is regular.
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NOCTTY", 0)
    )
    try:
        fd = os.open(os.fspath(path), flags)
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


# ---------------------------------------------------------------------------------------------
# Streaming multipart uploads
# ---------------------------------------------------------------------------------------------

_UNSAFE_FILENAME_CHARS = re.compile(r'["\\/\x00-\x1f\x7f]')
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]+")


def _safe_filename(name: str) -> str:
    # Take the last component of either separator style first, so 'C:\\x\\..\\a.mp4' → 'a.mp4'.
    base = re.split(r"[\\/]", name)[-1]
    cleaned = _UNSAFE_FILENAME_CHARS.sub("_", base).strip(" .")
    return cleaned or "upload"


@dataclass
class MultipartUpload:
    headers: dict[str, str]  # Content-Type with boundary, Content-Length
    content_length: int
    stream: AsyncIterator[bytes]  # pass as httpx2 `content=`; reads the file in chunks in a worker thread


class _SingleUseBody(collections.abc.AsyncGenerator[bytes, None]):
    """An upload body that refuses to be iterated twice.

    A re-iterated generator would silently continue where it stopped (or send nothing), turning a
    retried upload into a truncated one; an explicit error is what a transport needs to see. It is
    an AsyncGenerator (not just an iterator) so httpx2 calls ``aclose`` on it when a request is
    abandoned, which closes the file at once instead of whenever the garbage collector runs.
    """

    def __init__(self, factory: Callable[[], AsyncGenerator[bytes, None]]) -> None:
        self._factory = factory
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._started = False

    def _inner(self) -> AsyncGenerator[bytes, None]:
        if self._gen is None:
            self._started = True
            self._gen = self._factory()
        return self._gen

    def __aiter__(self) -> _SingleUseBody:
        # "Started" means a chunk was requested, not that __aiter__ ran: `it = s.__aiter__();
        # async for x in it` (how httpx2 iterates) legitimately calls it twice before reading.
        if self._started:
            raise RuntimeError(
                "this upload body was already sent (or started); a multipart upload cannot be re-sent — "
                "build a new one with multipart_file_upload()"
            )
        return self

    async def __anext__(self) -> bytes:
        return await self._inner().__anext__()

    async def asend(self, value: None) -> bytes:
        return await self._inner().asend(value)

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
    ) -> bytes:
        exc = typ if isinstance(typ, BaseException) else typ()
        return await self._inner().athrow(exc)

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()


def multipart_file_upload(
    path: Path,
    allowed: Sequence[Path],
    *,
    field: str = "file",
    filename: str | None = None,
    content_type: str | None = None,
    extra_fields: Mapping[str, str] | None = None,
    chunk_size: int = 1 << 20,
    on_progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> MultipartUpload:
    """Builds a multipart/form-data body streamed from disk (memory does not grow with file size): form fields first,
    then the file part. Content-Length computed up front. on_progress(bytes_sent, total) awaited after each chunk.
    The file is opened with open_confined when the stream starts and closed when it ends or is abandoned (use try/finally
    in the async generator). Filename in the Content-Disposition is sanitized (no quotes/CR/LF/path separators). Content type
    guessed with mimetypes when not given. The stream can only be consumed once: a second iteration raises RuntimeError
    (this matters: the transport must not silently re-send an upload)."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    real = resolve_allowed_path(os.fspath(path), allowed)
    file_size = real.stat().st_size

    fields = dict(extra_fields or {})
    for name in [field, *fields]:
        # Field names come from provider clients, not users; a bad one is a bug worth failing loudly on.
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"invalid multipart field name {name!r}")
    part_name = _safe_filename(filename if filename is not None else real.name)
    part_type = content_type or mimetypes.guess_type(part_name)[0] or "application/octet-stream"
    if any(ch in part_type for ch in "\r\n\x00"):
        raise ValueError("content_type must not contain control characters")

    encoded_fields = [(name, value.encode("utf-8")) for name, value in fields.items()]
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in value for _, value in encoded_fields):  # pragma: no cover - 2^-128
        boundary = secrets.token_hex(16)
    dash = f"--{boundary}".encode()

    head = bytearray()
    for name, value in encoded_fields:
        head += (
            dash
            + b"\r\n"
            + f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    head += dash + b"\r\n"
    head += f'Content-Disposition: form-data; name="{field}"; filename="{part_name}"\r\n'.encode()
    head += f"Content-Type: {part_type}\r\n\r\n".encode()
    preamble = bytes(head)
    epilogue = b"\r\n" + dash + b"--\r\n"
    total = len(preamble) + file_size + len(epilogue)

    async def body() -> AsyncGenerator[bytes, None]:
        sent = 0
        yield preamble
        sent += len(preamble)
        handle = await anyio.to_thread.run_sync(open_confined, real, allowed)
        try:
            if os.fstat(handle.fileno()).st_size != file_size:
                raise FileAccessError(
                    f"{_show(str(real))} changed size after the upload was prepared; start the upload again."
                )
            remaining = file_size
            while remaining:
                chunk = await anyio.to_thread.run_sync(handle.read, min(chunk_size, remaining))
                if not chunk:
                    # The declared Content-Length can no longer be honoured; aborting beats sending
                    # a body the server would store truncated.
                    raise FileAccessError(f"{_show(str(real))} got shorter while it was being uploaded.")
                remaining -= len(chunk)
                yield chunk
                sent += len(chunk)
                if on_progress is not None:
                    await on_progress(sent, total)
        finally:
            handle.close()
        yield epilogue
        sent += len(epilogue)
        if on_progress is not None:
            await on_progress(sent, total)

    return MultipartUpload(
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(total)},
        content_length=total,
        stream=_SingleUseBody(body),
    )


# ---------------------------------------------------------------------------------------------
# Downloads of generated outputs
# ---------------------------------------------------------------------------------------------


class SavedOutput(BaseModel):
    name: str  # file name inside the output dir, e.g. "3f2a9c0d1e2b4a5f.png"
    path: str  # absolute path
    uri: str  # "mediamux://outputs/{name}"
    size_bytes: int
    sha256: str
    mime_type: str | None
    source_url: str  # the URL it came from, with the query string removed


Resolver = Callable[[str], Awaitable[list[str]]]

_RESOLVE_TIMEOUT_S: Final = 10.0
_WRITE_BUFFER: Final = 1 << 20
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

# mimetypes.guess_extension depends on the host's mime.types file (image/jpeg → '.jpe' on some);
# names must be the same on every machine for content addressing to be idempotent.
_EXTENSIONS: Final = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "model/gltf-binary": ".glb",
}
_SAFE_EXT = re.compile(r"\.[a-z0-9]{1,8}")
_SAFE_URL_EXT = re.compile(r"\.[A-Za-z0-9]{1,5}")


async def resolve_host(host: str) -> list[str]:
    """Every address the system resolver gives for ``host`` (the default resolver of download_output)."""
    infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names by itself, including the forms only inet_aton understands.

    'http://2130706433', 'http://0x7f.1' and 'http://0177.0.0.1' all reach 127.0.0.1 through the
    C library, so they must be judged as addresses, not passed to a resolver as names.
    """
    bare = host[:-1] if host.endswith(".") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address must not be fetched from, or None if it is an ordinary public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address inside reach that IPv4 host; judge the inner one.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _forbidden(embedded)
            if inner is not None:
                return inner
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for label, hit in checks:
        if hit:
            return label
    if not ip.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT, documentation ranges
        return "non-public"
    return None


def _origin(url: httpx2.URL) -> tuple[str, str, int]:
    scheme = url.scheme.lower()
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    return scheme, host, url.port or _DEFAULT_PORTS.get(scheme, 0)


def _display(url: httpx2.URL) -> str:
    # netloc never includes userinfo, and we never show path or query: they may carry tokens.
    return url.netloc.decode("ascii", errors="replace")


@dataclass(frozen=True)
class _Hop:
    """A validated request target: where to connect, and what to tell the server and TLS."""

    request_url: httpx2.URL
    host_header: str | None
    sni_hostname: str | None
    display: str


async def _vet(url: httpx2.URL, trusted: set[tuple[str, str, int]], resolve: Resolver) -> _Hop:
    display = _display(url)
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(
            display, f"the {scheme or 'missing'}: scheme is not allowed (only https)", refused=True
        )
    if not url.raw_host:
        raise DownloadError(display, "the URL has no host", refused=True)
    if url.userinfo:
        raise DownloadError(display, "URLs with a user name or password are not allowed", refused=True)
    if _origin(url) in trusted:
        # A configured provider's own origin (e.g. the loopback sandbox): no SSRF filter, and plain
        # http allowed, because the operator chose that origin explicitly.
        return _Hop(url, None, None, display)
    if scheme != "https":
        raise DownloadError(display, "only https downloads are allowed", refused=True)

    host = url.raw_host.decode("ascii")
    literal = _ip_literal(host)
    if literal is not None:
        reason = _forbidden(literal)
        if reason is not None:
            raise DownloadError(display, f"it points at a {reason} address", refused=True)
        # Connect to the canonical form, so no later parser can read '1572395042' differently.
        return _Hop(url.copy_with(host=str(literal)), None, None, display)

    try:
        with anyio.fail_after(_RESOLVE_TIMEOUT_S):
            addresses = await resolve(host)
    except (OSError, TimeoutError) as exc:
        raise DownloadError(display, f"the host name could not be resolved ({type(exc).__name__})") from None
    if not addresses:
        raise DownloadError(display, "the host name did not resolve to any address")
    parsed: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for address in addresses:
        ip = _ip_literal(address.split("%", 1)[0])
        reason = _forbidden(ip) if ip is not None else "unparseable"
        if ip is None or reason is not None:
            # Any bad address refuses the whole host: the connector might pick that one.
            raise DownloadError(display, f"the host name resolves to a {reason} address", refused=True)
        parsed.append(ip)
    # Connect to the address we checked, not to whatever a second lookup returns: otherwise a
    # DNS-rebinding server answers "public" to us and "127.0.0.1" to the connector. The original
    # name still goes in Host and in TLS SNI, so virtual hosting and certificate checks work.
    return _Hop(
        url.copy_with(host=str(parsed[0])),
        url.netloc.decode("ascii"),
        host.rstrip("."),
        display,
    )


def _media_type(header: str | None, url: httpx2.URL) -> str:
    if header:
        return header.split(";", 1)[0].strip().lower()
    guessed = mimetypes.guess_type(unquote(url.path))[0]
    # RFC 9110 §8.3: without a Content-Type the recipient may assume application/octet-stream.
    return (guessed or "application/octet-stream").lower()


def _type_allowed(media_type: str, allowed_types: Sequence[str]) -> bool:
    if media_type in ("text/html", "application/xhtml+xml"):
        return False  # an error or login page dressed up as a result
    return any(media_type.startswith(prefix.lower()) for prefix in allowed_types)


def _extension(media_type: str, url: httpx2.URL, allowed_types: Sequence[str]) -> str:
    suffix = PurePosixPath(unquote(url.path)).suffix
    url_ext = ""
    if _SAFE_URL_EXT.fullmatch(suffix):
        implied = mimetypes.guess_type(f"x{suffix}")[0]
        # A URL suffix must not relabel media as something a viewer would execute or render (.html, .svg).
        if implied is None or _type_allowed(implied.lower(), allowed_types):
            url_ext = suffix.lower()
    if media_type != "application/octet-stream":
        ext = _EXTENSIONS.get(media_type) or (mimetypes.guess_extension(media_type) or "").lower()
        if _SAFE_EXT.fullmatch(ext):
            return ext
    return url_ext or (".bin" if media_type == "application/octet-stream" else "")


class _TempOutput:
    """A temp file in the output folder, created exclusively so nothing planted there is reused."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f".mediamux-{secrets.token_hex(8)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, final: Path, size: int) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        try:
            existing = os.lstat(final)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISREG(existing.st_mode) and existing.st_size == size:
            # Content-addressed: same name and size means we already have these bytes. Keeping the
            # old file leaves its inode alone for anyone reading it right now.
            os.unlink(self.path)
            return
        if existing is not None and stat.S_ISLNK(existing.st_mode):
            # rename(2) would replace the link itself, not its target; removing it first makes that
            # explicit and also covers a dangling link.
            os.unlink(final)
        os.replace(self.path, final)

    def discard(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _prepare_output_dir(output_dir: Path) -> Path:
    directory = Path(os.path.expanduser(output_dir))
    directory.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(directory))


async def download_output(
    client: httpx2.AsyncClient,
    url: str,
    output_dir: Path,
    *,
    trusted_origins: Sequence[str] = (),
    max_bytes: int = 512 * 1024 * 1024,
    allowed_types: Sequence[str] = ("image/", "audio/", "video/", "application/octet-stream", "model/"),
    max_redirects: int = 3,
    resolve: Resolver | None = None,
) -> SavedOutput:
    """Download a provider output into output_dir.

    - Scheme: https only, except a URL whose origin (scheme://host:port) is in ``trusted_origins`` (a
      configured provider's own origin — that is how the loopback http sandbox works). Other schemes
      are refused.
    - SSRF: a URL that is not a trusted origin has its host resolved (``resolve``, default
      :func:`resolve_host`) and is refused if any address is loopback, private, link-local,
      multicast, reserved, unspecified or non-global — numeric spellings (``2130706433``,
      ``0x7f.1``) and IPv4-mapped/embedded IPv6 forms included. The connection then goes to the
      checked address (Host header and TLS SNI keep the name), which defeats DNS rebinding.
    - Redirects are followed here, never by the client, up to ``max_redirects``; every hop is
      re-validated by the same rules.
    - No credential is ever sent: each request is built fresh (no client default headers, no
      cookies) and sent with ``auth=None``. Pass the provider's own client only for URLs on its
      trusted origin (so its base settings, proxies and timeouts apply) and a plain client for
      anything else; note that client event hooks still run, so a client whose hooks inject keys
      must not be passed here at all.
    - The body is streamed and refused when it exceeds ``max_bytes`` (announced or actual) or when
      its Content-Type does not start with one of ``allowed_types`` (text/html never passes; a
      missing Content-Type is inferred from the URL suffix, else application/octet-stream).
    - Written to an O_EXCL temp file in ``output_dir`` while hashing, fsynced, then renamed to
      ``<first 16 hex of sha256><ext>``. The extension comes from the Content-Type or a short
      alphanumeric URL suffix, never from a provider-supplied file name. An existing file of the same
      name and size is kept (idempotent re-download); a symlink at that name is replaced, never
      followed. On any failure, including cancellation, the temp file is removed.
    - ``source_url`` in the result is the URL as given, without query string or fragment.

    Callers should bound the total time (``anyio.fail_after``): the client's timeouts apply per
    read, so a server that drips bytes slowly is only stopped by the size cap or the caller.
    """
    resolver = resolve or resolve_host
    trusted: set[tuple[str, str, int]] = set()
    for origin in trusted_origins:
        parsed_origin = httpx2.URL(origin)
        if parsed_origin.scheme not in ("http", "https") or not parsed_origin.host:
            raise ValueError(f"trusted origin must be an http(s) origin, got {origin!r}")
        trusted.add(_origin(parsed_origin))

    try:
        current = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError):
        raise DownloadError("", "the URL is not valid", refused=True) from None
    source_url = str(current.copy_with(query=None, fragment=None))
    try:
        directory = await anyio.to_thread.run_sync(_prepare_output_dir, output_dir)
    except OSError as exc:
        raise DownloadError(
            _display(current), f"cannot create the output folder {output_dir} ({exc.strerror})"
        ) from exc

    for _ in range(max_redirects + 1):
        hop = await _vet(current, trusted, resolver)
        headers = {
            "Accept": "*/*",
            # Media is already compressed; refusing gzip also removes the decompression-bomb vector.
            "Accept-Encoding": "identity",
            "User-Agent": f"mediamux/{__version__}",
        }
        if hop.host_header is not None:
            headers["Host"] = hop.host_header
        extensions: dict[str, Any] = {"timeout": client.timeout.as_dict()}
        if hop.sni_hostname is not None:
            extensions["sni_hostname"] = hop.sni_hostname
        # A fresh Request rather than client.build_request: that would merge the client's default
        # headers and cookies, and a credential must never ride along to a third-party host.
        request = httpx2.Request("GET", hop.request_url, headers=headers, extensions=extensions)
        try:
            response = await client.send(request, stream=True, follow_redirects=False, auth=None)
        except httpx2.HTTPError as exc:
            raise DownloadError(hop.display, f"network error ({type(exc).__name__})") from exc
        try:
            if response.status_code in _REDIRECT_CODES:
                location = response.headers.get("location")
                if not location:
                    raise DownloadError(
                        hop.display, f"HTTP {response.status_code} redirect without a Location"
                    )
                try:
                    current = current.join(location)
                except httpx2.InvalidURL:
                    raise DownloadError(hop.display, "redirected to an invalid URL", refused=True) from None
                continue
            if response.status_code != 200:
                raise DownloadError(hop.display, f"the server answered HTTP {response.status_code}")
            return await _save(
                response,
                current,
                hop,
                directory,
                source_url=source_url,
                max_bytes=max_bytes,
                allowed_types=allowed_types,
            )
        finally:
            await response.aclose()
    raise DownloadError(_display(current), f"more than {max_redirects} redirects", refused=True)


async def _save(
    response: httpx2.Response,
    url: httpx2.URL,
    hop: _Hop,
    directory: Path,
    *,
    source_url: str,
    max_bytes: int,
    allowed_types: Sequence[str],
) -> SavedOutput:
    media_type = _media_type(response.headers.get("content-type"), url)
    if not _type_allowed(media_type, allowed_types):
        raise DownloadError(
            hop.display,
            f"unexpected content type {media_type!r} (expected one of: {', '.join(allowed_types)})",
            refused=True,
        )
    announced = response.headers.get("content-length")
    if announced is not None and announced.strip().isdigit() and int(announced) > max_bytes:
        raise DownloadError(
            hop.display, f"the file is {int(announced)} bytes, over the {max_bytes}-byte limit", refused=True
        )

    try:
        temp = await anyio.to_thread.run_sync(_TempOutput, directory)
    except OSError as exc:
        raise DownloadError(
            hop.display, f"cannot write to the output folder {directory} ({exc.strerror})"
        ) from exc
    try:
        size = 0
        buffer = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(
                        hop.display, f"the file exceeded the {max_bytes}-byte limit", refused=True
                    )
                buffer += chunk
                if len(buffer) >= _WRITE_BUFFER:
                    await anyio.to_thread.run_sync(temp.write, bytes(buffer))
                    buffer.clear()
        except httpx2.HTTPError as exc:
            raise DownloadError(
                hop.display, f"the connection broke mid-download ({type(exc).__name__})"
            ) from exc
        if buffer:
            await anyio.to_thread.run_sync(temp.write, bytes(buffer))
        digest = temp.hexdigest()
        name = digest[:16] + _extension(media_type, url, allowed_types)
        final = directory / name
        try:
            await anyio.to_thread.run_sync(temp.commit, final, size)
        except OSError as exc:
            raise DownloadError(hop.display, f"could not save the file ({exc.strerror})") from exc
    except BaseException:
        # Synchronous on purpose: during cancellation an awaited cleanup would itself be cancelled.
        temp.discard()
        raise
    return SavedOutput(
        name=name,
        path=str(final),
        uri=OUTPUT_URI_PREFIX + name,
        size_bytes=size,
        sha256=digest,
        mime_type=media_type,
        source_url=source_url,
    )


async def save_output_bytes(data: bytes, output_dir: Path, *, media_type: str, source: str) -> SavedOutput:
    """Save bytes a provider returned inline (base64 audio) exactly as downloads are saved: atomically,
    content-addressed, never over a planted symlink. ``source`` names where they came from."""
    directory = _prepare_output_dir(output_dir)
    ext = _EXTENSIONS.get(media_type) or (mimetypes.guess_extension(media_type) or "").lower()
    ext = ext if _SAFE_EXT.fullmatch(ext) else ".bin"

    def write() -> tuple[str, Path]:
        temp = _TempOutput(directory)
        try:
            temp.write(data)
            digest = temp.hexdigest()
            final = directory / (digest[:16] + ext)
            temp.commit(final, len(data))
        except BaseException:
            temp.discard()
            raise
        return digest, final

    digest, final = await anyio.to_thread.run_sync(write)
    return SavedOutput(
        name=final.name,
        path=str(final),
        uri=OUTPUT_URI_PREFIX + final.name,
        size_bytes=len(data),
        sha256=digest,
        mime_type=media_type,
        source_url=source,
    )


def output_path(output_dir: Path, name: str) -> Path:
    """For the mediamux://outputs/{name} resource: name must be a plain file name (no separators, no '..', no NUL), file must
    exist inside output_dir and not be a symlink; else FileAccessError."""
    if (
        not name
        or "\x00" in name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        # Leading dots are our in-progress temp files (and dotfiles are never outputs).
        or name.startswith(".")
    ):
        raise FileAccessError(
            f"{_show(name)} is not the name of a saved output; use a name from a download result."
        )
    directory = os.path.realpath(os.path.expanduser(os.fspath(output_dir)))
    candidate = os.path.join(directory, name)
    try:
        st = os.lstat(candidate)
    except FileNotFoundError:
        raise FileAccessError(f"No saved output named {_show(name)} in {directory}.") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise FileAccessError(f"{_show(name)} in {directory} is not a regular saved output file.")
    return Path(candidate)
