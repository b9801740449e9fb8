"""Helpers shared by the interoperability tests (standard library and pytest only).

These tests run in several virtualenvs (the project's ``.venv``, ``.interop/agents``,
``.interop/langchain``), so nothing here imports mediamux or a particular ``mcp`` major. The server
under test is always an executable ``mediamux`` (the project's own ``.venv`` unless
``INTEROP_MEDIAMUX`` says otherwise), spawned as a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INTEROP_DIR = Path(os.environ.get("INTEROP_DIR", REPO / ".interop"))
MEDIAMUX_BIN = Path(os.environ.get("INTEROP_MEDIAMUX", REPO / ".venv" / "bin" / "mediamux"))

SPAWN_TIMEOUT_S = 30.0  # interpreter start + imports + sandbox start, with room for a slow CI box
CALL_TIMEOUT_S = 60.0  # one client session end to end: spawn, handshake, a few requests
READY_POLL_S = 0.1
IMAGE_ENDPOINT = "flux-schnell-image"  # the cheapest, fastest emulated MuAPI model ($0.003, ~4 s)
CORE_TOOLS = {"muapi_generate", "muapi_get_balance", "jobs_wait", "jobs_get", "jobs_list"}


def missing(what: str, hint: str) -> None:
    """Skip (or, under INTEROP_STRICT=1, fail) because a client or the server is not installed."""
    reason = f"{what} is not installed ({hint}); scripts/interop.sh installs it"
    if os.environ.get("INTEROP_STRICT") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def sandbox_env(root: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus provider keys and mediamux settings, plus an isolated state folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY")
        and not k.startswith(("MEDIAMUX_", "MUAPI_", "MUSEAI_", "MUZAIC_", "MIXPEEK_"))
    }
    (root / "home").mkdir(parents=True, exist_ok=True)
    env["MEDIAMUX_HOME"] = str(root / "home")
    env["MEDIAMUX_ALLOWED_DIRS"] = str(root)
    env.update(extra)
    return env


def generate_args(prompt: str, wait_s: float = 0) -> dict[str, Any]:
    """A cheap ``muapi_generate`` call that returns at once with a queued/running job (``wait_s: 0``)."""
    return {"endpoint": IMAGE_ENDPOINT, "params": {"prompt": prompt}, "wait_s": wait_s}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass(frozen=True)
class HttpServer:
    base_url: str
    token: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def wait_until_healthy(server: HttpServer, timeout_s: float = SPAWN_TIMEOUT_S) -> dict[str, Any]:
    """GET /healthz (no token needed) until it answers 200, bounded by ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.stderr()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return dict(json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz did not answer within {timeout_s} s:\n{server.stderr()}")
        # Waiting on the process itself: it returns at once if the server dies while starting.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=READY_POLL_S)


def start_http_server(mediamux_bin: Path, root: Path, token: str) -> HttpServer:
    """Spawn ``mediamux serve --sandbox --transport http`` on a free loopback port and wait for /healthz.

    The caller owns the process: stop it with :func:`stop` in a ``finally`` block.
    """
    port = free_port()
    stderr_path = root / "server.stderr"
    with stderr_path.open("wb") as errlog:  # a file, so logs can never fill a pipe and stall the server
        proc = subprocess.Popen(
            [str(mediamux_bin), "serve", "--sandbox", "--transport", "http", "--port", str(port)],
            env=sandbox_env(root, MEDIAMUX_HTTP_TOKEN=token),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
    server = HttpServer(f"http://127.0.0.1:{port}", token, proc, stderr_path)
    try:
        health = wait_until_healthy(server)
        assert health["status"] == "ok", health
    except BaseException:
        stop(proc)
        raise
    return server
