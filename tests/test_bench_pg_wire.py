"""The replicas benchmark reports PostgreSQL round trips as counted by ``bench/pg_wire.py``: one per
request cycle (the server's ReadyForQuery), with statements, empty queries, notifications and new
connections beside. These tests hold it to that: on a server stream cut at any byte, and through a
real relay in front of a real cluster, against what psycopg was asked to do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from bench.pg_wire import ServerStream

from tests.pg_cluster import Cluster

REPO = Path(__file__).resolve().parents[1]
READ_TIMEOUT_S = 30


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


# A connection's start-up, a query with a 70 kB row, an empty query, and a notice pushed to a listener.
CONVERSATION = b"".join(
    [
        message(b"R", bytes(4)),
        message(b"S", b"server_version\x0015\x00"),
        message(b"K", bytes(8)),
        message(b"Z", b"I"),
        message(b"1"),
        message(b"2"),
        message(b"T", b"t" * 30),
        message(b"D", b"d" * 70_000),
        message(b"C", b"SELECT 1\x00"),
        message(b"Z", b"I"),
        message(b"I"),
        message(b"Z", b"I"),
        message(b"A", bytes(4) + b"mediamux_job\x00job_1\x00"),
    ]
)


@pytest.mark.unit
@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 4096, len(CONVERSATION)])
def test_the_relay_counts_each_message_once_however_the_server_stream_arrives(cut: int) -> None:
    counts: Counter[str] = Counter()
    stream = ServerStream(counts)
    for start in range(0, len(CONVERSATION), cut):
        stream.feed(CONVERSATION[start : start + cut])

    assert counts == {
        "connections": 1,
        "round_trips": 3,
        "statements": 1,
        "empty_queries": 1,
        "notifications": 1,
    }


@pytest.mark.unit
def test_the_relay_counts_nothing_on_a_connection_that_negotiated_encryption() -> None:
    counts: Counter[str] = Counter()
    stream = ServerStream(counts)
    stream.feed(b"N")  # the unframed answer to an SSLRequest
    stream.feed(message(b"R", bytes(4)) + message(b"Z", b"I"))

    assert counts == {"unframed_connections": 1}


async def _line(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    assert proc.stdout is not None
    with anyio.fail_after(READ_TIMEOUT_S):
        line = await anyio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    return dict(json.loads(line))


async def test_round_trips_through_the_relay_are_the_request_cycles_psycopg_made(pg_cluster: Cluster) -> None:
    import psycopg
    from psycopg_pool import ConnectionPool

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.pg_wire", str(pg_cluster.port)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        port = (await _line(proc))["port"]
        url = f"postgresql://{pg_cluster.superuser}@127.0.0.1:{port}/postgres?sslmode=disable&gssencmode=disable"
        with psycopg.connect(url, autocommit=True) as conn:
            proc.send_signal(signal.SIGUSR1)
            before = await _line(proc)
            conn.execute("SELECT 1")  # one round trip
            with conn.transaction():  # BEGIN, two statements, COMMIT: four
                conn.execute("SELECT 1")
                conn.execute("SELECT 2")
            ConnectionPool.check_connection(conn)  # the pool's liveness check: one, empty
            proc.send_signal(signal.SIGUSR1)
            after = await _line(proc)
    finally:
        proc.terminate()
        proc.wait(timeout=READ_TIMEOUT_S)

    assert before["connections"] == 1
    assert {k: after.get(k, 0) - before.get(k, 0) for k in after} == {
        "connections": 0,
        "round_trips": 6,
        "statements": 5,
        "empty_queries": 1,
    }
