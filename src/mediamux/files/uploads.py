"""Uploads: what may leave the machine, and a multipart body streamed from disk.

A multi-gigabyte video never sits in memory: the body is read in chunks from a file opened with
:func:`open_confined` only when the transport starts sending, and it can be sent only once.
"""

from __future__ import annotations

import collections.abc
import mimetypes
import os
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio
import anyio.to_thread

from mediamux.files.confinement import (
    FileAccessError,
    PathNotAllowed,
    _show,
    _within,
    open_confined,
    resolve_allowed_path,
)

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
        yield preamble
        file_part = _confined_chunks(
            real, allowed, file_size, chunk_size, sent=len(preamble), total=total, on_progress=on_progress
        )
        # aclosing: abandoning this body must close the file now, not when the inner generator is collected.
        async with aclosing(file_part) as chunks:
            async for chunk in chunks:
                yield chunk
        yield epilogue
        if on_progress is not None:
            await on_progress(total, total)

    return MultipartUpload(
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(total)},
        content_length=total,
        stream=_SingleUseBody(body),
    )


async def _confined_chunks(
    real: Path,
    allowed: Sequence[Path],
    file_size: int,
    chunk_size: int,
    *,
    sent: int = 0,
    total: int,
    on_progress: Callable[[int, int], Awaitable[None]] | None,
) -> AsyncGenerator[bytes, None]:
    """The file's bytes, opened confined when the first chunk is asked for, exactly ``file_size`` of them;
    ``on_progress(bytes of the whole body sent, total)`` after each, counting from ``sent``."""
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


def raw_file_upload(
    path: Path,
    allowed: Sequence[Path],
    *,
    content_type: str | None = None,
    chunk_size: int = 1 << 20,
    on_progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> MultipartUpload:
    """The file itself as a request body (a PUT to a presigned storage URL), streamed from disk like
    :func:`multipart_file_upload` and, like it, single-use; ``headers`` carry its type and length."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    real = resolve_allowed_path(os.fspath(path), allowed)
    file_size = real.stat().st_size
    part_type = content_type or mimetypes.guess_type(real.name)[0] or "application/octet-stream"
    if any(ch in part_type for ch in "\r\n\x00"):
        raise ValueError("content_type must not contain control characters")

    async def body() -> AsyncGenerator[bytes, None]:
        file_part = _confined_chunks(
            real, allowed, file_size, chunk_size, total=file_size, on_progress=on_progress
        )
        async with aclosing(file_part) as chunks:
            async for chunk in chunks:
                yield chunk

    return MultipartUpload(
        headers={"Content-Type": part_type, "Content-Length": str(file_size)},
        content_length=file_size,
        stream=_SingleUseBody(body),
    )
