"""Local path confinement, streamed uploads and safe downloads (checklist tests 16-20)."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import socket
import stat
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from anyio.streams.buffered import BufferedByteReceiveStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

import mediamux
from mediamux import deadlines, files
from mediamux.files import (
    ALLOWED_DIRS_ENV,
    DownloadError,
    FileAccessError,
    PathNotAllowed,
    default_allowed_dirs,
    download_output,
    downloads,
    multipart_file_upload,
    open_confined,
    output_path,
    parse_allowed_dirs,
    resolve_allowed_path,
    resolve_host,
    uploads,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PUBLIC_IP = "93.184.216.34"
SECRET = b"TOP-SECRET-OUTSIDE-CONTENT"

DNS = {
    "cdn.example.com": [PUBLIC_IP],
    "redirector.example": [PUBLIC_IP],
    "localhost": ["127.0.0.1"],
    "localhost.": ["127.0.0.1"],
    "cdn.public-looking.example": ["10.0.0.5"],
    "dual.example": [PUBLIC_IP, "127.0.0.1"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "metadata.example": ["169.254.169.254"],
}


async def fake_resolve(host: str) -> list[str]:
    try:
        return list(DNS[host])
    except KeyError:
        raise OSError(f"unknown host {host}") from None


def name_for(body: bytes, ext: str) -> str:
    return hashlib.sha256(body).hexdigest()[:16] + ext


async def drain(stream: AsyncIterator[bytes], sink: bytearray | None = None) -> int:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if sink is not None:
            sink += chunk
    return total


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------------------------------------
# Loopback servers
# ---------------------------------------------------------------------------------------------


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: in a test, SIGINT/SIGTERM must stop the test run, not
    just ask this server to shut down (otherwise a hung test ignores `timeout` and Ctrl-C)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 for the duration of the block; yields its base URL."""
    server = QuietServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
    )
    # Binding before serve() means the port is known and connections queue in the backlog at once,
    # so no polling for `server.started` is needed.
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


@dataclass
class Canary:
    port: int = 0
    connections: int = 0
    hits: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    """A loopback server that must never be reached; counts TCP connections, not just HTTP requests,
    so an https attempt (which uvicorn cannot parse) still shows up."""
    state = Canary()

    class CountingH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            state.connections += 1
            super().connection_made(transport)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        state.hits.append(scope["path"])
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]}
        )
        await send({"type": "http.response.body", "body": PNG})

    sock = socket.create_server(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    server = QuietServer(
        uvicorn.Config(app, http=CountingH11, lifespan="off", log_level="warning", loop="asyncio")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield state
    server.should_exit = True
    thread.join(timeout=5)


class Router(httpx2.AsyncBaseTransport):
    """Records every request; loopback destinations go to the real network (so a bug reaches the
    canary), everything else to a mock that happily serves a PNG (so a bug looks like success)."""

    def __init__(self, handler: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.seen: list[httpx2.Request] = []
        # Built on first use: creating an SSL context per test is slow, and correct code never needs it.
        self._real: httpx2.AsyncHTTPTransport | None = None
        self._mock = httpx2.MockTransport(handler)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        host = request.url.host
        literal = downloads._ip_literal(host)
        if host.startswith("localhost") or (
            literal is not None and (literal.is_loopback or literal.is_unspecified)
        ):
            self._real = self._real or httpx2.AsyncHTTPTransport()
            return await self._real.handle_async_request(request)
        return await self._mock.handle_async_request(request)

    async def aclose(self) -> None:
        if self._real is not None:
            await self._real.aclose()


def png_handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "image/png"}, content=PNG)


# ---------------------------------------------------------------------------------------------
# Allowed folders
# ---------------------------------------------------------------------------------------------


def test_default_allowed_dirs_are_cwd_and_output(tmp_path: Path) -> None:
    project, out, home = tmp_path / "project", tmp_path / "out", tmp_path / "home"
    project.mkdir()
    assert default_allowed_dirs(output_dir=out, cwd=project, home=home) == [project.resolve(), out.resolve()]


@pytest.mark.parametrize("where", ["root", "home"])
def test_default_allowed_dirs_drop_root_and_home_working_dirs(tmp_path: Path, where: str) -> None:
    home, out = tmp_path / "home", tmp_path / "home" / "outputs"
    home.mkdir()
    cwd = Path("/") if where == "root" else home
    assert default_allowed_dirs(output_dir=out, cwd=cwd, home=home) == [out.resolve()]


def test_parse_allowed_dirs_expands_orders_dedupes_and_appends_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "media").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    out = tmp_path / "out"
    value = os.pathsep.join(["~/media", str(tmp_path / "b"), "", str(tmp_path / "b" / ".." / "b"), " "])
    assert parse_allowed_dirs(value, output_dir=out, cwd=tmp_path) == [
        (tmp_path / "home" / "media").resolve(),
        (tmp_path / "b").resolve(),
        out.resolve(),
    ]
    # Relative entries are taken relative to the working directory.
    assert parse_allowed_dirs("b", output_dir=out, cwd=tmp_path)[0] == (tmp_path / "b").resolve()


@pytest.mark.parametrize("value", [None, "", os.pathsep, "  "])
def test_parse_allowed_dirs_unset_falls_back_to_defaults(tmp_path: Path, value: str | None) -> None:
    out = tmp_path / "out"
    assert parse_allowed_dirs(value, output_dir=out, cwd=tmp_path, home=tmp_path / "h") == [
        tmp_path.resolve(),
        out.resolve(),
    ]


WIDE_FOLDERS = {
    "filesystem-root": "/",
    "tmp": "/tmp",
    "var-tmp": "/var/tmp",
    "python-temp-root": tempfile.gettempdir(),
    "linux-homes": "/home",
    "macos-homes": "/Users",
}


@pytest.mark.parametrize("folder", WIDE_FOLDERS.values(), ids=WIDE_FOLDERS.keys())
def test_allowed_dirs_set_to_a_folder_that_is_too_wide_are_refused_saying_what_to_name(
    tmp_path: Path, folder: str
) -> None:
    value = os.pathsep.join([str(tmp_path), folder])
    with pytest.raises(FileAccessError) as info:
        parse_allowed_dirs(value, output_dir=tmp_path / "out", cwd=tmp_path)
    message = str(info.value)
    assert f"{ALLOWED_DIRS_ENV} entry {os.path.realpath(folder)} is refused" in message
    assert "instead" in message and "restart mediamux" in message


def test_a_folder_holding_several_account_homes_is_refused(tmp_path: Path) -> None:
    people = tmp_path / "people"
    homes = [str(people / "ana"), str(people / "bo")]
    with pytest.raises(FileAccessError, match="holds the home folders of 2 accounts"):
        parse_allowed_dirs(str(people), output_dir=tmp_path / "out", cwd=tmp_path, homes=homes)
    # One account's own home, or a folder inside it, is that user's choice to make.
    assert parse_allowed_dirs(str(people / "ana"), output_dir=tmp_path / "out", homes=homes)[0] == Path(
        os.path.realpath(people / "ana")
    )


def test_an_output_folder_that_is_too_wide_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="MEDIAMUX_OUTPUT_DIR"):
        parse_allowed_dirs(str(tmp_path), output_dir=Path(tempfile.gettempdir()), cwd=tmp_path)
    with pytest.raises(FileAccessError, match="MEDIAMUX_OUTPUT_DIR"):
        parse_allowed_dirs(None, output_dir=Path("/"), cwd=tmp_path, home=tmp_path / "h")


@pytest.mark.parametrize("folder", ["/tmp", "/var/tmp", "/home", "/"])
def test_started_in_a_wide_folder_only_outputs_are_allowed_and_errors_say_why(
    tmp_path: Path, folder: str
) -> None:
    out = tmp_path / "out"
    allowed = parse_allowed_dirs(None, output_dir=out, cwd=Path(folder), home=tmp_path / "h")
    assert allowed == [out.resolve()]
    with pytest.raises(PathNotAllowed) as info:
        resolve_allowed_path(f"{folder.rstrip('/')}/clip.mp4", allowed)
    message = str(info.value)
    assert f"The working directory {os.path.realpath(folder)} is not allowed automatically" in message
    assert ALLOWED_DIRS_ENV in message


def test_project_folders_inside_a_temp_root_stay_allowed(tmp_path: Path) -> None:
    # pytest's own folders live under the temp root: a folder inside it is a project, not the root.
    assert str(tmp_path.resolve()).startswith(os.path.realpath(tempfile.gettempdir()) + os.sep)
    out = tmp_path / "out"
    assert parse_allowed_dirs(str(tmp_path), output_dir=out) == [tmp_path.resolve(), out.resolve()]
    assert default_allowed_dirs(output_dir=out, cwd=tmp_path, home=tmp_path / "h") == [
        tmp_path.resolve(),
        out.resolve(),
    ]


# ---------------------------------------------------------------------------------------------
# Path confinement (test 18)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    evil = tmp_path / "allowed-evil"
    for d in (allowed / "sub", allowed / "folder", outside / "deep", evil):
        d.mkdir(parents=True)
    (allowed / "a.mp4").write_bytes(b"movie")
    (allowed / "sub" / "b.mp4").write_bytes(b"clip")
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "deep" / "clip.mp4").write_bytes(SECRET)
    (evil / "x.mp4").write_bytes(SECRET)
    (allowed / "link_out").symlink_to(outside / "secret.txt")
    (allowed / "linkdir_out").symlink_to(outside)
    # chain1 → chain2 → chain3 all live inside the allowed folder; only the last hop leaves it.
    (allowed / "chain3").symlink_to(outside / "secret.txt")
    (allowed / "chain2").symlink_to(allowed / "chain3")
    (allowed / "chain1").symlink_to("chain2")
    (allowed / "link_in").symlink_to("a.mp4")
    (tmp_path / "allowed_link").symlink_to(allowed)
    return {"root": tmp_path, "allowed": allowed, "outside": outside, "evil": evil}


REJECTED_PATHS = {
    "relative-traversal": "../outside/secret.txt",
    "traversal-through-subdir": "sub/../../outside/secret.txt",
    "absolute-outside": "{outside}/secret.txt",
    "prefix-confusion": "{evil}/x.mp4",
    "prefix-confusion-relative": "../allowed-evil/x.mp4",
    "symlink-file-out": "link_out",
    "symlinked-parent-dir-out": "linkdir_out/secret.txt",
    "nested-symlink-chain": "chain1",
    "home-outside": "~/secret.txt",
}


@pytest.mark.parametrize("raw", REJECTED_PATHS.values(), ids=REJECTED_PATHS.keys())
def test_resolve_allowed_path_refuses_escapes_and_names_allowed_dirs(
    tree: dict[str, Path], raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tree["outside"]))
    raw = raw.format(outside=tree["outside"], evil=tree["evil"])
    with pytest.raises(PathNotAllowed) as info:
        resolve_allowed_path(raw, [tree["allowed"]])
    message = str(info.value)
    assert str(tree["allowed"]) in message
    assert ALLOWED_DIRS_ENV in message
    assert SECRET.decode() not in message


@pytest.mark.parametrize(("raw", "expected"), [("", "No file path"), ("   ", "No file path")])
def test_resolve_allowed_path_refuses_empty(tree: dict[str, Path], raw: str, expected: str) -> None:
    with pytest.raises(PathNotAllowed, match=expected):
        resolve_allowed_path(raw, [tree["allowed"]])


def test_resolve_allowed_path_refuses_nul_byte(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="NUL"):
        resolve_allowed_path("a.mp4\x00.png", [tree["allowed"]])


def test_resolve_allowed_path_refuses_directory(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="folder"):
        resolve_allowed_path("folder", [tree["allowed"]])


def test_resolve_allowed_path_missing_file_names_allowed_dirs(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed) as info:
        resolve_allowed_path("missing.mp4", [tree["allowed"]])
    assert "File not found" in str(info.value)
    assert str(tree["allowed"]) in str(info.value)
    assert ALLOWED_DIRS_ENV in str(info.value)


def test_resolve_allowed_path_missing_allowed_when_not_required(tree: dict[str, Path]) -> None:
    got = resolve_allowed_path("new.mp4", [tree["allowed"]], must_exist=False)
    assert got == tree["allowed"].resolve() / "new.mp4"


def test_resolve_allowed_path_accepts_relative_absolute_and_internal_links(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = tree["allowed"]
    real_a = (allowed / "a.mp4").resolve()
    assert resolve_allowed_path("a.mp4", [allowed]) == real_a
    assert (
        resolve_allowed_path(str(allowed / "sub" / "b.mp4"), [allowed])
        == (allowed / "sub" / "b.mp4").resolve()
    )
    assert resolve_allowed_path("link_in", [allowed]) == real_a
    monkeypatch.setenv("HOME", str(allowed))
    assert resolve_allowed_path("~/a.mp4", [allowed]) == real_a
    # Relative paths resolve against the first allowed folder only.
    assert resolve_allowed_path("b.mp4", [allowed / "sub", allowed]) == (allowed / "sub" / "b.mp4").resolve()


def test_resolve_allowed_path_accepts_allowed_dir_that_is_a_symlink(tree: dict[str, Path]) -> None:
    via_link = tree["root"] / "allowed_link"
    assert resolve_allowed_path(str(via_link / "a.mp4"), [via_link]) == (tree["allowed"] / "a.mp4").resolve()
    assert (
        resolve_allowed_path(str(tree["allowed"] / "a.mp4"), [via_link])
        == (tree["allowed"] / "a.mp4").resolve()
    )


def test_resolve_allowed_path_second_allowed_dir_works(tree: dict[str, Path]) -> None:
    got = resolve_allowed_path(str(tree["outside"] / "secret.txt"), [tree["allowed"], tree["outside"]])
    assert got == (tree["outside"] / "secret.txt").resolve()


HOSTILE_SPELLINGS = {
    "5000-char-name": ("a" * 5000 + ".mp4", "at most 255"),
    "5000-char-path": ("/".join(["abcdefghi"] * 500) + ".mp4", "at most 4095"),
    "lone-surrogate": ("clip\ud800.mp4", "not valid Unicode"),
}


@pytest.mark.parametrize(("raw", "expected"), HOSTILE_SPELLINGS.values(), ids=HOSTILE_SPELLINGS.keys())
def test_hostile_path_spellings_get_clear_errors(tree: dict[str, Path], raw: str, expected: str) -> None:
    with pytest.raises(PathNotAllowed, match=expected):
        resolve_allowed_path(raw, [tree["allowed"]])


def test_a_link_that_changes_while_it_is_resolved_gets_a_clear_error(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What realpath meets when a link it has just seen is swapped for a regular file before readlink.
    def swapped(path: Any, *args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EINVAL, "Invalid argument", path)

    monkeypatch.setattr(os, "readlink", swapped)
    with pytest.raises(PathNotAllowed, match=r"could not be resolved .*changed while it was being checked"):
        resolve_allowed_path("link_in", [tree["allowed"]])


# ---------------------------------------------------------------------------------------------
# TOCTOU (test 19)
# ---------------------------------------------------------------------------------------------


def swap_parent_for_link(tree: dict[str, Path]) -> None:
    allowed = tree["allowed"]
    os.rename(allowed / "sub", allowed / "sub-original")
    (allowed / "sub").symlink_to(tree["outside"] / "deep")
    # The swapped-in directory holds a file of the same name.
    os.rename(tree["outside"] / "deep" / "clip.mp4", tree["outside"] / "deep" / "b.mp4")


def test_open_confined_reads_a_validated_file(tree: dict[str, Path]) -> None:
    path = resolve_allowed_path("sub/b.mp4", [tree["allowed"]])
    with open_confined(path, [tree["allowed"]]) as fh:
        assert fh.read() == b"clip"


def test_open_confined_refuses_parent_dir_swapped_for_symlink(tree: dict[str, Path]) -> None:
    path = resolve_allowed_path("sub/b.mp4", [tree["allowed"]])
    swap_parent_for_link(tree)
    with pytest.raises(PathNotAllowed, match="swapped") as info:
        open_confined(path, [tree["allowed"]])
    assert ALLOWED_DIRS_ENV in str(info.value)


def test_open_confined_refuses_file_swapped_for_symlink(tree: dict[str, Path]) -> None:
    path = resolve_allowed_path("a.mp4", [tree["allowed"]])
    path.unlink()
    path.symlink_to(tree["outside"] / "secret.txt")
    with pytest.raises(PathNotAllowed, match="symbolic link"):
        open_confined(path, [tree["allowed"]])


async def test_open_confined_refuses_fifo_without_blocking(tree: dict[str, Path]) -> None:
    path = resolve_allowed_path("a.mp4", [tree["allowed"]])
    path.unlink()
    os.mkfifo(path)
    with anyio.fail_after(5), pytest.raises(PathNotAllowed, match="not a regular file"):
        await anyio.to_thread.run_sync(open_confined, path, [tree["allowed"]], abandon_on_cancel=True)


async def test_upload_refuses_parent_swapped_after_it_was_prepared(tree: dict[str, Path]) -> None:
    upload = multipart_file_upload(tree["allowed"] / "sub" / "b.mp4", [tree["allowed"]])
    swap_parent_for_link(tree)
    sent = bytearray()
    with anyio.fail_after(5), pytest.raises(PathNotAllowed):
        await drain(upload.stream, sent)
    assert SECRET not in sent


# ---------------------------------------------------------------------------------------------
# Streamed multipart uploads
# ---------------------------------------------------------------------------------------------


def upload_app() -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        async with request.form() as form:
            upload = form["file"]
            assert not isinstance(upload, str)
            data = await upload.read()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            filename, content_type = upload.filename, upload.content_type
        return JSONResponse(
            {
                "declared": int(request.headers["content-length"]),
                "received": len(body),
                "fields": fields,
                "filename": filename,
                "content_type": content_type,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    return Starlette(routes=[Route("/upload", receive, methods=["POST"])])


async def test_multipart_upload_parses_back_over_loopback(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "take 1.mp4"
    src.write_bytes(data)
    progress: list[tuple[int, int]] = []

    async def on_progress(sent: int, total: int) -> None:
        progress.append((sent, total))

    upload = multipart_file_upload(
        src,
        [tmp_path],
        filename='../../evil"\r\nX-Injected: 1\\clip.mp4',
        extra_fields={"title": "Ünïcode title", "visibility": "private"},
        chunk_size=256 * 1024,
        on_progress=on_progress,
    )
    async with serve(upload_app()) as base, httpx2.AsyncClient(base_url=base) as client:
        response = await client.post("/upload", content=upload.stream, headers=upload.headers)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["declared"] == got["received"] == upload.content_length
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["fields"] == {"title": "Ünïcode title", "visibility": "private"}
    assert got["content_type"] == "video/mp4"
    name = got["filename"]
    assert name.endswith("clip.mp4")
    assert not any(bad in name for bad in ('"', "\r", "\n", "/", "\\"))
    assert progress[-1] == (upload.content_length, upload.content_length)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress)


async def test_multipart_guesses_type_and_uses_file_name(tmp_path: Path) -> None:
    (tmp_path / "song.mp3").write_bytes(b"ID3")
    upload = multipart_file_upload(tmp_path / "song.mp3", [tmp_path], field="audio")
    body = b"".join([chunk async for chunk in upload.stream])
    assert len(body) == upload.content_length == int(upload.headers["Content-Length"])
    assert b'name="audio"; filename="song.mp3"' in body
    assert b"Content-Type: audio/mpeg" in body


async def test_multipart_streams_50mb_in_bounded_chunks_and_only_once(tmp_path: Path) -> None:
    big = tmp_path / "big.mov"
    with big.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    chunk_size = 1 << 20
    upload = multipart_file_upload(big, [tmp_path], chunk_size=chunk_size)
    largest = total = 0
    tracemalloc.start()
    try:
        with anyio.fail_after(30):
            async for chunk in upload.stream:
                largest = max(largest, len(chunk))
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == upload.content_length
    assert largest <= chunk_size + 1024
    assert peak < 8 * chunk_size  # far below the 50 MB file
    with pytest.raises(RuntimeError, match="already"):
        await drain(upload.stream)


async def test_multipart_partially_sent_stream_cannot_be_resent(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x" * 100)
    upload = multipart_file_upload(tmp_path / "a.wav", [tmp_path], chunk_size=10)
    stream = upload.stream
    await stream.__anext__()
    with pytest.raises(RuntimeError):
        stream.__aiter__()


async def test_multipart_closes_file_when_abandoned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.wav").write_bytes(b"x" * 100)
    opened: list[Any] = []
    real_open = uploads.open_confined

    def spy(path: Path, allowed: Any) -> Any:
        handle = real_open(path, allowed)
        opened.append(handle)
        return handle

    monkeypatch.setattr(uploads, "open_confined", spy)
    upload = multipart_file_upload(tmp_path / "a.wav", [tmp_path], chunk_size=10)
    stream = upload.stream
    assert isinstance(stream, uploads._SingleUseBody)
    await stream.__anext__()  # preamble
    await stream.__anext__()  # first file chunk: the file is open now
    assert opened and not opened[0].closed
    await stream.aclose()
    assert opened[0].closed


async def test_multipart_aborts_when_file_shrinks(tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"x" * 100)
    upload = multipart_file_upload(src, [tmp_path], chunk_size=10)
    src.write_bytes(b"x" * 10)
    with pytest.raises(FileAccessError, match="changed size"):
        await drain(upload.stream)


def test_multipart_refuses_path_outside(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed):
        multipart_file_upload(tree["outside"] / "secret.txt", [tree["allowed"]])


# ---------------------------------------------------------------------------------------------
# Downloads: happy paths and credentials
# ---------------------------------------------------------------------------------------------


async def test_https_download_pins_checked_address_and_sends_no_credentials(tmp_path: Path) -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, headers={"content-type": "image/png"}, content=PNG)

    out = tmp_path / "outputs"
    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(handler),
        headers={"Authorization": "Bearer sk-CANARY", "x-api-key": "CANARY"},
        cookies={"session": "CANARY"},
        auth=("user", "CANARY"),
    ) as client:
        saved = await download_output(
            client,
            "https://cdn.example.com/results/42/image.png?X-Amz-Signature=SEKRIT",
            out,
            resolve=fake_resolve,
        )
    (request,) = seen
    assert request.url.host == PUBLIC_IP
    assert request.headers["host"] == "cdn.example.com"
    assert request.extensions["sni_hostname"] == "cdn.example.com"
    assert not {"authorization", "x-api-key", "cookie"} & set(request.headers.keys())
    assert "CANARY" not in repr(request.headers.raw)
    assert saved.name == name_for(PNG, ".png")
    assert saved.path == str(out.resolve() / saved.name)
    assert Path(saved.path).read_bytes() == PNG
    assert saved.uri == f"mediamux://outputs/{saved.name}"
    assert saved.size_bytes == len(PNG)
    assert saved.sha256 == hashlib.sha256(PNG).hexdigest()
    assert saved.mime_type == "image/png"
    assert saved.source_url == "https://cdn.example.com/results/42/image.png"
    assert files_in(out) == [saved.name]


async def test_default_resolver_refuses_localhost(tmp_path: Path, canary: Canary) -> None:
    assert set(await resolve_host("localhost")) <= {"127.0.0.1", "::1"}
    router = Router(png_handler)
    async with httpx2.AsyncClient(transport=router) as client:
        with anyio.fail_after(10), pytest.raises(DownloadError, match="loopback"):
            await download_output(client, f"https://localhost:{canary.port}/x.png", tmp_path)
    assert router.seen == []


def trusted_app(log: list[dict[str, str]]) -> Starlette:
    async def song(request: Request) -> Response:
        log.append(dict(request.headers))
        return Response(b"ID3" + bytes(1000), media_type="audio/mpeg")

    async def moved(request: Request) -> Response:
        log.append(dict(request.headers))
        return RedirectResponse("/outputs/song", status_code=302)

    async def forever(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            block = bytes(64 * 1024)
            # Checking for the disconnect is also the await that lets the server's loop breathe:
            # uvicorn's send() to a closed socket returns without suspending.
            while not await request.is_disconnected():
                yield block

        return StreamingResponse(chunks(), media_type="video/mp4")

    return Starlette(
        routes=[
            Route("/outputs/song", song),
            Route("/outputs/moved", moved),
            Route("/outputs/forever", forever),
        ]
    )


async def test_trusted_loopback_origin_downloads_over_http_without_credentials(tmp_path: Path) -> None:
    log: list[dict[str, str]] = []
    out = tmp_path / "out"
    async with (
        serve(trusted_app(log)) as base,
        httpx2.AsyncClient(
            headers={"Authorization": "Bearer sk-CANARY", "x-api-key": "CANARY", "Key": "CANARY"}
        ) as client,
    ):
        saved = await download_output(
            client, f"{base}/outputs/moved?token=SEKRIT", out, trusted_origins=[base]
        )
        with pytest.raises(DownloadError, match="only https"):
            await download_output(client, f"{base}/outputs/song", out)
    assert len(log) == 2  # the redirect hop and the file, and nothing for the untrusted attempt
    for headers in log:
        assert not {"authorization", "x-api-key", "key", "cookie"} & set(headers)
    assert saved.name.endswith(".mp3")
    assert saved.source_url == f"{base}/outputs/moved"
    assert files_in(out) == [saved.name]


async def test_endless_loopback_stream_is_cut_at_the_size_cap(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with serve(trusted_app([])) as base, httpx2.AsyncClient() as client:
        with pytest.raises(DownloadError, match="limit"):
            await download_output(
                client, f"{base}/outputs/forever", out, trusted_origins=[base], max_bytes=1024 * 1024
            )
    assert files_in(out) == []


def drip_app() -> Starlette:
    """A provider output that arrives a byte at a time: every read is quick, the whole never ends."""

    async def drip(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield bytes(1024)
            while not await request.is_disconnected():
                # The slowness is the fault being simulated, not a wait in the test.
                await anyio.sleep(0.02)
                yield b"\x00"

        return StreamingResponse(chunks(), media_type="video/mp4")

    return Starlette(routes=[Route("/outputs/drip", drip)])


@pytest.mark.faults
async def test_a_drip_fed_download_stops_at_its_total_deadline_leaving_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Per-read timeouts far above the drip interval: only a total deadline can stop this download.
    async with serve(drip_app()) as base, httpx2.AsyncClient(timeout=httpx2.Timeout(5.0)) as client:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(DownloadError, match="too slow") as info:
            await download_output(
                client, f"{base}/outputs/drip", out, trusted_origins=[base], max_seconds=0.5
            )
        took = time.monotonic() - started
    assert took < 5
    assert "retried" in str(info.value)
    assert info.value.error_class == "timeout"
    assert files_in(out) == []


@pytest.mark.faults
async def test_a_drip_fed_download_stops_when_the_calls_wait_budget_runs_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with serve(drip_app()) as base, httpx2.AsyncClient(timeout=httpx2.Timeout(5.0)) as client:
        with (
            anyio.fail_after(10),
            pytest.raises(DownloadError, match=r"too slow.*time left in this call") as info,
            deadlines.within(0.5),
        ):
            await download_output(client, f"{base}/outputs/drip", out, trusted_origins=[base])
    assert isinstance(info.value, files.DownloadTooSlow)
    assert files_in(out) == []


@pytest.mark.faults
async def test_a_download_cancelled_mid_body_over_loopback_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with serve(drip_app()) as base, httpx2.AsyncClient(timeout=httpx2.Timeout(5.0)) as client:
        with anyio.fail_after(10), anyio.move_on_after(0.3) as scope:
            await download_output(client, f"{base}/outputs/drip", out, trusted_origins=[base])
    assert scope.cancelled_caught
    assert files_in(out) == []


KILLED_CHILD = """
import sys
from pathlib import Path

import anyio
import httpx2

from mediamux.files import downloads


class Announced(downloads.TempOutput):
    def __init__(self, directory):
        super().__init__(directory)
        print(self.name, flush=True)


downloads.TempOutput = Announced


async def main():
    async with httpx2.AsyncClient() as client:
        await downloads.download_output(client, sys.argv[1], Path(sys.argv[2]), trusted_origins=[sys.argv[3]])


anyio.run(main)
"""


@pytest.mark.faults
async def test_a_download_killed_midway_leaves_a_part_file_that_start_up_removes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = Path(mediamux.__file__).parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
    }
    async with serve(drip_app()) as base:
        process = await anyio.open_process(
            [sys.executable, "-c", KILLED_CHILD, f"{base}/outputs/drip", str(out), base], env=env
        )
        try:
            assert process.stdout is not None
            with anyio.fail_after(12):
                part = (await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 200)).decode()
        finally:
            process.kill()
            with anyio.fail_after(5):
                await process.wait()
    # SIGKILL gives no chance to clean up: the partial file stays until something removes it.
    assert files_in(out) == [part]
    # Fresh, it may be another process's download still running; start-up leaves it.
    assert files.prepare_output_dir(out) == out.resolve()
    assert files_in(out) == [part]
    files.prepare_output_dir(out, now=time.time() + files.STALE_TEMP_AGE_S + 1)
    assert files_in(out) == []


# ---------------------------------------------------------------------------------------------
# SSRF (test 16)
# ---------------------------------------------------------------------------------------------

SSRF_TARGETS = [
    "http://127.0.0.1:{port}/x",
    "https://127.0.0.1:{port}/x",
    "https://127.1:{port}/x",
    "https://0177.0.0.1:{port}/x",
    "https://localhost:{port}/x",
    "http://localhost.:{port}/x",
    "https://localhost.:{port}/x",
    "https://[::1]:{port}/x",
    "https://[::ffff:127.0.0.1]:{port}/x",
    "https://[::ffff:7f00:1]:{port}/x",
    "https://[2002:7f00:1::]:{port}/x",
    "https://[64:ff9b::7f00:1]:{port}/x",
    "https://2130706433:{port}/x",
    "http://2130706433:{port}/x",
    "https://0x7f.1:{port}/x",
    "https://0.0.0.0:{port}/x",
    "https://[::]:{port}/x",
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.example/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://cdn.public-looking.example/out.png",
    "https://dual.example/out.png",
    "https://mapped.example/out.png",
    "https://224.0.0.1/out.png",
    "https://100.64.0.1/out.png",
    "https://10.0.0.5/out.png",
    "https://192.168.1.1/out.png",
    "https://unknown-host.invalid/out.png",
    "https://user:S3KR1T@cdn.example.com/out.png",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_GET%20/",
    "ftp://127.0.0.1:{port}/x",
    "data:image/png;base64,iVBORw0KGgo=",
    "not a url at all",
]


@pytest.mark.parametrize("template", SSRF_TARGETS)
async def test_download_refuses_internal_destinations(tmp_path: Path, canary: Canary, template: str) -> None:
    before = canary.connections, len(canary.hits)
    url = template.format(port=canary.port)
    router = Router(png_handler)
    out = tmp_path / "out"
    async with httpx2.AsyncClient(transport=router, timeout=5) as client:
        with anyio.fail_after(10), pytest.raises(DownloadError) as info:
            await download_output(client, url, out, resolve=fake_resolve)
    assert router.seen == []
    assert (canary.connections, len(canary.hits)) == before
    assert files_in(out) == []
    assert "S3KR1T" not in str(info.value)


REDIRECT_TARGETS = [
    "http://127.0.0.1:{port}/x",
    "https://127.0.0.1:{port}/x",
    "//localhost:{port}/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://cdn.public-looking.example/out.png",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", REDIRECT_TARGETS)
async def test_redirects_to_internal_destinations_are_refused(
    tmp_path: Path, canary: Canary, status: int, target: str
) -> None:
    before = canary.connections, len(canary.hits)
    location = target.format(port=canary.port)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.headers["host"] == "redirector.example":
            return httpx2.Response(status, headers={"location": location})
        return png_handler(request)

    router = Router(handler)
    async with httpx2.AsyncClient(transport=router, timeout=5) as client:
        with anyio.fail_after(10), pytest.raises(DownloadError, match="refused"):
            await download_output(
                client, "https://redirector.example/out.png", tmp_path, resolve=fake_resolve
            )
    assert [r.headers["host"] for r in router.seen] == ["redirector.example"]
    assert (canary.connections, len(canary.hits)) == before
    assert files_in(tmp_path) == []


async def test_public_redirect_is_followed_and_revalidated(tmp_path: Path) -> None:
    hosts: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        hosts.append(request.headers["host"])
        if request.headers["host"] == "redirector.example":
            return httpx2.Response(307, headers={"location": "https://cdn.example.com/final.webp?sig=1"})
        return httpx2.Response(200, headers={"content-type": "image/webp"}, content=b"RIFF....WEBP")

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        saved = await download_output(client, "https://redirector.example/r", tmp_path, resolve=fake_resolve)
    assert hosts == ["redirector.example", "cdn.example.com"]
    assert saved.name.endswith(".webp")
    assert saved.source_url == "https://redirector.example/r"


async def test_too_many_redirects_are_refused(tmp_path: Path) -> None:
    calls = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(302, headers={"location": f"/hop{calls}"})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        with pytest.raises(DownloadError, match="more than 2 redirects"):
            await download_output(
                client, "https://cdn.example.com/start", tmp_path, resolve=fake_resolve, max_redirects=2
            )
    assert calls == 3


# ---------------------------------------------------------------------------------------------
# Download limits and safe writes (tests 17, 20)
# ---------------------------------------------------------------------------------------------


async def fetch(
    tmp_path: Path,
    handler: Callable[[httpx2.Request], httpx2.Response],
    url: str = "https://cdn.example.com/out/result.png",
    **kwargs: Any,
) -> files.SavedOutput:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        with anyio.fail_after(10):
            return await download_output(client, url, tmp_path / "out", resolve=fake_resolve, **kwargs)


async def test_announced_size_over_cap_is_refused_before_reading(tmp_path: Path) -> None:
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b"x"

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "video/mp4", "content-length": str(10**12)}, content=body()
        )

    with pytest.raises(DownloadError, match="over the 1000-byte limit"):
        await fetch(tmp_path, handler, max_bytes=1000)
    assert not read
    assert files_in(tmp_path / "out") == []


async def test_endless_stream_is_cut_at_the_cap_leaving_no_file(tmp_path: Path) -> None:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield bytes(4096)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "audio/wav"}, content=forever())

    with pytest.raises(DownloadError, match="exceeded the 100000-byte limit"):
        await fetch(tmp_path, handler, max_bytes=100_000)
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", "text/plain"])
async def test_non_media_content_types_are_refused(tmp_path: Path, content_type: str) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=b"<html>login</html>")

    with pytest.raises(DownloadError, match="unexpected content type"):
        await fetch(tmp_path, handler)
    assert files_in(tmp_path / "out") == []


async def test_text_html_is_refused_even_if_text_is_allowed(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/html"}, content=b"<html></html>")

    with pytest.raises(DownloadError, match="text/html"):
        await fetch(tmp_path, handler, allowed_types=("text/",))


@pytest.mark.parametrize(
    ("url", "mime", "ext"),
    [
        ("https://cdn.example.com/a/clip.mp4", "video/mp4", ".mp4"),
        ("https://cdn.example.com/a/blob", "application/octet-stream", ".bin"),
    ],
)
async def test_missing_content_type_is_inferred_from_url(
    tmp_path: Path, url: str, mime: str, ext: str
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"data")

    saved = await fetch(tmp_path, handler, url=url)
    assert saved.mime_type == mime
    assert saved.name == name_for(b"data", ext)


async def test_missing_content_type_with_html_suffix_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"<html>")

    with pytest.raises(DownloadError, match="text/html"):
        await fetch(tmp_path, handler, url="https://cdn.example.com/index.html")


@pytest.mark.parametrize(
    ("content_type", "url_path", "ext"),
    [
        ("image/jpeg", "/x", ".jpg"),
        ("audio/mpeg", "/x", ".mp3"),
        ("audio/x-wav", "/x", ".wav"),
        ("audio/wav", "/x", ".wav"),
        ("video/mp4", "/x.mov", ".mp4"),
        ("application/octet-stream", "/model.GLB", ".glb"),
        ("application/octet-stream", "/x.toolongext", ".bin"),
        ("application/octet-stream", "/x.html", ".bin"),
    ],
)
async def test_extension_comes_from_type_or_short_url_suffix(
    tmp_path: Path, content_type: str, url_path: str, ext: str
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=b"abc")

    saved = await fetch(tmp_path, handler, url=f"https://cdn.example.com{url_path}")
    assert saved.name == name_for(b"abc", ext)


async def test_error_mid_stream_leaves_no_partial_file(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield bytes(2 * 1024 * 1024)  # enough to have been flushed to the temp file
        raise httpx2.ReadError("connection reset by peer")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "video/mp4"}, content=broken())

    with pytest.raises(DownloadError, match="mid-download"):
        await fetch(tmp_path, handler)
    assert files_in(tmp_path / "out") == []


async def test_cancelled_download_leaves_no_partial_file(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:

        async def stalls() -> AsyncIterator[bytes]:
            yield bytes(2 * 1024 * 1024)
            scope.cancel()
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, headers={"content-type": "video/mp4"}, content=stalls())

        await fetch(tmp_path, handler)
    assert scope.cancelled_caught
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("status", [404, 500])
async def test_http_errors_name_the_host_but_not_the_query(tmp_path: Path, status: int) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, text="nope")

    with pytest.raises(DownloadError) as info:
        await fetch(
            tmp_path, handler, url="https://cdn.example.com/o.png?X-Amz-Signature=SEKRIT&token=SEKRIT"
        )
    assert f"HTTP {status}" in str(info.value)
    assert "cdn.example.com" in str(info.value)
    assert "SEKRIT" not in str(info.value) + repr(info.value)
    assert files_in(tmp_path / "out") == []


async def test_download_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    first = await fetch(tmp_path, png_handler)
    inode = os.stat(first.path).st_ino
    second = await fetch(tmp_path, png_handler, url="https://cdn.example.com/other/name.png")
    assert second.name == first.name == name_for(PNG, ".png")
    assert os.stat(second.path).st_ino == inode
    assert files_in(tmp_path / "out") == [first.name]


async def test_planted_symlink_at_final_name_is_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (out / name_for(PNG, ".png")).symlink_to(victim)
    saved = await fetch(tmp_path, png_handler)
    assert victim.read_bytes() == b"precious"
    final = Path(saved.path)
    assert not final.is_symlink()
    assert final.read_bytes() == PNG


async def test_provider_file_name_cannot_choose_the_path(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers={
                "content-type": "application/octet-stream",
                "content-disposition": 'attachment; filename="../../.bashrc"',
            },
            content=b"echo pwned",
        )

    saved = await fetch(tmp_path, handler, url="https://cdn.example.com/files/..%2F..%2F.bashrc")
    assert saved.name == name_for(b"echo pwned", ".bin")
    assert Path(saved.path).parent == (tmp_path / "out").resolve()
    assert not list(tmp_path.rglob(".bashrc"))


async def test_output_dir_is_created(tmp_path: Path) -> None:
    saved = await fetch(tmp_path, png_handler)
    assert (tmp_path / "out").is_dir()
    assert output_path(tmp_path / "out", saved.name) == Path(saved.path)


# ---------------------------------------------------------------------------------------------
# output_path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "a\\b", "..", ".", "", "x\x00.png", ".mediamux-0123.part", "missing.png", "sub", "link"],
)
def test_output_path_refuses_anything_but_a_saved_file(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / ".mediamux-0123.part").write_bytes(b"partial")
    (tmp_path / "x").write_bytes(b"outside")
    (out / "link").symlink_to(tmp_path / "x")
    with pytest.raises(FileAccessError):
        output_path(out, name)


def test_output_path_returns_saved_file(tmp_path: Path) -> None:
    (tmp_path / "abc.png").write_bytes(PNG)
    assert output_path(tmp_path, "abc.png") == tmp_path.resolve() / "abc.png"


OUTPUT_NAME_PROBLEMS = {
    "300-byte-name": ("a" * 300 + ".png", "at most 255 bytes"),
    "multibyte-name-over-255-bytes": ("é" * 200 + ".png", "at most 255 bytes; this one is 404"),
    "lone-surrogate": ("x\ud800.png", "not valid Unicode"),
    "newline": ("a\nb.png", "control character"),
    "separator": ("a/b.png", "path separator"),
    "temp-file": (".mediamux-0123456789abcdef.part", "not the name of a saved output"),
}


@pytest.mark.parametrize(("name", "expected"), OUTPUT_NAME_PROBLEMS.values(), ids=OUTPUT_NAME_PROBLEMS.keys())
def test_output_names_no_saved_output_can_have_are_refused_clearly_for_reads_and_writes(
    tmp_path: Path, name: str, expected: str
) -> None:
    for attempt in (
        lambda: files.open_output(tmp_path, name),
        lambda: output_path(tmp_path, name),
        lambda: files.write_output(tmp_path, name, b"data"),
    ):
        with pytest.raises(FileAccessError, match=expected):
            attempt()
    assert files_in(tmp_path) == []


def test_open_output_reads_a_saved_file_and_refuses_links_fifos_and_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.png").write_bytes(PNG)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (out / "link.png").symlink_to(tmp_path / "secret.txt")
    (out / "inside-link.png").symlink_to("a.png")
    os.mkfifo(out / "pipe.png")
    with files.open_output(out, "a.png") as handle:
        assert handle.read() == PNG
    for name, why in [
        ("link.png", "symbolic link"),
        ("inside-link.png", "symbolic link"),
        ("pipe.png", "not a regular saved output"),
        ("sub", "not a regular saved output"),
        ("missing.png", "No saved output named"),
    ]:
        with pytest.raises(FileAccessError, match=why):
            files.open_output(out, name)


def test_write_output_replaces_a_planted_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (out / "talk.vtt").symlink_to(victim)
    written = files.write_output(out, "talk.vtt", b"WEBVTT\n")
    assert victim.read_bytes() == b"precious"
    assert written == out.resolve() / "talk.vtt"
    assert not written.is_symlink() and written.read_bytes() == b"WEBVTT\n"
    # Rewriting with other bytes of the same size replaces them: only downloads are content-addressed.
    files.write_output(out, "talk.vtt", b"WEBVTT\r")
    assert written.read_bytes() == b"WEBVTT\r"
    assert files_in(out) == ["talk.vtt"]


@pytest.fixture
def common_umask() -> Iterator[None]:
    """The usual 022 umask, under which files were created 0644 and folders 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_saved_outputs_and_their_folder_are_private(tmp_path: Path, common_umask: None) -> None:
    saved = await fetch(tmp_path, png_handler)
    vtt = files.write_output(tmp_path / "out", "talk.vtt", b"WEBVTT\n")
    inline = await files.save_output_bytes(b"ID3", tmp_path / "out", media_type="audio/mpeg", source="test")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    for path in (Path(saved.path), vtt, Path(inline.path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_missing_parents_of_the_output_folder_are_created_private(tmp_path: Path, common_umask: None) -> None:
    out = files.prepare_output_dir(tmp_path / "state" / "outputs")
    for folder in (tmp_path / "state", out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_start_up_makes_an_output_folder_left_open_by_earlier_versions_private(
    tmp_path: Path, common_umask: None
) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    assert files.prepare_output_dir(out) == out.resolve()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


@pytest.mark.parametrize("folder", ["/", "/tmp", "/home"])
def test_start_up_refuses_an_output_folder_that_is_too_wide(folder: str) -> None:
    mode = stat.S_IMODE(os.stat(folder).st_mode) if os.path.exists(folder) else None
    with pytest.raises(FileAccessError, match=r"MEDIAMUX_OUTPUT_DIR .* is refused"):
        files.prepare_output_dir(Path(folder))
    if mode is not None:
        assert stat.S_IMODE(os.stat(folder).st_mode) == mode  # never chmod a shared folder


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_start_up_removes_stale_temp_files_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh = out / ".mediamux-00112233445566aa.part", out / ".mediamux-00112233445566bb.part"
    keep = {
        "output.png": 7200,  # an output, however old
        ".mediamux-not-ours.part": 7200,  # not a name we make
        fresh.name: 60,  # may be a download still running in another process
    }
    for name, seconds in {stale.name: 7200, **keep}.items():
        (out / name).write_bytes(b"x")
        age(out / name, seconds)
    (tmp_path / "victim.txt").write_bytes(b"precious")
    stale_link = out / ".mediamux-00112233445566cc.part"
    stale_link.symlink_to(tmp_path / "victim.txt")
    age(stale_link, 7200)

    assert files.prepare_output_dir(out) == out.resolve()

    assert files_in(out) == sorted(keep)
    assert (tmp_path / "victim.txt").read_bytes() == b"precious"
    assert files.remove_stale_temp_files(out, older_than_s=3600, now=time.time() + 3600) == [fresh.name]


def test_download_error_survives_pickling() -> None:
    err = DownloadError("cdn.example.com", "it points at a loopback address", refused=True)
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes, round-tripped
    assert (str(again), again.host, again.refused) == (str(err), "cdn.example.com", True)
    slow = pickle.loads(pickle.dumps(files.DownloadTooSlow("cdn.example.com", "it was too slow")))  # noqa: S301
    assert type(slow) is files.DownloadTooSlow and slow.error_class == "timeout"


def test_escape_messages_say_whether_a_link_was_involved(tree: dict[str, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="through a symbolic link"):
        resolve_allowed_path("link_out", [tree["allowed"]])
    with pytest.raises(PathNotAllowed, match="is outside the allowed folders"):
        resolve_allowed_path("../outside/secret.txt", [tree["allowed"]])
