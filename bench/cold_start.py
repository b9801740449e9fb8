"""Cold start: spawn a stdio server, then the first ``tools/list`` answer, against the SDK's floor.

The floor is a minimal ``MCPServer`` with one tool, written to a temporary file and run by the
same interpreter. Both are driven by the SDK ``Client`` in auto mode (server/discover, falling
back to initialize), runs interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import sys
import time

import anyio

from bench.common import (
    MIB,
    SPAWN_TIMEOUT_S,
    Config,
    Row,
    Section,
    log_path,
    mcp_stdio,
    mediamux_cmd,
    mediamux_env,
    median,
    memory,
)

FLOOR_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")


@server.tool()
def echo(text: str) -> str:
    """Returns the text it is given."""
    return text


if __name__ == "__main__":
    server.run()
'''


async def _first_list(cmd: list[str], env: dict[str, str], log: str) -> tuple[float, int, float | None]:
    """(seconds from spawn to the tools/list answer, number of tools, RSS in MiB just after)."""
    with anyio.fail_after(SPAWN_TIMEOUT_S):
        start = time.perf_counter()
        async with mcp_stdio(cmd, env=env, log=log_path(log)) as (client, pid):
            tools = (await client.list_tools()).tools
            elapsed = time.perf_counter() - start
            rss = memory(pid)["VmRSS"] / MIB if pid else None
    return elapsed, len(tools), rss


async def run(cfg: Config) -> Section:
    floor_file = cfg.work / "floor_server.py"
    floor_file.write_text(FLOOR_SERVER)
    env = mediamux_env(cfg.work / "cold")
    subjects = {
        "mediamux": mediamux_cmd("--sandbox"),
        "floor": [sys.executable, str(floor_file)],
    }
    times: dict[str, list[float]] = {name: [] for name in subjects}
    rss: dict[str, list[float]] = {name: [] for name in subjects}
    counts: dict[str, int] = {}
    # One unmeasured spawn each first: the first run of a session pays for cold disk caches.
    for name, cmd in subjects.items():
        await _first_list(cmd, env, f"cold-{name}")
    for _ in range(cfg.cold_runs):
        for name, cmd in subjects.items():
            elapsed, count, mib = await _first_list(cmd, env, f"cold-{name}")
            times[name].append(elapsed * 1000)
            counts[name] = count
            if mib is not None:
                rss[name].append(mib)
    floor_label = "minimal MCPServer, 1 tool (SDK floor)"
    section = Section()
    section.rows.append(
        Row(
            "Cold start (stdio)",
            f"spawn → first tools/list answer, median of {cfg.cold_runs} ({counts['mediamux']} tools)",
            median(times["mediamux"]),
            median(times["floor"]),
            "ms",
            floor_label,
        )
    )
    if rss["mediamux"] and rss["floor"]:
        section.rows.append(
            Row(
                "Cold start (stdio)",
                "server RSS right after that answer, median",
                median(rss["mediamux"]),
                median(rss["floor"]),
                "MiB",
                floor_label,
            )
        )
    section.notes.append(
        "Cold start: `python -m mediamux serve --sandbox` (which also starts the five loopback emulators) and "
        "the floor server are spawned by the SDK `Client` over stdio in auto mode, interleaved, after one "
        "unmeasured warm-up spawn each; the time runs from spawn to the first `tools/list` result."
    )
    return section
