"""The output folder through the real server: it cannot be turned against the user.

Whatever else lands in the output folder (a planted symbolic link, a link swapped in while a read is
under way), reads through ``mediamux://outputs/…`` serve only files inside it, and writes never go
through an existing path.
"""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import BlobResourceContents

from mediamux.sandbox.media import wav_sequence_bytes
from mediamux.server.app import MediamuxServer

SECRET = b"OUTSIDE-SECRET-" * 8
INSIDE = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
SPEECH_WAV = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])


@contextmanager
def swapping(target: Path, inside: bytes, outside: Path, *, max_swaps: int = 200_000) -> Iterator[list[int]]:
    """A thread that keeps replacing ``target`` with a link to ``outside`` and back with a regular file.

    Each replacement is an atomic rename, so the name always exists: readers see either the file or
    the link, which is the window a hostile program sharing the folder would aim for.
    """
    stop = threading.Event()
    swaps = [0]
    link_tmp, file_tmp = target.with_name(".swap-link"), target.with_name(".swap-file")

    def run() -> None:
        while not stop.is_set() and swaps[0] < max_swaps:
            for path in (link_tmp, file_tmp):
                path.unlink(missing_ok=True)
            link_tmp.symlink_to(outside)
            os.replace(link_tmp, target)
            file_tmp.write_bytes(inside)
            os.replace(file_tmp, target)
            swaps[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield swaps
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.faults
async def test_output_reads_never_serve_a_file_outside_while_a_link_is_swapped_in(
    make_server: Callable[..., MediamuxServer], home: Path, tmp_path: Path
) -> None:
    outputs = home / "outputs"
    outputs.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    (outputs / "a.png").write_bytes(INSIDE)
    served: list[bytes] = []
    refused = 0
    async with Client(make_server()) as client:
        with swapping(outputs / "a.png", INSIDE, secret) as swaps, anyio.fail_after(60):
            for _ in range(400):
                try:
                    read = await client.read_resource("mediamux://outputs/a.png")
                except MCPError:
                    refused += 1
                    continue
                content = read.contents[0]
                assert isinstance(content, BlobResourceContents)
                served.append(base64.b64decode(content.blob))
    assert swaps[0] > 0
    outside_reads = sum(1 for data in served if data == SECRET)
    assert outside_reads == 0, f"{outside_reads} of 400 reads returned the outside file"
    assert all(data == INSIDE for data in served)
    assert refused + len(served) == 400
    assert served, "every read was refused: the race test no longer exercises a successful read"


async def test_output_read_refuses_a_planted_link_with_a_clear_error(
    make_server: Callable[..., MediamuxServer], home: Path, tmp_path: Path
) -> None:
    outputs = home / "outputs"
    outputs.mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (outputs / "b.png").symlink_to(tmp_path / "secret.txt")
    async with Client(make_server()) as client:
        with anyio.fail_after(10), pytest.raises(MCPError, match="not a regular saved output"):
            await client.read_resource("mediamux://outputs/b.png")


async def ok(client: Client, name: str, args: dict[str, object]) -> dict[str, object]:
    with anyio.fail_after(30):
        result = await client.call_tool(name, args)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    assert not result.is_error, text
    return dict(result.structured_content or {})


async def test_auto_subtitles_never_write_through_a_planted_link(
    make_server: Callable[..., MediamuxServer], home: Path, files_dir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (files_dir / "talk.wav").write_bytes(SPEECH_WAV)
    async with Client(make_server()) as client:
        video = await ok(client, "museai_upload_video", {"path": "talk.wav"})
        planted = home / "outputs" / f"{video['svid']}-English.vtt"
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.symlink_to(victim)

        made = await ok(client, "museai_auto_subtitles", {"svid": video["svid"], "name": "English"})

    assert victim.read_bytes() == b"precious"
    written = Path(str(made["vtt_path"]))
    assert written == planted and not written.is_symlink()
    assert written.read_text(encoding="utf-8") == made["vtt"]
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


async def test_a_5000_character_output_name_gets_a_clear_error_not_an_internal_one(
    make_server: Callable[..., MediamuxServer], home: Path
) -> None:
    (home / "outputs").mkdir(parents=True)
    async with Client(make_server()) as client:
        with anyio.fail_after(10), pytest.raises(MCPError) as info:
            await client.read_resource("mediamux://outputs/" + "a" * 5000 + ".png")
    assert "Internal" not in str(info.value)
    assert "at most 255 bytes" in str(info.value)
