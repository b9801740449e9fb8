"""Concurrency: many 10 s jobs started at once through one HTTP server.

A MuAPI emulator with ``job_seconds=10`` runs in the bench process (so its job records, creation
times and poll counts can be read directly); ``mediamux serve --transport http`` is pointed at it
with ``MUAPI_BASE_URL``/``MUAPI_API_KEY``. Every job is a ``muapi_generate`` call with its own prompt,
``save_outputs: false`` and a wait budget that outlasts the job, all released at once. A job's
completion time is its creation on the emulator plus 10 s; its lag is when its result came back to
the client minus that.

Baseline: the engine's own poll schedule for one job alone (first poll after 1 s, then ×1.5, capped
at 8 s): the lag and poll count that schedule implies with no contention at all. The absolute ideal
(a result the instant the job completes, as a webhook would allow) is 0 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.common import (
    MIB,
    MUAPI_KEY,
    Config,
    Row,
    Section,
    check_result,
    http_server,
    mcp_http,
    memory,
    percentile,
    reset_peak,
)
from mediamux.jobs.engine import BACKOFF, FIRST_POLL_S, MAX_POLL_S
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator

ENDPOINT = "flux-schnell-image"
WAIT_S = 120.0


@dataclass
class Job:
    index: int
    returned: float | None = None  # time.monotonic() when the tool call came back
    request_id: str | None = None
    status: str | None = None
    job_id: str | None = None  # mediamux's id, where the result came from jobs_wait


@dataclass
class Outcomes:
    """What the emulator's records say of the completed jobs: each one's lag and upstream polls."""

    lags: list[float]  # result back at the client − (creation on the emulator + job duration), s
    polls: list[int]  # GET …/result requests the emulator answered for the job
    created: list[float]  # creation on the emulator, time.monotonic()

    @staticmethod
    def of(emulator: MuapiEmulator, jobs: list[Job]) -> Outcomes:
        """The emulator runs in the bench process, so its creation times share the client's clock."""
        found = Outcomes([], [], [])
        for job in jobs:
            record = emulator.jobs.get(job.request_id or "")
            if job.status != "completed" or record is None or job.returned is None:
                continue
            found.lags.append(job.returned - (record.created_mono + record.duration_s))
            found.polls.append(emulator.polls.get(record.id, 0))
            found.created.append(record.created_mono)
        if not found.lags:
            raise RuntimeError(f"no job completed: {[j.status for j in jobs][:5]}")
        return found


def schedule(job_seconds: float) -> tuple[float, int]:
    """(lag, polls) of the engine's backoff schedule for one job of ``job_seconds``."""
    t, interval, polls = 0.0, FIRST_POLL_S, 0
    while True:
        t += interval
        polls += 1
        if t >= job_seconds:
            return t - job_seconds, polls
        interval = min(MAX_POLL_S, interval * BACKOFF)


async def _release(client: Any, jobs: list[Job], run_id: str) -> float:
    """Start every job at once; returns the release time (time.monotonic())."""
    go = anyio.Event()

    async def one(job: Job) -> None:
        await go.wait()
        arguments = {
            "endpoint": ENDPOINT,
            "params": {"prompt": f"bench job {job.index} of run {run_id}"},
            "wait_s": WAIT_S,
            "save_outputs": False,
        }
        data = check_result(await client.call_tool("muapi_generate", arguments), "muapi_generate")
        job.returned = time.monotonic()
        job.request_id, job.status = data.get("provider_job_id"), data.get("status")

    with anyio.fail_after(WAIT_S + 120):
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(one, job)
            await anyio.sleep(0.1)  # every task is parked on the event
            released = time.monotonic()
            go.set()
    return released


async def run(cfg: Config) -> Section:
    emulator = MuapiEmulator(job_seconds=cfg.job_seconds, master_key=MUAPI_KEY, initial_balance_usd=1e6)
    jobs = [Job(i) for i in range(cfg.jobs)]
    try:
        async with serve_on_loopback(emulator.app) as url:
            emulator.base_url = url
            env = {"MUAPI_BASE_URL": f"{url}/api/v1", "MUAPI_API_KEY": MUAPI_KEY}
            root = cfg.work / "concurrency"
            async with (
                http_server(root, "concurrency-http", **env) as (mcp_url, pid),
                mcp_http(mcp_url, connections=cfg.jobs + 10, request_timeout_s=WAIT_S + 60) as client,
            ):
                check_result(await client.call_tool("muapi_get_balance", {}), "warm-up")
                idle = memory(pid)["VmRSS"]
                reset_peak(pid)
                released = await _release(client, jobs, f"{time.time():.0f}")
                peak = memory(pid)["VmHWM"]
    finally:
        emulator.close()

    found = Outcomes.of(emulator, jobs)
    lags, polls, created = found.lags, found.polls, found.created
    ideal_lag, ideal_polls = schedule(cfg.job_seconds)
    label = f"engine schedule, 1 job alone ({ideal_lag:.2f} s lag, {ideal_polls} polls)"
    bench = f"Concurrency ({cfg.jobs} × {cfg.job_seconds:g} s jobs, HTTP)"
    section = Section(
        [
            Row(bench, "job completed → result returned, p50", percentile(lags, 50), ideal_lag, "s", label),
            Row(bench, "job completed → result returned, p99", percentile(lags, 99), ideal_lag, "s", label),
            Row(
                bench,
                "upstream polls per job, mean",
                sum(polls) / len(polls),
                float(ideal_polls),
                "polls",
                label,
            ),
            Row(bench, "upstream polls per job, max", float(max(polls)), float(ideal_polls), "polls", label),
            Row(
                bench,
                "server peak RSS (VmHWM)",
                peak / MIB,
                idle / MIB,
                "MiB",
                "the same server, idle, before",
            ),
        ]
    )
    section.notes.append(
        f"Concurrency: {len(lags)} of {cfg.jobs} jobs completed. The MuAPI emulator (job_seconds="
        f"{cfg.job_seconds:g}) runs in the bench process, `mediamux serve --transport http` points at it via "
        "MUAPI_BASE_URL/MUAPI_API_KEY; one SDK `Client` (auto mode) sends every `muapi_generate` call at once "
        f"(distinct prompts, `save_outputs: false`, `wait_s: {WAIT_S:g}`). The emulator created the first job "
        f"{min(created) - released:.2f} s and the last {max(created) - released:.2f} s after the release. "
        "Lag = result back at the client − (creation on the emulator + job duration); the absolute ideal is 0 s "
        "(a webhook could get close), the baseline is what the engine's own backoff implies for a lone job."
    )
    return section
