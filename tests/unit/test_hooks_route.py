"""The webhook route's own guards (server.hooks): what reaches the engine, and what is refused before it.
In-process ASGI, with a stand-in engine that records what it was asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from mediamux.server.hooks import MAX_BODY_BYTES, MISS_BURST, HookReceiver, TokenBucket

JOB = "job_abcdefghijklmnop"
GOOD = "t" * 32


class Engine:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def wake(self, job_id: str, token: str) -> bool:
        self.asked.append((job_id, token))
        return (job_id, token) == (JOB, GOOD)


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def receiver(engine: Engine) -> HookReceiver:
    return HookReceiver(SimpleNamespace(services=SimpleNamespace(engine=engine)))  # type: ignore[arg-type]


@pytest.fixture
async def post(receiver: HookReceiver) -> AsyncIterator[Any]:
    app = Starlette(routes=[receiver.route()])
    clients: dict[str, httpx2.AsyncClient] = {}

    async def send(path: str, *, client: str = "203.0.113.7", **kwargs: Any) -> httpx2.Response:
        if client not in clients:
            transport = httpx2.ASGITransport(app=app, client=(client, 4000))
            clients[client] = httpx2.AsyncClient(transport=transport, base_url="http://mediamux.test")
        return await clients[client].post(path, **kwargs)

    yield send
    for c in clients.values():
        await c.aclose()


async def test_a_webhook_with_the_right_token_wakes_its_job_and_nothing_of_its_body_is_passed_on(
    post: Any, engine: Engine
) -> None:
    answer = await post(f"/hooks/{JOB}/{GOOD}", json={"status": "completed", "cost": {"amount_usd": 0}})

    assert answer.status_code == 204 and answer.content == b""
    assert engine.asked == [(JOB, GOOD)]


async def test_malformed_ids_are_refused_without_asking_the_engine(post: Any, engine: Engine) -> None:
    answers = [
        await post(f"/hooks/not-a-job/{GOOD}"),
        await post(f"/hooks/{JOB}/short"),
        await post(f"/hooks/{JOB}/{'x' * 200}"),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert engine.asked == []


async def test_a_client_that_keeps_guessing_is_refused_for_a_while_even_with_the_right_token(
    post: Any, engine: Engine
) -> None:
    misses = [await post(f"/hooks/{JOB}/{'g' * 31}{i % 10}") for i in range(int(MISS_BURST))]
    refused = await post(f"/hooks/{JOB}/{GOOD}")
    someone_else = await post(f"/hooks/{JOB}/{GOOD}", client="198.51.100.2")

    assert {m.status_code for m in misses} == {404}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert someone_else.status_code == 204
    assert len(engine.asked) == int(MISS_BURST) + 1  # the refused one never reached the engine


async def test_a_flood_of_webhooks_is_rate_limited_as_a_whole(post: Any, receiver: HookReceiver) -> None:
    receiver.all = TokenBucket(rate=0.01, burst=3)

    answers = [await post(f"/hooks/{JOB}/{GOOD}", client=f"192.0.2.{i}") for i in range(5)]

    assert [a.status_code for a in answers] == [204, 204, 204, 429, 429]
    assert answers[-1].headers["retry-after"].isdigit()


async def test_oversized_bodies_are_refused_whether_declared_or_streamed(post: Any, engine: Engine) -> None:
    declared = await post(f"/hooks/{JOB}/{GOOD}", content=b"x" * (MAX_BODY_BYTES + 1))

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b"y" * 1024

    streamed = await post(f"/hooks/{JOB}/{GOOD}", content=stream())

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert engine.asked == []


async def test_before_the_server_is_ready_webhooks_are_asked_to_come_back(engine: Engine) -> None:
    receiver = HookReceiver(SimpleNamespace(services=None))  # type: ignore[arg-type]
    transport = httpx2.ASGITransport(app=Starlette(routes=[receiver.route()]))
    async with httpx2.AsyncClient(transport=transport, base_url="http://mediamux.test") as client:
        answer = await client.post(f"/hooks/{JOB}/{GOOD}")

    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_the_public_url_must_be_https_except_on_loopback() -> None:
    from pydantic import ValidationError

    from mediamux.config import Settings

    assert (
        Settings(MEDIAMUX_PUBLIC_URL="https://mm.example.com/base/").public_url
        == "https://mm.example.com/base"
    )
    assert Settings(MEDIAMUX_PUBLIC_URL="http://127.0.0.1:8765").public_url == "http://127.0.0.1:8765"
    assert Settings(MEDIAMUX_PUBLIC_URL="  ").public_url is None
    for bad in (
        "http://mm.example.com",
        "ftp://mm.example.com",
        "https://mm.example.com/?x=1",
        "mm.example.com",
    ):
        with pytest.raises(ValidationError, match="MEDIAMUX_PUBLIC_URL"):
            Settings(MEDIAMUX_PUBLIC_URL=bad)
