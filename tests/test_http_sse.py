"""2025-11-25 HTTP streams are resumable: each opens with a priming event (an id, empty data and a
``retry`` hint), and a client whose stream broke gets what it missed by reconnecting with
``Last-Event-ID`` — its own session's events, never another's. Over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.config import Settings
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server.app import MediamuxServer
from mediamux.server.http import build_http_app
from mediamux.server.sse_events import RETRY_MS

LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


@dataclass
class Event:
    id: str | None = None
    data: str = ""
    retry: int | None = None
    fields: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def events_of(text: str) -> list[Event]:
    """Server-sent events, as a browser's EventSource would read them."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip() or all(line.startswith(":") for line in block.splitlines()):
            continue
        event = Event()
        for line in block.splitlines():
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event.fields.append(name)
            if name == "id":
                event.id = value
            elif name == "data":
                event.data = f"{event.data}\n{value}" if event.data else value
            elif name == "retry":
                event.retry = int(value)
        found.append(event)
    return found


@pytest.fixture
async def mcp_url(
    make_server: Callable[..., MediamuxServer], make_settings: Callable[..., Settings]
) -> AsyncIterator[str]:
    app = build_http_app(make_server(), make_settings(), host="127.0.0.1", port=0)
    async with serve_on_loopback(app) as base:
        yield f"{base}/mcp"


async def post(http: httpx2.AsyncClient, url: str, body: dict[str, Any], session: str | None = None) -> Any:
    headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": LEGACY}
    if session:
        headers["mcp-session-id"] = session
    with anyio.fail_after(10):
        return await http.post(url, json=body, headers=headers)


async def open_session(http: httpx2.AsyncClient, url: str) -> tuple[str, list[Event]]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    answer = await post(http, url, init)
    session = answer.headers["mcp-session-id"]
    await post(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    return session, events_of(answer.text)


@pytest.mark.providers("muapi")
async def test_every_2025_stream_opens_with_a_priming_event_and_a_retry_hint(mcp_url: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        session, opening = await open_session(http, mcp_url)
        listed = events_of(
            (await post(http, mcp_url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)).text
        )

    for stream, request_id in ((opening, 0), (listed, 1)):
        priming, answer = stream
        assert priming.id and priming.data == "" and priming.retry == RETRY_MS, priming
        assert answer.id and answer.id != priming.id
        assert answer.json()["id"] == request_id and "result" in answer.json()
    assert opening[0].id != listed[0].id


@pytest.mark.providers("muapi")
async def test_a_resumed_stream_replays_its_own_sessions_events_and_no_one_elses(mcp_url: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        alice, _ = await open_session(http, mcp_url)
        bob, _ = await open_session(http, mcp_url)
        # The same request id in both sessions: one stream name in the SDK's eyes.
        alice_priming = events_of(
            (await post(http, mcp_url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, alice)).text
        )[0]
        bob_priming = events_of(
            (await post(http, mcp_url, {"jsonrpc": "2.0", "id": 1, "method": "prompts/list"}, bob)).text
        )[0]

        async def resume(session: str, last_event_id: str) -> list[Event]:
            headers = {
                "accept": "text/event-stream",
                "mcp-protocol-version": LEGACY,
                "mcp-session-id": session,
                "last-event-id": last_event_id,
            }
            seen = ""
            with anyio.fail_after(10):
                async with http.stream("GET", mcp_url, headers=headers) as stream:
                    async for chunk in stream.aiter_text():
                        seen += chunk
                        # The replay is followed by the live stream, which stays open: stop at the answer.
                        if any(e.data for e in events_of(seen)):
                            break
            return events_of(seen)

        replayed = [e.json() for e in await resume(alice, alice_priming.id or "") if e.data]
        foreign = await resume(bob, alice_priming.id or "")

    assert len(replayed) == 1 and replayed[0]["id"] == 1 and "tools" in replayed[0]["result"], replayed
    assert "prompts" not in json.dumps(replayed)
    assert [e for e in foreign if e.data] == []  # Alice's event id means nothing in Bob's session
    assert bob_priming.id != alice_priming.id
