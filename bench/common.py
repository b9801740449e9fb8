"""What every benchmark shares: the result row, the run's sizes, statistics, and process helpers.

Processes: every subprocess is started inside a context manager whose ``finally`` stops it
(terminate, bounded wait, kill), and every wait on another process is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

OUT = Path(__file__).resolve().parent / "out"
LOGS = OUT / "logs"
HTTP_TOKEN = "bench-token"
MUAPI_KEY = "sandbox-muapi-key"
MUSEAI_KEY = "sandbox-museai-key"
MIB = 1024 * 1024
GIB = 1024 * MIB

SPAWN_TIMEOUT_S = 60.0  # interpreter start, imports and sandbox start on a busy 2-core machine
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0  # any one MCP request, the handshake included


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: mediamux (``value``) against a baseline measured in the same run."""

    bench: str
    metric: str
    value: float | None
    baseline: float | None
    unit: str
    baseline_is: str
    note: str = ""  # shown instead of a number when something could not be measured

    @property
    def ratio(self) -> float | None:
        # A baseline that shows as zero at the table's precision makes any ratio meaningless.
        if self.value is None or self.baseline is None or round(self.baseline, 1) == 0:
            return None
        return self.value / self.baseline


@dataclass
class Section:
    """A benchmark's rows plus the notes that say how to read them."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    quick: bool
    work: Path  # scratch folder for this run (under bench/out, removed at the end)
    cold_runs: int
    calls: int
    warmup_calls: int
    upload_bytes: int
    jobs: int
    job_seconds: float
    submissions: int

    @classmethod
    def make(cls, quick: bool, work: Path) -> Config:
        if quick:
            return cls(
                quick, work, cold_runs=5, calls=50, warmup_calls=5, upload_bytes=64 * MIB, jobs=20,
                job_seconds=10.0, submissions=200,
            )  # fmt: skip
        return cls(
            quick, work, cold_runs=10, calls=500, warmup_calls=20, upload_bytes=GIB, jobs=200,
            job_seconds=10.0, submissions=5000,
        )  # fmt: skip


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- formatting ---------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("tokens", "chars"):
        return f"{value:,.0f}"
    if unit in ("ms", "µs"):
        return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit in ("MiB", "MiB/s"):
        return f"{value:,.1f} {unit}"
    return f"{value:,.2f} {unit}".strip()


# -- environment --------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without provider keys or mediamux settings, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("MEDIAMUX_")
    }
    env.update(extra)
    return env


def mediamux_env(root: Path, **extra: str) -> dict[str, str]:
    """A server environment with its own state folder and allowed folder, and its own TMPDIR (the
    sandbox's emulators store files there, and an HTTP server stopped by a signal leaves them)."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    return clean_env(
        MEDIAMUX_HOME=str(root / "home"), MEDIAMUX_ALLOWED_DIRS=str(root), TMPDIR=str(root / "tmp"), **extra
    )


def mediamux_cmd(*args: str, module: str = "mediamux") -> list[str]:
    """``module``: a launcher that wraps mediamux's CLI (bench.sqlite_count), else mediamux itself."""
    return [sys.executable, "-m", module, "serve", *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_path(name: str) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}.stderr"


# -- /proc --------------------------------------------------------------------------------------


def child_pids() -> set[int]:
    """Direct children of this process (every thread's children file)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def memory(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- processes ----------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def spawned(cmd: list[str], *, env: dict[str, str], log: Path, stdout: int | None = None) -> Iterator[Any]:
    """A subprocess that is always stopped on the way out."""
    with log.open("ab") as errlog:
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=stdout or subprocess.DEVNULL, stderr=errlog
        )
    try:
        yield proc
    finally:
        stop(proc)


@asynccontextmanager
async def mcp_stdio(
    cmd: list[str],
    *,
    env: dict[str, str],
    log: Path,
    mode: str = "auto",
    cwd: Path | None = None,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> AsyncIterator[tuple[Client, int | None]]:
    """An SDK ``Client`` over stdio to a spawned server, with the server's pid (for /proc).

    Every request, the handshake included, is bounded by ``request_timeout_s``. The SDK's stdio
    transport stops the server when the block exits (stdin closed, then a bounded wait, then the
    process tree is killed), also when the block raises.
    """
    before = child_pids()
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env, cwd=cwd)
    with log.open("a") as errlog:
        transport = stdio_client(params, errlog=errlog)
        async with Client(transport, mode=mode, read_timeout_seconds=request_timeout_s) as client:  # type: ignore[arg-type]
            new = child_pids() - before
            yield client, (new.pop() if len(new) == 1 else None)


@asynccontextmanager
async def mcp_http(
    url: str, *, token: str = HTTP_TOKEN, connections: int = 100, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> AsyncIterator[Client]:
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(300.0, connect=10.0),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
    )
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, read_timeout_seconds=request_timeout_s) as client:
        yield client


@asynccontextmanager
async def http_server(
    root: Path, name: str, *args: str, public: bool = False, module: str = "mediamux", **env: str
) -> AsyncIterator[tuple[str, int]]:
    """``mediamux serve --transport http`` as a subprocess; yields (MCP URL, pid) once /healthz is ready.
    ``public``: MEDIAMUX_PUBLIC_URL is the server's own loopback URL, so providers' webhooks reach it.
    ``module``: what ``python -m`` starts (a wrapper around mediamux, for counting)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if public:
        env = {**env, "MEDIAMUX_PUBLIC_URL": base}
    cmd = mediamux_cmd("--transport", "http", "--port", str(port), *args, module=module)
    with spawned(
        cmd, env=mediamux_env(root, MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN, **env), log=log_path(name)
    ) as proc:
        with anyio.fail_after(SPAWN_TIMEOUT_S):
            async with httpx2.AsyncClient(timeout=2.0, trust_env=False) as http:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{name}: server exited with {proc.returncode}; see {log_path(name)}"
                        )
                    try:
                        health = await http.get(f"{base}/healthz")
                        if health.status_code == 200 and health.json().get("ready"):
                            break
                    except (httpx2.TransportError, ValueError):
                        pass
                    await anyio.sleep(0.05)
        yield f"{base}/mcp", proc.pid


async def read_json_line(proc: subprocess.Popen[bytes], timeout_s: float = SPAWN_TIMEOUT_S) -> Any:
    """The first stdout line of a helper process, parsed; bounded (the caller stops the process)."""
    assert proc.stdout is not None
    with anyio.fail_after(timeout_s):
        line = await anyio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    if not line:
        raise RuntimeError(f"helper exited with {proc.wait(timeout=STOP_TIMEOUT_S)} before it was ready")
    return json.loads(line)


def check_result(result: Any, what: str) -> dict[str, Any]:
    """The structured content of a successful tool result; raises with the server's text otherwise."""
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"{what} failed: {text[:300]}")
    return dict(result.structured_content or {})
