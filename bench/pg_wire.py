"""``python -m bench.pg_wire PORT``: a loopback TCP relay in front of PostgreSQL that counts round trips.

Listens on a free loopback port (printed as one JSON line on stdout), relays every connection to
``127.0.0.1:PORT`` byte for byte, and reads the server's side of each conversation as protocol
messages. On SIGUSR1 it prints, as one JSON line, how many of each it has seen since it started;
it runs until SIGTERM or SIGINT.

A round trip is one ``ReadyForQuery`` (``Z``): the server sends exactly one at the end of every
request cycle a client starts (a simple query, or an extended-protocol batch up to its ``Sync``),
and once when a new connection is ready. So whatever a driver or pool does (``BEGIN``/``COMMIT``,
a pool's liveness check, ``LISTEN``), it is counted, and counted once. ``CommandComplete`` (``C``)
counts statements, ``EmptyQueryResponse`` (``I``) empty queries (psycopg_pool's liveness check),
``NotificationResponse`` (``A``) notices pushed to listeners, ``BackendKeyData`` (``K``) connections.

Clients must connect with ``sslmode=disable&gssencmode=disable``: an encryption request is answered
with a single unframed byte, which this relay does not expect (and says so rather than miscount).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter

COUNTED = {b"Z"[0]: "round_trips", b"C"[0]: "statements", b"I"[0]: "empty_queries", b"A"[0]: "notifications"}
CONNECTION = b"K"[0]
FIRST_BYTES = {b"R"[0], b"E"[0]}  # Authentication, or an error refusing the startup
CHUNK = 1 << 16


class ServerStream:
    """Frames the server's side of one connection: a type byte, a 4-byte length (itself included), a body."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.header = bytearray()
        self.skip = 0  # bytes of the current message's body still to pass over
        self.started = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        if not self.started and end:
            self.started = True
            if view[0] not in FIRST_BYTES:
                self.counts["unframed_connections"] += 1
                self.skip = -1  # not a conversation this relay can read: count nothing on it
        if self.skip < 0:
            return
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            need = 5 - len(self.header)
            self.header += view[pos : pos + need]
            pos += min(need, end - pos)
            if len(self.header) < 5:
                return
            kind, length = self.header[0], int.from_bytes(self.header[1:5], "big")
            self.header.clear()
            self.skip = length - 4
            name = COUNTED.get(kind)
            if name is not None:
                self.counts[name] += 1
            elif kind == CONNECTION:
                self.counts["connections"] += 1


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ServerStream | None
) -> None:
    try:
        while data := await reader.read(CHUNK):
            if stream is not None:
                stream.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(upstream_port: int) -> None:
    counts: Counter[str] = Counter()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, None), _pump(server_r, client_w, ServerStream(counts)))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(dict(counts)), flush=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with server:
        print(json.dumps({"port": port}), flush=True)
        await stopping.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m bench.pg_wire UPSTREAM_PORT", file=sys.stderr)
        return 2
    asyncio.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
