"""The per-session SSE event store behind the priming event: replay stays within its session, and
memory stays within its budget without leaving a gap in any stream."""

from __future__ import annotations

from typing import Any

from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCResponse

from mediamux.server.sse_events import EventBuffer, resumable_sessions


def response(request_id: int, text: str) -> JSONRPCResponse:
    return JSONRPCResponse(jsonrpc="2.0", id=request_id, result={"text": text})


async def replay(store: Any, last_event_id: str) -> tuple[str | None, list[str]]:
    got: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        got.append(event)

    stream = await store.replay_events_after(last_event_id, send)
    return stream, [e.message.result["text"] for e in got]  # type: ignore[union-attr]


async def test_two_sessions_with_the_same_request_id_replay_only_their_own_events() -> None:
    buffer = EventBuffer()
    alice, bob = buffer.session(), buffer.session()

    alice_priming = await alice.store_event("1", None)
    bob_priming = await bob.store_event("1", None)
    await alice.store_event("1", response(1, "alice's result"))
    await bob.store_event("1", response(1, "bob's result"))

    assert await replay(alice, alice_priming) == ("1", ["alice's result"])
    assert await replay(bob, bob_priming) == ("1", ["bob's result"])
    # Another session's event id is unknown here, as if it had never existed.
    assert await replay(alice, bob_priming) == (None, [])
    assert alice_priming != bob_priming


async def test_the_oldest_events_go_first_once_the_budget_is_spent_so_a_replay_has_no_gap() -> None:
    clock = [0.0]
    buffer = EventBuffer(max_bytes=1000, max_age_s=60, now=lambda: clock[0])
    store = buffer.session()

    first = await store.store_event("1", None)
    ids = [await store.store_event("1", response(1, f"part {n} " + "x" * 100)) for n in range(20)]

    assert buffer.size <= 1000
    assert await replay(store, first) == (None, [])  # evicted: nothing, rather than a partial stream
    stream, replayed = await replay(store, ids[-3])
    assert stream == "1" and [t.split()[1] for t in replayed] == ["18", "19"]

    clock[0] = 61.0
    await store.store_event("2", None)
    assert len(buffer) == 1  # everything older than the age limit went


async def test_sessions_get_their_own_store_only_where_the_sdk_admits_them_as_expected() -> None:
    class Transport:
        _event_store = None

    class Manager:
        event_store = None

        def _admit_session(self, requestor: Any) -> Transport:
            return Transport()

    manager = Manager()
    assert resumable_sessions(manager) is True
    one, two = manager._admit_session(None), manager._admit_session(None)
    assert one._event_store is not None and one._event_store is not two._event_store

    class Unexpected:
        event_store = None

    assert resumable_sessions(Unexpected()) is False
