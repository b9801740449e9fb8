"""``python -m bench.emulator_host museai``: one emulator in a process of its own, like a real host.

Serves the muse.ai emulator (files host and jobs host) on loopback, prints its URLs as one JSON
line on stdout, and runs until SIGTERM or SIGINT, then stops the servers and removes the
emulator's stored files. Used where the emulator's own memory must not count toward what is
measured (the upload benchmark).
"""

from __future__ import annotations

import json
import signal
import sys

import anyio

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.museai import MuseaiEmulator


async def serve_museai() -> None:
    emulator = MuseaiEmulator()
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with (
                serve_on_loopback(emulator.app) as files_url,
                serve_on_loopback(emulator.jobs_app) as jobs_url,
            ):
                emulator.base_url, emulator.jobs_base_url = files_url, jobs_url
                print(json.dumps({"museai": files_url, "museai_jobs": jobs_url}), flush=True)
                async for _ in signals:
                    break
    finally:
        emulator.close()


def main(argv: list[str]) -> int:
    if argv != ["museai"]:
        print("usage: python -m bench.emulator_host museai", file=sys.stderr)
        return 2
    anyio.run(serve_museai)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
