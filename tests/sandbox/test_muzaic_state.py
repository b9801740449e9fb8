"""The Muzaic emulator keeps the account's tokens and every generated piece (its hash) across a restart.

Each "restart" is a new emulator on the same state folder, served on a new loopback port.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muzaic import MuzaicEmulator
from tests.sandbox.conftest import FakeNow, assert_private

# They serve the emulator on a real loopback socket (restarts on a new port), so not unit tests.
pytestmark = pytest.mark.loopback

KEY = "sandbox-muzaic-key"


def start(now: FakeNow, state: Path, **options: Any) -> MuzaicEmulator:
    return MuzaicEmulator(now=now, state_dir=state, **options)


@asynccontextmanager
async def served(emulator: MuzaicEmulator) -> AsyncIterator[httpx2.AsyncClient]:
    async with serve_on_loopback(emulator.app) as url:
        emulator.base_url = url
        async with httpx2.AsyncClient(base_url=url, headers={"MuzaicAPI-Secret-Key": KEY}) as client:
            yield client
    emulator.close()


async def ok(client: httpx2.AsyncClient, path: str, body: Any) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def wav_of(data_url: str) -> bytes:
    return base64.b64decode(data_url.partition(",")[2])


async def test_tokens_and_generated_pieces_survive_a_restart(tmp_path: Path, now: FakeNow) -> None:
    with anyio.fail_after(30):
        async with served(start(now, tmp_path)) as client:
            single = await ok(client, "/singleFile", {"duration": 30, "tags": [1]})
            track = await ok(
                client,
                "/soundtrack",
                {"regions": [{"time": 0, "duration": 5, "action": "generate"}]},
            )
            before = (await client.get("/accountDetails")).json()

        async with served(start(now, tmp_path)) as client:
            after = (await client.get("/accountDetails")).json()
            again = await ok(client, "/audioFromHash", {"sourceHash": single["hash"]})
            copied = await ok(
                client,
                "/soundtrack",
                {
                    "regions": [
                        {"time": 0, "duration": 5, "action": "copy", "sourceHash": track["regionHashes"][0]}
                    ]
                },
            )
            spent = (await client.get("/accountDetails")).json()

    assert (after["tokensRemaining"], after["tokensUsed"]) == (3600 - 35, 35)
    assert after == before
    assert wav_of(again["mp3"]) == wav_of(single["mp3"])
    assert copied["tokensUsed"] == 5
    assert (spent["tokensRemaining"], spent["tokensUsed"]) == (3600 - 70, 70)


async def test_an_old_style_result_url_is_served_after_a_restart_on_the_new_port(
    tmp_path: Path, now: FakeNow
) -> None:
    with anyio.fail_after(30):
        first = start(now, tmp_path, generation="old")
        async with served(first) as client:
            made = await ok(client, "/singleFile", {"duration": 3})
            original = (await client.get(made["mp3"])).content
        second = start(now, tmp_path, generation="old")
        async with served(second) as client:
            moved = made["mp3"].replace(first.base_url, second.base_url)
            fetched = await client.get(moved)

    assert fetched.status_code == 200
    assert fetched.content == original


async def test_a_balance_set_by_hand_is_kept_and_state_files_are_private(
    tmp_path: Path, now: FakeNow
) -> None:
    state = tmp_path / "sandbox" / "muzaic"
    emulator = start(now, state)
    emulator.tokens = 9
    emulator.close()
    with anyio.fail_after(30):
        async with served(start(now, state)) as client:
            refused = await client.post("/singleFile", json={"duration": 10})
            await ok(client, "/singleFile", {"duration": 9})
            left = (await client.get("/accountDetails")).json()["tokensRemaining"]

    assert refused.status_code == 402 and left == 0
    assert_private(state)
