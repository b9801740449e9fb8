"""Where saved outputs end up: the local output folder (the default) or S3-compatible storage.

Every output is first written to the local output folder exactly as before — streamed, size-limited,
into a private ``O_EXCL`` temp file, hashed as it arrives — and only then handed to the store, which
decides where the finished file goes:

* :class:`LocalOutputStore` fsyncs it and renames it into the folder under its content-addressed name
  (an existing file of that name and size is kept), as downloads always did;
* ``S3OutputStore`` (:mod:`mediamux.files.s3`, chosen by ``MEDIAMUX_OUTPUT_URL``) uploads it once under
  the same name with a conditional write, so two replicas finishing the same output store one object,
  and removes the temp file. Any replica then serves ``mediamux://outputs/<name>`` from the bucket.

The store is also what ``mediamux://outputs/…`` reads from, so a name saved by one replica reads the
same on every other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import anyio.to_thread

from mediamux.errors import MediamuxError
from mediamux.files.confinement import FileAccessError
from mediamux.files.outputs import TempOutput, check_output_name, open_output, write_output

if TYPE_CHECKING:
    from mediamux.config import Settings


class OutputStoreError(MediamuxError):
    """The output store could not be reached or refused a request; the message names the store (never
    a credential) and what to change."""

    error_class = "provider_error"


class OutputNotFound(FileAccessError):
    """No saved output of that name in the store."""


class OutputTooLarge(MediamuxError):
    """A saved output too large to send inline; the message says how to get it instead."""

    error_class = "invalid_input"

    @classmethod
    def of(cls, name: str, size: int, limit: int, where: str) -> OutputTooLarge:
        return cls(f"{name} is {size} bytes, too large to send inline (limit {limit}); {where}")


@dataclass(frozen=True)
class Stored:
    """Where a committed output is: an absolute local path or ``s3://bucket/key``, and for stores that
    can hand out one, a time-limited link that fetches it without credentials."""

    location: str
    url: str | None = None
    url_expires_at: str | None = None


class OutputStore(Protocol):
    kind: ClassVar[str]
    # The local folder temp files are written in (also the whole store, for the local kind).
    staging_dir: Path

    def describe(self) -> str:
        """The store for people: a folder, or ``s3://bucket/prefix at <endpoint>`` (never a credential)."""
        ...

    async def check(self) -> None:
        """Raise OutputStoreError, in our words, if the store cannot be used (run before serving)."""
        ...

    async def commit(
        self, temp: TempOutput, name: str, *, media_type: str, content_addressed: bool
    ) -> Stored:
        """Make a finished temp file the output ``name``; the temp file is gone afterwards. With
        ``content_addressed`` the name is derived from the bytes, so an output already stored under it
        holds the same ones and is kept; otherwise the new bytes replace it."""
        ...

    async def read(self, name: str, *, limit: int) -> bytes:
        """The bytes of a saved output of at most ``limit`` bytes; OutputNotFound or OutputTooLarge."""
        ...


class LocalOutputStore:
    """The output folder on this machine: the default, and every guarantee of :mod:`.outputs` kept."""

    kind: ClassVar[str] = "local"

    def __init__(self, directory: Path) -> None:
        self.staging_dir = directory

    def describe(self) -> str:
        return str(self.staging_dir)

    async def check(self) -> None:
        return None  # prepare_output_dir has already opened (or refused) the folder

    async def commit(
        self, temp: TempOutput, name: str, *, media_type: str, content_addressed: bool
    ) -> Stored:
        final = await anyio.to_thread.run_sync(partial(temp.commit, name, keep_same_size=content_addressed))
        return Stored(location=str(final))

    async def read(self, name: str, *, limit: int) -> bytes:
        return await anyio.to_thread.run_sync(self._read, name, limit)

    def _read(self, name: str, limit: int) -> bytes:
        # Size and bytes both come from the one descriptor open_output checked: a second lookup by
        # name could meet a link swapped in meanwhile.
        try:
            handle = open_output(self.staging_dir, name)
        except FileAccessError as exc:
            raise OutputNotFound(str(exc)) from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise OutputTooLarge.of(name, size, limit, f"open {Path(self.staging_dir, name)}")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise OutputTooLarge.of(name, len(data), limit, "it grew while it was being read")
        return data


def as_store(output: Path | OutputStore) -> OutputStore:
    """A folder given where a store is expected is that folder's local store."""
    return LocalOutputStore(output) if isinstance(output, Path) else output


async def write_named(store: OutputStore, name: str, data: bytes, *, media_type: str) -> Stored:
    """Save small bytes under a chosen (not content-derived) name, replacing what is there: a subtitle
    track named after its video. Written locally first, so the local guarantees hold for it too."""
    check_output_name(name)
    if isinstance(store, LocalOutputStore):
        path = await anyio.to_thread.run_sync(write_output, store.staging_dir, name, data)
        return Stored(location=str(path))
    temp = await anyio.to_thread.run_sync(TempOutput, store.staging_dir)
    try:
        await anyio.to_thread.run_sync(temp.write, data)
        return await store.commit(temp, name, media_type=media_type, content_addressed=False)
    finally:
        temp.discard()


def open_output_store(settings: Settings, staging_dir: Path) -> OutputStore:
    """The store ``settings`` choose: S3-compatible storage for ``MEDIAMUX_OUTPUT_URL``, else the folder.
    The S3 client is imported only here, only then."""
    if settings.output_url is None:
        return LocalOutputStore(staging_dir)
    from mediamux.files.s3 import S3OutputStore

    return S3OutputStore(settings.output_url, staging_dir=staging_dir, link_ttl_s=settings.output_link_ttl_s)


__all__ = [
    "LocalOutputStore",
    "OutputNotFound",
    "OutputStore",
    "OutputStoreError",
    "OutputTooLarge",
    "Stored",
    "as_store",
    "open_output_store",
    "write_named",
]
