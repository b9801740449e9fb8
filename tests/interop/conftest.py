"""Fixtures for the interoperability tests (standard library and pytest only: see ``_support.py``).

``scripts/interop.sh`` installs the clients and runs these files with ``--confcutdir=tests/interop``,
so the main suite's ``tests/conftest.py`` (which imports mediamux) is not loaded here. With
``INTEROP_STRICT=1`` (set by interop.sh) a missing client fails its tests instead of skipping them,
so CI cannot go green on tests that never ran.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import MEDIAMUX_BIN, HttpServer, missing, sandbox_env, start_http_server, stop


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Agents SDK and the LangChain adapters are asyncio libraries


@pytest.fixture(scope="session")
def mediamux_bin() -> Path:
    if not os.access(MEDIAMUX_BIN, os.X_OK):
        missing(f"the server executable {MEDIAMUX_BIN}", "scripts/test.sh creates .venv")
    return MEDIAMUX_BIN


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    return sandbox_env(tmp_path)


@pytest.fixture(scope="module")
def http_server(mediamux_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One token-protected ``mediamux serve --sandbox --transport http`` for the module's HTTP tests."""
    server = start_http_server(mediamux_bin, tmp_path_factory.mktemp("http"), secrets.token_hex(16))
    try:
        yield server
    finally:
        stop(server.proc)
