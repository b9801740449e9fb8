"""Job latency: a MuAPI 10 s job from completion at the API to its result at the client, alone and many
at once, with polling and with webhooks, against muapi-cli (the publisher's MCP server) on the same
emulator in the same run.

A MuAPI emulator with ``job_seconds=10`` runs in the bench process (so its job records, creation times
and poll counts can be read directly). Every job is a ``flux-schnell-image`` generation with its own
prompt. A job's completion is its creation on the emulator plus 10 s; its lag is when its result came
back to the client minus that; its polls are the emulator's count of result reads for it.

* **Polled**: ``mediamux serve --transport http`` pointed at the emulator (``MUAPI_BASE_URL``), with a
  fresh journal. First jobs *alone*, one after another (the first of them has no history to plan
  from; the rest are planned from what the journal learned), then ``jobs`` at once.
* **Webhooks**: a second server, also with a fresh journal, whose ``MEDIAMUX_PUBLIC_URL`` is its own
  loopback URL: MuAPI POSTs there when a job finishes. Alone, then ``jobs`` at once.
* **Baseline**: ``muapi-cli`` (``muapi mcp serve``, installed into ``bench/out/venvs/muapi-cli``) on
  the same emulator, one job after another while mediamux runs its jobs alone (its server handles one
  call at a time, so it has no "at once"); it polls at once and then every 3 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from statistics import mean
from types import SimpleNamespace
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from bench.common import (
    MIB,
    MUAPI_KEY,
    SPAWN_TIMEOUT_S,
    Config,
    Row,
    Section,
    check_result,
    clean_env,
    http_server,
    log_path,
    mcp_http,
    memory,
    percentile,
    reset_peak,
)
from bench.context import VENVS, _install, _installed
from mediamux.jobs.schedule import baseline_age, baseline_polls
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator

ENDPOINT = "flux-schnell-image"
CLI_MODEL = "flux-schnell"  # muapi-cli's name for the same endpoint
WAIT_S = 120.0
# Jobs run alone on each server (by quick): the polled server's first has no history.
ALONE = {False: 10, True: 3}
ALONE_HOOKED = {False: 5, True: 2}
CLI_VENV = VENVS / "muapi-cli"

Run = Callable[[int], Awaitable["Job"]]


@dataclass
class Job:
    index: int
    returned: float | None = None  # time.monotonic() when the tool call came back
    request_id: str | None = None
    status: str | None = None


@dataclass
class Measured:
    lags: list[float]
    polls: list[int]
    created: list[float]

    def extend(self, other: Measured) -> None:
        self.lags += other.lags
        self.polls += other.polls
        self.created += other.created


def measure(emulator: MuapiEmulator, jobs: list[Job]) -> Measured:
    out = Measured([], [], [])
    for job in jobs:
        record = emulator.jobs.get(job.request_id or "")
        if job.status != "completed" or record is None or job.returned is None:
            continue
        out.lags.append(job.returned - (record.created_mono + record.duration_s))
        out.polls.append(emulator.polls.get(record.id, 0))
        out.created.append(record.created_mono)
    return out


def mediamux_job(client: Any, run_id: str) -> Run:
    async def one(index: int) -> Job:
        job = Job(index)
        arguments = {
            "endpoint": ENDPOINT,
            "params": {"prompt": f"bench job {index} of run {run_id}"},
            "wait_s": WAIT_S,
            "save_outputs": False,
        }
        with anyio.fail_after(WAIT_S + 60):
            data = check_result(await client.call_tool("muapi_generate", arguments), "muapi_generate")
        job.returned = time.monotonic()
        job.request_id, job.status = data.get("provider_job_id"), data.get("status")
        return job

    return one


def cli_job(client: Any, run_id: str) -> Run:
    async def one(index: int) -> Job:
        job = Job(index)
        arguments = {"prompt": f"muapi-cli job {index} of run {run_id}", "model": CLI_MODEL}
        with anyio.fail_after(WAIT_S + 60):
            data = check_result(await client.call_tool("muapi_image_generate", arguments), "muapi-cli")
        job.returned = time.monotonic()
        job.request_id, job.status = data.get("id") or data.get("request_id"), data.get("status")
        return job

    return one


async def one_by_one(run: Run, n: int, offset: int = 0) -> list[Job]:
    return [await run(offset + i) for i in range(n)]


async def at_once(run: Run, n: int, offset: int) -> tuple[list[Job], float]:
    """Start n jobs at once; returns them and the release time (time.monotonic())."""
    go = anyio.Event()
    jobs: list[Job] = []

    async def one(index: int) -> None:
        await go.wait()
        jobs.append(await run(index))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, offset + i)
        await anyio.sleep(0.1)  # every task is parked on the event
        released = time.monotonic()
        go.set()
    return jobs, released


class RawStdio:
    """Line-delimited JSON-RPC to a stdio MCP server, as a host that does not check results against the
    tool's output schema talks to it (the SDK ``Client`` refuses muapi-cli's answers: its schema says
    ``error`` is a string, and a finished prediction carries ``"error": null``)."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        assert process.stdin is not None
        self.lines = TextReceiveStream(process.stdout)
        self.buffer = ""
        self.next_id = 0

    async def _line(self) -> str:
        while "\n" not in self.buffer:
            self.buffer += await self.lines.receive()
        line, self.buffer = self.buffer.split("\n", 1)
        return line

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads(await self._line())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(message) + "\n").encode())

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        return SimpleNamespace(
            is_error=bool(result.get("isError")),
            content=[SimpleNamespace(text=c.get("text", "")) for c in result.get("content", [])],
            structured_content=result.get("structuredContent"),
        )


async def cli_alone(url: str, n: int, run_id: str, cfg: Config) -> tuple[list[Job], str]:
    """n muapi-cli jobs, one after another, against the emulator at ``url``."""
    await _install(CLI_VENV, ["muapi-cli"])
    env = clean_env(
        HOME=str(cfg.work / "muapi-cli-home"), MUAPI_BASE_URL=f"{url}/api/v1", MUAPI_API_KEY=MUAPI_KEY
    )
    cmd = [str(CLI_VENV / "bin" / "muapi"), "mcp", "serve"]
    with log_path("concurrency-muapi-cli").open("ab") as errlog:
        async with await anyio.open_process(cmd, env=env, stderr=errlog) as process:
            try:
                client = RawStdio(process)
                with anyio.fail_after(SPAWN_TIMEOUT_S):
                    await client.request(
                        "initialize",
                        {
                            "protocolVersion": "2025-06-18",
                            "capabilities": {},
                            "clientInfo": {"name": "mediamux-bench", "version": "0"},
                        },
                    )
                    await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                jobs = await one_by_one(cli_job(client, run_id), n)
            finally:
                process.terminate()
    return jobs, _installed(CLI_VENV, "muapi-cli")


def _rows(bench: str, what: str, ours: Measured, cli: Measured, label: str) -> list[Row]:
    rows = [
        Row(
            bench,
            f"{what}: completed → result, p50",
            percentile(ours.lags, 50),
            percentile(cli.lags, 50),
            "s",
            label,
        ),
        Row(
            bench,
            f"{what}: completed → result, p99",
            percentile(ours.lags, 99),
            percentile(cli.lags, 99),
            "s",
            label,
        ),
        Row(
            bench, f"{what}: upstream polls per job, mean", mean(ours.polls), mean(cli.polls), "polls", label
        ),
    ]
    if len(ours.polls) > 1:
        rows.append(
            Row(
                bench,
                f"{what}: upstream polls per job, max",
                float(max(ours.polls)),
                float(max(cli.polls)),
                "polls",
                label,
            )
        )
    return rows


async def run(cfg: Config) -> Section:
    emulator = MuapiEmulator(job_seconds=cfg.job_seconds, master_key=MUAPI_KEY, initial_balance_usd=1e6)
    run_id = f"{time.time():.0f}"
    alone, alone_hooked = ALONE[cfg.quick], ALONE_HOOKED[cfg.quick]
    try:
        async with serve_on_loopback(emulator.app) as url:
            emulator.base_url = url
            env = {"MUAPI_BASE_URL": f"{url}/api/v1", "MUAPI_API_KEY": MUAPI_KEY}
            cli: list[Job] = []
            cli_name = "muapi-cli"
            async with (
                http_server(cfg.work / "polled", "concurrency-http", **env) as (mcp_url, pid),
                mcp_http(mcp_url, connections=cfg.jobs + 10, request_timeout_s=WAIT_S + 60) as client,
            ):
                check_result(await client.call_tool("muapi_get_balance", {}), "warm-up")
                ours = mediamux_job(client, run_id)
                lone: list[Job] = []
                async with anyio.create_task_group() as tg:

                    async def cli_side() -> None:
                        nonlocal cli, cli_name
                        cli, cli_name = await cli_alone(url, alone, run_id, cfg)

                    tg.start_soon(cli_side)
                    lone = await one_by_one(ours, alone)
                idle = memory(pid)["VmRSS"]
                reset_peak(pid)
                burst, released = await at_once(ours, cfg.jobs, offset=1000)
                peak = memory(pid)["VmHWM"]
            async with (
                http_server(cfg.work / "webhooks", "concurrency-webhooks", public=True, **env) as (
                    hook_url,
                    _,
                ),
                mcp_http(hook_url, connections=cfg.jobs + 10, request_timeout_s=WAIT_S + 60) as client,
            ):
                check_result(await client.call_tool("muapi_get_balance", {}), "warm-up")
                hooked = mediamux_job(client, run_id + "-hooked")
                hooked_lone = await one_by_one(hooked, alone_hooked, offset=2000)
                hooked_burst, _released = await at_once(hooked, cfg.jobs, offset=3000)
    finally:
        emulator.close()

    first, learned = measure(emulator, lone[:1]), measure(emulator, lone[1:])
    cli_m, burst_m = measure(emulator, cli), measure(emulator, burst)
    hooked_lone_m, hooked_burst_m = measure(emulator, hooked_lone), measure(emulator, hooked_burst)
    for name, m, want in (
        ("muapi-cli", cli_m, alone),
        ("mediamux alone", learned, alone - 1),
        ("mediamux at once", burst_m, cfg.jobs),
        ("mediamux with webhooks", hooked_burst_m, cfg.jobs),
    ):
        if len(m.lags) < want:
            raise RuntimeError(f"{name}: only {len(m.lags)} of {want} jobs completed")

    bench = f"Job latency (MuAPI {cfg.job_seconds:g} s job)"
    label = f"{cli_name}, alone ({len(cli_m.lags)} jobs, same emulator, same run)"
    section = Section()
    section.rows += [
        Row(
            bench,
            "first of its model, alone (no history): completed → result",
            first.lags[0],
            percentile(cli_m.lags, 50),
            "s",
            label,
        ),
        Row(
            bench,
            "first of its model, alone: upstream polls",
            float(first.polls[0]),
            mean(cli_m.polls),
            "polls",
            label,
        ),
    ]
    section.rows += _rows(bench, f"alone, learned ({len(learned.lags)} jobs)", learned, cli_m, label)
    section.rows += _rows(bench, f"{cfg.jobs} at once", burst_m, cli_m, label)
    section.rows.append(
        Row(
            bench,
            f"{cfg.jobs} at once: server peak RSS (VmHWM)",
            peak / MIB,
            idle / MIB,
            "MiB",
            "the same server, idle, before",
        )
    )
    section.rows += _rows(
        bench, f"webhooks, alone ({len(hooked_lone_m.lags)} jobs)", hooked_lone_m, cli_m, label
    )
    section.rows += _rows(bench, f"webhooks, {cfg.jobs} at once", hooked_burst_m, cli_m, label)
    fixed_lag = (
        next(baseline_age(n) for n in range(20) if baseline_age(n) >= cfg.job_seconds) - cfg.job_seconds
    )
    section.notes.append(
        f"Job latency: MuAPI emulator (job_seconds={cfg.job_seconds:g}) in the bench process; two `mediamux serve "
        "--transport http` servers with fresh journals point at it via MUAPI_BASE_URL: one polled, one with "
        "MEDIAMUX_PUBLIC_URL set to its own loopback URL (webhooks). `muapi_generate` calls with distinct "
        f"prompts, `save_outputs: false`, `wait_s: {WAIT_S:g}`. Polled server: {alone} jobs alone, one after "
        "another (the first is planned with no history, the rest from what the journal learned), then "
        f"{cfg.jobs} at once (created on the emulator from {min(burst_m.created) - released:.2f} s to "
        f"{max(burst_m.created) - released:.2f} s after the release). Webhook server: {alone_hooked} alone, then "
        f"{cfg.jobs} at once (its first job has no history: fallback polls at 2, 6, 14 s …; the rest wait past what the journal learned). Lag = result back at the "
        "client − (creation on the emulator + job duration). Baseline: muapi-cli's own MCP server over stdio, "
        "`muapi_image_generate` with model flux-schnell (the same endpoint), run one job after another while "
        "mediamux ran its jobs alone (it polls at once, then every 3 s, and serves one call at a time). For "
        f"reference, the fixed backoff mediamux used before (1 s, ×1.5, ≤ 8 s) sees a {cfg.job_seconds:g} s job "
        f"{fixed_lag:.2f} s late after {baseline_polls(cfg.job_seconds)} polls."
    )
    return section
