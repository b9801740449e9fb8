"""Cold start: spawn a stdio server, then the first ``tools/list`` answer, against the SDK's floor.

The floor is a minimal ``MCPServer`` with one tool, written to a temporary file and run by the
same interpreter. Every subject is driven by the SDK ``Client`` in auto mode (server/discover,
falling back to initialize), runs interleaved and each round starting with the next subject, so
machine noise hits all alike. mediamux is started three ways:

* ``serve --sandbox`` (the five emulators start after the first answer, or on first use);
* ``serve`` with the four providers' keys set to dummies and their URLs at a closed loopback port:
  real-provider mode, with nothing sent anywhere (listing tools calls no provider);
* ``serve --sandbox`` on a state folder of its own each time: the first start on a new home, after
  an upgrade or a configuration change, when no tool catalog was kept yet.

Then, on the sandbox server, a first tool call (``jobs_list``), which waits for the tools and the
services: RSS is read right after the first answer and again after that call, when everything is
loaded; the floor's after its ``echo``.

Bytecode: every subject loads compiled bytecode, as an installed package does (pip compiles on
install). A ``PYTHONDONTWRITEBYTECODE`` in the environment would otherwise make a source checkout
compile mediamux's modules on every spawn while the SDK's load from ``site-packages``; the spawned
processes write and read bytecode under ``bench/out/pycache`` instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from bench.common import (
    MIB,
    OUT,
    SPAWN_TIMEOUT_S,
    Config,
    Row,
    Section,
    free_port,
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

FLOOR_LABEL = "minimal MCPServer, 1 tool (SDK floor)"


def live_env(port: int) -> dict[str, str]:
    """Every provider enabled by a key, at a loopback port nothing listens on (never contacted)."""
    base = f"http://127.0.0.1:{port}"
    return {
        "MUAPI_API_KEY": "bench-unused-muapi-key",
        "MUSEAI_API_KEY": "bench-unused-museai-key",
        "MUZAIC_API_KEY": "bench-unused-muzaic-key",
        "MIXPEEK_API_KEY": "bench-unused-mixpeek-key",
        "MUAPI_BASE_URL": f"{base}/api/v1",
        "MUSEAI_BASE_URL": f"{base}/api",
        "MUSEAI_JOBS_URL": base,
        "MUZAIC_API_URL": base,
        "MIXPEEK_API_BASE": base,
    }


def bytecode_env(env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    return env


@dataclass
class Subject:
    cmd: list[str]
    env: Callable[[], dict[str, str]]
    # A first call after the list (name, arguments), with RSS read again after it.
    call: tuple[str, dict[str, Any]] | None = None
    times: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    rss_after_call: list[float] = field(default_factory=list)
    tools: int = 0

    def forget(self) -> None:
        self.times.clear()
        self.rss.clear()
        self.rss_after_call.clear()


async def _spawn(subject: Subject, log: str) -> None:
    """One start: seconds from spawn to the tools/list answer, RSS just after, and after the call."""
    with anyio.fail_after(SPAWN_TIMEOUT_S):
        start = time.perf_counter()
        async with mcp_stdio(subject.cmd, env=subject.env(), log=log_path(log)) as (client, pid):
            tools = (await client.list_tools()).tools
            subject.times.append((time.perf_counter() - start) * 1000)
            subject.tools = len(tools)
            if pid:
                subject.rss.append(memory(pid)["VmRSS"] / MIB)
            if subject.call is not None:
                result = await client.call_tool(*subject.call)
                if result.is_error:
                    raise RuntimeError(f"{subject.call[0]} failed: {result.content}")
                if pid:
                    subject.rss_after_call.append(memory(pid)["VmRSS"] / MIB)


async def run(cfg: Config) -> Section:
    floor_file = cfg.work / "floor_server.py"
    floor_file.write_text(FLOOR_SERVER)
    env = bytecode_env(mediamux_env(cfg.work / "cold"))
    live = {**env, **live_env(free_port())}
    fresh_homes = iter(range(1_000_000))

    def fresh_env() -> dict[str, str]:
        return {**env, "MEDIAMUX_HOME": str(cfg.work / "cold" / f"fresh-{next(fresh_homes)}")}

    subjects = {
        "floor": Subject([sys.executable, str(floor_file)], lambda: env, call=("echo", {"text": "hi"})),
        "sandbox": Subject(mediamux_cmd("--sandbox"), lambda: env, call=("jobs_list", {})),
        "live": Subject(mediamux_cmd(), lambda: live),
        "fresh": Subject(mediamux_cmd("--sandbox"), fresh_env),
    }
    # One unmeasured spawn each first: the first run of a session pays for cold disk caches and writes
    # the bytecode (and mediamux its tool catalog) that every later start of an installed server reads.
    for name, subject in subjects.items():
        await _spawn(subject, f"cold-{name}")
    for subject in subjects.values():
        subject.forget()
    names = list(subjects)
    for round_no in range(cfg.cold_runs):
        # Each round starts with the next subject, so no subject always follows the same one.
        for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
            await _spawn(subjects[name], f"cold-{name}")
    floor = subjects["floor"]
    runs = f"median of {cfg.cold_runs}"
    section = Section()
    labels = {
        "sandbox": f"`serve --sandbox`: spawn → first tools/list answer, {runs} ({subjects['sandbox'].tools} tools)",
        "live": f"`serve`, real provider URLs (4 keys set): spawn → first tools/list answer, {runs} "
        f"({subjects['live'].tools} tools)",
        "fresh": f"`serve --sandbox`, first start on a new home (no catalog kept yet): spawn → first "
        f"tools/list answer, {runs}",
    }
    for name, metric in labels.items():
        section.rows.append(
            Row(
                "Cold start (stdio)",
                metric,
                median(subjects[name].times),
                median(floor.times),
                "ms",
                FLOOR_LABEL,
            )
        )
    sandbox = subjects["sandbox"]
    if sandbox.rss and floor.rss:
        section.rows.append(
            Row(
                "Cold start (stdio)",
                "`serve --sandbox`: server RSS right after that answer, median",
                median(sandbox.rss),
                median(floor.rss),
                "MiB",
                FLOOR_LABEL,
            )
        )
    if sandbox.rss_after_call and floor.rss_after_call:
        section.rows.append(
            Row(
                "Cold start (stdio)",
                "`serve --sandbox`: server RSS after a first tool call (`jobs_list`: every toolset, the "
                "journal and the emulators loaded), median",
                median(sandbox.rss_after_call),
                median(floor.rss_after_call),
                "MiB",
                "the floor after its `echo`",
            )
        )
    section.notes.append(
        "Cold start: `python -m mediamux serve` (with `--sandbox`; with the four providers' keys set and their "
        "URLs at a closed loopback port; and with `--sandbox` on a new state folder each time) and the floor "
        "server are spawned by the SDK `Client` over stdio in auto mode, interleaved with each round starting "
        "with the next subject, after one unmeasured warm-up spawn each; the time runs from spawn to the first "
        "`tools/list` result. Over stdio, mediamux answers that first list from the tool catalog an earlier "
        "start kept under its home (keyed by its code, the SDK and pydantic as installed, the interpreter and "
        "the settings), then registers the tools and opens the journal, the provider clients and the "
        "sandbox's emulators 0.2 s later or when a request needs them (the first tool call waits for them). "
        "A first start on a new home registers everything before answering. Every subject loads compiled "
        "bytecode (written to `bench/out/pycache` by the warm-up spawn), as an installed package does."
    )
    return section
