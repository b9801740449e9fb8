"""Downloads of provider outputs, and saving of inline ones, into the output folder.

Downloads refuse anything that could reach an internal network (SSRF), follow redirects by hand so
each hop is re-checked and no credential travels along, and write atomically under a
content-addressed name, so a failed or repeated download never leaves a partial or duplicate file
behind.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import unquote

import anyio
import anyio.to_thread
import httpx2
from pydantic import BaseModel

from mediamux import __version__, deadlines
from mediamux.errors import MediamuxError
from mediamux.files.outputs import TempOutput, ensure_output_dir
from mediamux.files.store import OutputStore, OutputStoreError, as_store
from mediamux.urls import origin

# Where the mediamux://outputs/{name} resource serves a saved output from.
OUTPUTS_PREFIX: Final = "mediamux://outputs/"


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
        return (_rebuild_download_error, (self.host, self.reason, self.refused, type(self)))


def _rebuild_download_error(
    host: str, reason: str, refused: bool, kind: type[DownloadError] = DownloadError
) -> DownloadError:
    return kind(host, reason, refused=refused)


class DownloadTooSlow(DownloadError):
    """The download did not finish within its total deadline; nothing was kept, and it can be retried
    (the output is still at the provider). A job can report itself as still saving its outputs."""

    error_class = "timeout"


class SavedOutput(BaseModel):
    name: str  # file name inside the output dir, e.g. "3f2a9c0d1e2b4a5f.png"
    path: str  # absolute path; with S3 storage (MEDIAMUX_OUTPUT_URL) the object, s3://bucket/key
    uri: str  # "mediamux://outputs/{name}", readable from every server sharing the storage
    size_bytes: int
    sha256: str
    mime_type: str | None
    source_url: str  # the URL it came from, with the query string removed
    # S3 storage only: a link that fetches the file without credentials, and until when it does.
    url: str | None = None
    url_expires_at: str | None = None


Resolver = Callable[[str], Awaitable[list[str]]]

_RESOLVE_TIMEOUT_S: Final = 10.0
# Long enough for a large video over a slow link, short enough that a stalled provider frees the job.
DEFAULT_MAX_SECONDS: Final = 600.0
_WRITE_BUFFER: Final = 1 << 20
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})

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


async def _vet(url: httpx2.URL, trusted: set[str], resolve: Resolver) -> _Hop:
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
    if origin(url) in trusted:
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


async def download_output(
    client: httpx2.AsyncClient,
    url: str,
    output_dir: Path | OutputStore,
    *,
    trusted_origins: Sequence[str] = (),
    max_bytes: int = 512 * 1024 * 1024,
    allowed_types: Sequence[str] = ("image/", "audio/", "video/", "application/octet-stream", "model/"),
    max_redirects: int = 3,
    resolve: Resolver | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
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
    - Written to an O_EXCL temp file in ``output_dir`` (a store's local folder) while hashing, then
      committed by the store as ``<first 16 hex of sha256><ext>``: fsynced and renamed into the folder,
      or uploaded once to S3-compatible storage (see :mod:`mediamux.files.store`). The extension comes from the Content-Type or a short
      alphanumeric URL suffix, never from a provider-supplied file name. An existing file of the same
      name and size is kept (idempotent re-download); a symlink at that name is replaced, never
      followed. On any failure, including cancellation, the temp file is removed.
    - ``source_url`` in the result is the URL as given, without query string or fragment.
    - The whole download (lookups, redirects, body) must finish within ``max_seconds`` and within
      the time left in the current tool call (:func:`mediamux.deadlines.remaining`), whichever is
      sooner; otherwise :class:`DownloadTooSlow`, with no partial file left. The client's timeouts
      apply per read only, and a server dripping a byte at a time never trips them.
    """
    left = deadlines.remaining()
    if left is not None and left < max_seconds:
        limit, what = left, "the time left in this call"
    else:
        limit, what = max_seconds, "the download time limit"
    with anyio.move_on_after(limit):
        return await _download(
            client,
            url,
            output_dir,
            trusted_origins=trusted_origins,
            max_bytes=max_bytes,
            allowed_types=allowed_types,
            max_redirects=max_redirects,
            resolve=resolve,
        )
    try:
        host = _display(httpx2.URL(url))
    except (httpx2.InvalidURL, TypeError):  # pragma: no cover - refused before any time passes
        host = ""
    raise DownloadTooSlow(
        host,
        f"it was too slow: not finished within {limit:.3g} s ({what}); nothing was kept, and the file "
        "is still at the provider, so the download can be retried",
    )


async def _download(
    client: httpx2.AsyncClient,
    url: str,
    output_dir: Path | OutputStore,
    *,
    trusted_origins: Sequence[str],
    max_bytes: int,
    allowed_types: Sequence[str],
    max_redirects: int,
    resolve: Resolver | None,
) -> SavedOutput:
    resolver = resolve or resolve_host
    trusted: set[str] = set()
    for given in trusted_origins:
        parsed_origin = httpx2.URL(given)
        if parsed_origin.scheme not in ("http", "https") or not parsed_origin.host:
            raise ValueError(f"trusted origin must be an http(s) origin, got {given!r}")
        trusted.add(origin(parsed_origin))

    try:
        current = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError):
        raise DownloadError("", "the URL is not valid", refused=True) from None
    source_url = str(current.copy_with(query=None, fragment=None))
    store = as_store(output_dir)
    try:
        directory = await anyio.to_thread.run_sync(ensure_output_dir, store.staging_dir)
    except OSError as exc:
        raise DownloadError(
            _display(current), f"cannot create the output folder {store.staging_dir} ({exc.strerror})"
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
                store,
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
    store: OutputStore,
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
        temp = await anyio.to_thread.run_sync(TempOutput, directory)
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
        try:
            stored = await store.commit(temp, name, media_type=media_type, content_addressed=True)
        except OSError as exc:
            raise DownloadError(hop.display, f"could not save the file ({exc.strerror})") from exc
        except OutputStoreError as exc:
            raise DownloadError(hop.display, f"could not store the file: {exc.message}") from None
    except BaseException:
        # Synchronous on purpose: during cancellation an awaited cleanup would itself be cancelled.
        temp.discard()
        raise
    return SavedOutput(
        name=name,
        path=stored.location,
        uri=OUTPUTS_PREFIX + name,
        size_bytes=size,
        sha256=digest,
        mime_type=media_type,
        source_url=source_url,
        url=stored.url,
        url_expires_at=stored.url_expires_at,
    )


async def save_output_bytes(
    data: bytes, output_dir: Path | OutputStore, *, media_type: str, source: str
) -> SavedOutput:
    """Save bytes a provider returned inline (base64 audio) exactly as downloads are saved: atomically,
    content-addressed, never over a planted symlink. ``source`` names where they came from.

    Raises OSError (the local folder) or DownloadError (the store refused them)."""
    store = as_store(output_dir)
    directory = await anyio.to_thread.run_sync(ensure_output_dir, store.staging_dir)
    ext = _EXTENSIONS.get(media_type) or (mimetypes.guess_extension(media_type) or "").lower()
    ext = ext if _SAFE_EXT.fullmatch(ext) else ".bin"

    def write() -> TempOutput:
        temp = TempOutput(directory)
        try:
            temp.write(data)
        except BaseException:
            temp.discard()
            raise
        return temp

    temp = await anyio.to_thread.run_sync(write)
    name = temp.hexdigest()[:16] + ext
    try:
        digest = temp.hexdigest()
        stored = await store.commit(temp, name, media_type=media_type, content_addressed=True)
    except OutputStoreError as exc:
        raise DownloadError(source, f"could not store the file: {exc.message}") from None
    finally:
        temp.discard()
    return SavedOutput(
        name=name,
        path=stored.location,
        uri=OUTPUTS_PREFIX + name,
        size_bytes=len(data),
        sha256=digest,
        mime_type=media_type,
        source_url=source,
        url=stored.url,
        url_expires_at=stored.url_expires_at,
    )
