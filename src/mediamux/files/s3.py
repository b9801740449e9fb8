"""Saved outputs in S3-compatible storage (AWS S3, MinIO, Ceph, R2, …): ``MEDIAMUX_OUTPUT_URL=s3://bucket/prefix``.

The client is ``obstore`` (Python bindings of Apache Arrow's Rust ``object_store``, the optional extra
``mediamux[s3]``), imported only when the setting is there. It was chosen because it is maintained,
small and fast to start (one wheel, no Python dependencies beyond typing-extensions; measured here,
import and a client in 0.12 s where boto3 takes 1.4 s, and aiobotocore adds aiohttp to botocore), and has
the three operations this needs as first-class calls: a conditional create (``PUT`` with
``If-None-Match: *``), presigned URLs, and typed errors. Signing SigV4 ourselves would be smaller still,
but a hand-rolled signer is exactly what a test endpoint that does not check signatures (moto) cannot
catch. Its blocking calls are used, in worker threads (see ``S3OutputStore._call`` for why not its
async ones).

Endpoint, region and credentials come from the usual variables, read by the client itself:
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` (or the instance's role). A
plain-http endpoint (MinIO in a compose network, a loopback test server) is allowed because it was
configured explicitly. Nothing here puts a credential into a message or a log line: errors name the
bucket, the prefix and the endpoint's origin only.

Uploads are single ``PUT`` requests read straight from the finished temp file through ``mmap``: the
conditional create is not available for multipart uploads, and a mapped file is paged in by the kernel
as the request body is sent (file-backed pages, reclaimable), so a 500 MB video costs no heap.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread

from mediamux.files.outputs import TempOutput, check_output_name
from mediamux.files.store import OutputNotFound, OutputStoreError, OutputTooLarge, Stored

if TYPE_CHECKING:
    from obstore.store import ClientConfig

logger = logging.getLogger("mediamux.files")
T = TypeVar("T")

# S3 refuses a single PUT above 5 GiB; MEDIAMUX_MAX_DOWNLOAD_MB is far below it by default.
MAX_SINGLE_PUT_BYTES: Final = 5 * 1024**3
ENDPOINT_VARIABLES: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
INSTALL_HINT: Final = "pip install 'mediamux[s3]'"

# Bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending alphanumeric.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONFIG_VARIABLES: Final = (
    ("region", ("AWS_REGION", "AWS_DEFAULT_REGION")),
    ("access_key_id", ("AWS_ACCESS_KEY_ID",)),
    ("secret_access_key", ("AWS_SECRET_ACCESS_KEY",)),
    ("session_token", ("AWS_SESSION_TOKEN",)),
)
_CODE = re.compile(r"<Code>([A-Za-z.]+)</Code>")
_CREDENTIAL_CODES: Final = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_NETWORK_WORDS: Final = (
    ("connection refused", "connection refused"),
    ("dns error", "the host name does not resolve"),
    ("timed out", "timed out"),
    ("certificate", "its TLS certificate was not accepted"),
    ("connection reset", "the connection was reset"),
    ("error sending request", "no answer"),
)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing slashes; "" for the bucket's root

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}" if name else f"s3://{self.bucket}/{self.prefix}"


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/prefix`` as a location; ValueError saying what to write instead."""
    example = "s3://bucket/prefix, e.g. s3://mediamux-outputs/team-a"
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ValueError(f"MEDIAMUX_OUTPUT_URL is not a URL; write {example}") from None
    if parts.scheme != "s3":
        raise ValueError(
            f"MEDIAMUX_OUTPUT_URL must be an s3:// URL ({example}), not scheme {parts.scheme or '(none)'!r}; "
            "unset it to keep outputs in the local output folder"
        )
    if parts.username or parts.password or parts.port:
        raise ValueError(
            "MEDIAMUX_OUTPUT_URL names a bucket only; credentials go in AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, the endpoint in AWS_ENDPOINT_URL"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"MEDIAMUX_OUTPUT_URL takes no query or fragment; write {example}")
    bucket = parts.hostname or ""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"MEDIAMUX_OUTPUT_URL: {bucket or '(empty)'!r} is not a valid bucket name (3-63 lowercase letters, "
            f"digits, dots and hyphens); write {example}"
        )
    prefix = parts.path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
        raise ValueError(f"MEDIAMUX_OUTPUT_URL: the prefix {prefix!r} has an empty, '.' or '..' segment")
    return S3Location(bucket=bucket, prefix=prefix)


def endpoint_of(environ: Mapping[str, str]) -> str | None:
    """The configured endpoint URL, if any (else AWS S3 itself)."""
    for name in ENDPOINT_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def show_origin(endpoint: str) -> str:
    """An endpoint as it may appear in a message: scheme, host and port, never a user or password."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured endpoint"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme and host else "the configured endpoint"


class S3OutputStore:
    kind: ClassVar[str] = "s3"

    def __init__(
        self,
        url: str,
        *,
        staging_dir: Path,
        link_ttl_s: float = 3600.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._env = os.environ if environ is None else environ
        self.location = parse_s3_url(url)
        self.staging_dir = staging_dir
        self.link_ttl = timedelta(seconds=link_ttl_s)
        self.endpoint = endpoint_of(self._env)
        self._client = self._connect(retries=3, retry_timeout_s=60.0)

    def describe(self) -> str:
        where = show_origin(self.endpoint) if self.endpoint else "AWS S3"
        return f"{self.location.url()} at {where}"

    def _connect(self, *, retries: int, retry_timeout_s: float) -> Any:
        try:
            from obstore.store import S3Store
        except ImportError:
            raise OutputStoreError(
                f"MEDIAMUX_OUTPUT_URL is set, but the S3 client is not installed: {INSTALL_HINT}"
            ) from None
        options: ClientConfig = {
            "connect_timeout": timedelta(seconds=5),
            # The whole request, body included: a large video on a slow link, like a download's limit.
            "timeout": timedelta(seconds=600),
        }
        if self.endpoint is not None and self.endpoint.lower().startswith("http://"):
            options["allow_http"] = True  # configured explicitly: MinIO in a private network, a test server
        # The variables are passed on explicitly, so the store talks to exactly the endpoint it names in
        # its messages; what is not set here (an instance role, web identity) the client finds itself.
        config: dict[str, str] = {}
        for key, names in _CONFIG_VARIABLES:
            value = next((self._env[n].strip() for n in names if self._env.get(n, "").strip()), None)
            if value is not None:
                config[key] = value
        if self.endpoint is not None:
            config["endpoint"] = self.endpoint
        try:
            return S3Store(
                self.location.bucket,
                prefix=self.location.prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options=options,
                retry_config={"max_retries": retries, "retry_timeout": timedelta(seconds=retry_timeout_s)},
            )
        except Exception as exc:
            reason = str(exc).split("\n", 1)[0]
            if "AccessKeyId" in reason or "SecretAccessKey" in reason:
                reason = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together"
            raise OutputStoreError(f"output store {self.describe()} cannot be set up: {reason}") from None

    # -- errors ------------------------------------------------------------------------------------

    def _problem(self, exc: Exception, doing: str) -> OutputStoreError:
        """Our words for a client error: what failed, where, and what to change (no credential, no body)."""
        import obstore.exceptions as oe

        text = str(exc)
        match = _CODE.search(text)
        code = match.group(1) if match else None
        where = self.describe()
        if code == "NoSuchBucket":
            return OutputStoreError(
                f"output store {where}: the bucket {self.location.bucket!r} does not exist; create it, or correct "
                "MEDIAMUX_OUTPUT_URL"
            )
        if code in _CREDENTIAL_CODES or isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError):
            return OutputStoreError(
                f"output store {where}: {doing} was refused ({code or 'access denied'}); check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )
        lowered = text.lower()
        for needle, said in _NETWORK_WORDS:
            if needle in lowered:
                return OutputStoreError(
                    f"output store {where} could not be reached ({said}) while {doing}; check AWS_ENDPOINT_URL "
                    "and that the store is running"
                )
        status = re.search(r"status code: (\d{3})", text)
        if status is not None and status.group(1) in ("401", "403"):
            return OutputStoreError(
                f"output store {where}: {doing} was refused (HTTP {status.group(1)}); check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )
        detail = code or (f"HTTP {status.group(1)}" if status else type(exc).__name__)
        return OutputStoreError(f"output store {where}: {doing} failed ({detail})")

    # -- the store -----------------------------------------------------------------------------------
    #
    # Every call goes through the client's blocking API in a worker thread. Its async API completes
    # Python futures from the client's own runtime threads, and a process that exits right after one
    # (a CLI check, a replica stopping) then aborts in about a third of runs (SIGABRT while the
    # interpreter finalizes, seen with obstore 0.12); blocking calls leave nothing behind to race it.

    async def _call(self, fn: Callable[[], T]) -> T:
        # Abandoned on cancellation: the caller leaves at once; a write still going finishes in its thread,
        # which is harmless for a content-addressed name.
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)

    async def check(self) -> None:
        """Fail now, in our words, if the bucket is missing, the credentials are refused or the endpoint
        is unreachable: one listing request with a short retry budget."""
        import obstore

        client = self._connect(retries=1, retry_timeout_s=10.0)
        try:
            await self._call(lambda: next(iter(obstore.list(client, chunk_size=1)), None))
        except Exception as exc:
            raise self._problem(exc, "listing the bucket") from None

    async def commit(
        self, temp: TempOutput, name: str, *, media_type: str, content_addressed: bool
    ) -> Stored:
        check_output_name(name)
        try:
            fd = await anyio.to_thread.run_sync(temp.reopen_for_reading)
            try:
                size = os.fstat(fd).st_size
                if size > MAX_SINGLE_PUT_BYTES:
                    raise OutputStoreError(
                        f"{name} is {size} bytes; an object store takes at most {MAX_SINGLE_PUT_BYTES} in one "
                        "upload; lower MEDIAMUX_MAX_DOWNLOAD_MB"
                    )
                await self._upload(name, fd, size, media_type=media_type, create=content_addressed)
            finally:
                os.close(fd)
        finally:
            temp.discard()
        url, expires = await self._link(name)
        return Stored(location=self.location.url(name), url=url, url_expires_at=expires)

    async def _upload(self, name: str, fd: int, size: int, *, media_type: str, create: bool) -> None:
        import obstore
        import obstore.exceptions as oe

        body: Any = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
        attributes: Any = {"Content-Type": media_type}

        def put(mode: Literal["create", "overwrite"]) -> None:
            obstore.put(self._client, name, body, mode=mode, attributes=attributes)

        try:
            try:
                await self._call(partial(put, "create" if create else "overwrite"))
                return
            except (oe.AlreadyExistsError, oe.PreconditionError):
                pass  # another replica (or an earlier run) stored it first: a write not needed
            except Exception as exc:
                raise self._problem(exc, f"storing {name}") from None
            # The name is the content's hash, so the object there holds these bytes; a size that differs
            # is damage from outside mediamux, repaired by writing ours over it.
            try:
                existing = await self._call(partial(obstore.head, self._client, name))
            except Exception as exc:
                raise self._problem(exc, f"checking the stored {name}") from None
            if int(existing["size"]) != size:
                logger.warning(
                    "%s in %s had %s bytes, not %d; replacing it",
                    name,
                    self.describe(),
                    existing["size"],
                    size,
                )
                try:
                    await self._call(partial(put, "overwrite"))
                except Exception as exc:
                    raise self._problem(exc, f"storing {name}") from None
        finally:
            if isinstance(body, mmap.mmap):
                # An abandoned upload still holds the buffer; the mapping is then released with it.
                with contextlib.suppress(BufferError):
                    body.close()

    async def _link(self, name: str) -> tuple[str, str]:
        import obstore

        try:
            url = await self._call(partial(obstore.sign, self._client, "GET", name, self.link_ttl))
        except Exception as exc:
            raise self._problem(exc, f"signing a link to {name}") from None
        expires = (datetime.now(UTC) + self.link_ttl).isoformat(timespec="seconds").replace("+00:00", "Z")
        return str(url), expires

    async def read(self, name: str, *, limit: int) -> bytes:
        import obstore
        import obstore.exceptions as oe

        check_output_name(name)
        try:
            meta = await self._call(partial(obstore.head, self._client, name))
        except (oe.NotFoundError, FileNotFoundError) as exc:
            if "NoSuchBucket" in str(exc):
                raise self._problem(exc, f"reading {name}") from None
            raise OutputNotFound(f"No saved output named {name!r} in {self.describe()}.") from None
        except Exception as exc:
            raise self._problem(exc, f"reading {name}") from None
        size = int(meta["size"])
        if size > limit:
            url, expires = await self._link(name)
            raise OutputTooLarge.of(name, size, limit, f"download it from {url} (valid until {expires})")
        try:
            data = await self._call(lambda: bytes(obstore.get(self._client, name).bytes()))
        except (oe.NotFoundError, FileNotFoundError):
            raise OutputNotFound(f"No saved output named {name!r} in {self.describe()}.") from None
        except Exception as exc:
            raise self._problem(exc, f"reading {name}") from None
        if len(data) > limit:
            raise OutputTooLarge.of(name, len(data), limit, "it was replaced while it was being read")
        return data


__all__ = ["S3Location", "S3OutputStore", "endpoint_of", "parse_s3_url", "show_origin"]
