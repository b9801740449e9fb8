"""``python -m bench.sqlite_count serve …``: ``mediamux serve`` that counts the SQLite statements it runs.

Every ``sqlite3.connect`` of the process gets a trace callback (SQLite's statement trace: every
statement stepped, the journal's explicit ``BEGIN IMMEDIATE``/``COMMIT`` included), counted per
database file. On SIGUSR1 the counts are written, with a sequence number, to the JSON file named by
``BENCH_SQLITE_COUNTS`` (replaced atomically), so the bench can read them at any moment of a run.
The server itself is mediamux's own CLI, unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

_counts: Counter[str] = Counter()
# Re-entrant: the SIGUSR1 handler runs on the main thread, which may be inside a trace callback.
_lock = threading.RLock()
_snapshots = 0


def _counting_connect(connect: Any) -> Any:
    def wrapper(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(database, *args, **kwargs)
        name = Path(os.fsdecode(database)).name

        def traced(_statement: str) -> None:
            with _lock:
                _counts[name] += 1

        conn.set_trace_callback(traced)
        return conn

    return wrapper


def _snapshot(path: Path) -> None:
    global _snapshots
    with _lock:
        _snapshots += 1
        data = {"seq": _snapshots, "statements": dict(_counts)}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def main(argv: list[str]) -> int:
    path = Path(os.environ["BENCH_SQLITE_COUNTS"])
    sqlite3.connect = _counting_connect(sqlite3.connect)
    signal.signal(signal.SIGUSR1, lambda *_: _snapshot(path))
    from mediamux.cli import main as mediamux_main

    return mediamux_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
