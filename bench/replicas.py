"""Replicas: 2,000 jobs in flight over two HTTP replicas sharing one PostgreSQL, against one replica on
the embedded SQLite journal, in the same run.

Each side gets a fresh MuAPI emulator served in the bench process, so its job records share the client's clock: a job's completion is its creation there plus
its duration, and its lag is when the client had the result minus that (``concurrency.measure``).
Upstream polls per job are the emulator's count of ``GET …/result`` requests for it. Jobs last
``job_seconds`` (10 s, as in the concurrency row) in the quick run, and ``FULL_JOB_S`` in the full one,
long enough that every job is still running when the last is submitted: a shared 2-core machine
submits a few dozen a second, so 2,000 ten-second jobs would never all be in flight at once.

The client is the same on both sides: every job is a ``muapi_generate`` call with its own prompt,
``wait_s: 0`` and ``save_outputs: false`` (at most ``SUBMITTERS`` of these at once), and as soon as
it returns, a ``jobs_wait`` on the job until it has ended. On PostgreSQL job *i* is submitted to
replica ``i % 2`` and waited for on replica ``(i // 2) % 2``: half the waits are on the other replica,
woken by ``LISTEN/NOTIFY``, as behind a load balancer without affinity.

Database work: the replicas reach PostgreSQL through ``bench.pg_wire``, a relay in a process of its
own that counts the server's ``ReadyForQuery`` messages (one per request cycle, whatever sent it:
statements, ``BEGIN``/``COMMIT``, the pool's liveness checks, ``LISTEN``). The SQLite replica runs under
``bench.sqlite_count``, which counts the statements SQLite steps in the journal (in-process calls,
not round trips). Both are read just before the first submission and just after the last result.

Skipped, with the reason, where psycopg or the PostgreSQL server binaries are missing; the cluster
is the test suite's own throwaway one (``tests/pg_cluster.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from mcp import Client

from bench.common import (
    MUAPI_KEY,
    Config,
    Row,
    Section,
    check_result,
    cpu_seconds,
    http_server,
    log_path,
    mcp_http,
    percentile,
    read_json_line,
    spawned,
)
from bench.concurrency import ENDPOINT, Job, Measured, measure
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator

if TYPE_CHECKING:
    from tests.pg_cluster import Cluster

JOBS = {True: 200, False: 2000}
SUBMITTERS = 100  # muapi_generate calls in flight at once (each returns at once: wait_s 0)
FULL_JOB_S = 120.0
WAIT_S = 300.0  # each jobs_wait (a job still running after it is waited for again)
RUN_TIMEOUT_S = {True: 90.0, False: 520.0}  # one side's whole run, submissions to the last result
SNAPSHOT_TIMEOUT_S = 10.0
ACTIVE = ("queued", "running")
REPO = Path(__file__).resolve().parents[1]
DATABASE = "mediamux_bench"


@dataclass
class Side:
    """One side's measurements over its window (first submission to last result)."""

    outcomes: Measured
    jobs: int
    released: float
    finished: float
    waits: int  # jobs_wait calls in all (one per job unless a job outlived WAIT_S)
    upstream_polls: int  # of every job, completed or not
    db: dict[str, int]  # database counters over the window
    server_cpu_s: float  # the mediamux processes
    db_cpu_s: float  # the PostgreSQL cluster (0 for SQLite: it runs inside the server)
    bench_cpu_s: float  # this process: the client and the emulator
    errors: list[str]  # tool calls that answered with an error

    @property
    def polls(self) -> int:
        """Upstream polls of the completed jobs."""
        return sum(self.outcomes.polls)

    @property
    def db_calls(self) -> int:
        """PostgreSQL's round trips, or SQLite's statements."""
        return self.db.get("round_trips", self.db.get("statements", 0))

    def in_flight_peak(self, job_seconds: float) -> int:
        """Most jobs running upstream at one moment (creation to completion on the emulator)."""
        edges = sorted(
            [(t, 1) for t in self.outcomes.created] + [(t + job_seconds, -1) for t in self.outcomes.created]
        )
        peak = level = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        return peak


def job_seconds(cfg: Config) -> float:
    return cfg.job_seconds if cfg.quick else max(cfg.job_seconds, FULL_JOB_S)


def missing() -> str | None:
    """Why this row cannot run here, or None."""
    for module, extra in (("psycopg", "postgres"), ("psycopg_pool", "postgres"), ("pytest", "test")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    from tests.pg_cluster import find_bin_dir

    if find_bin_dir() is None:
        return (
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and on PATH); "
            "install them with `apt-get install postgresql`"
        )
    return None


def _pythonpath() -> str:
    """This checkout first, so a launcher under bench/ imports from here whatever the working folder."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


# -- the client ---------------------------------------------------------------------------------


async def _drive(
    submit_to: Sequence[Client], wait_on: Sequence[Client], jobs: list[Job], run_id: str
) -> tuple[int, list[str]]:
    """Submit every job (at most SUBMITTERS at once), then wait for each until it ends; returns how
    many jobs_wait calls that took, and the errors tool calls answered with (their jobs are left out
    of the lag and poll figures, and counted in the notes)."""
    submitting = anyio.Semaphore(SUBMITTERS)
    waits = 0
    errors: list[str] = []

    async def one(job: Job) -> None:
        nonlocal waits
        arguments = {
            "endpoint": ENDPOINT,
            "params": {"prompt": f"bench job {job.index} of run {run_id}"},
            "wait_s": 0,
            "save_outputs": False,
        }
        try:
            async with submitting:
                client = submit_to[job.index % len(submit_to)]
                data = check_result(await client.call_tool("muapi_generate", arguments), "muapi_generate")
            job.job_id, job.request_id = data["job_id"], data.get("provider_job_id")
            waiter = wait_on[(job.index // 2) % len(wait_on)]
            while data.get("status") in ACTIVE:
                waits += 1
                data = check_result(
                    await waiter.call_tool("jobs_wait", {"job_id": job.job_id, "wait_s": WAIT_S}), "jobs_wait"
                )
        except RuntimeError as exc:  # the tool's own error result
            errors.append(str(exc))
            job.status = "error"
            return
        job.returned, job.status = time.monotonic(), data.get("status")

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(one, job)
    return waits, errors


@asynccontextmanager
async def _clients(urls: Sequence[str], jobs: int) -> AsyncIterator[list[Client]]:
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                mcp_http(url, connections=jobs + SUBMITTERS + 10, request_timeout_s=WAIT_S + 60)
            )
            for url in urls
        ]
        for client in clients:
            check_result(await client.call_tool("muapi_get_balance", {}), "warm-up")
        yield clients


async def _run(
    cfg: Config,
    emulator: MuapiEmulator,
    submit_to: Sequence[Client],
    wait_on: Sequence[Client],
    name: str,
    counters: Callable[[], Any],
    cpu: Callable[[], tuple[float, float]],
) -> Side:
    """One side's run, between two readings of its database counters and CPU clocks."""
    jobs = [Job(i) for i in range(JOBS[cfg.quick])]
    db_before, (server_before, pg_before), bench_before = await counters(), cpu(), cpu_seconds()
    released = time.monotonic()
    with anyio.fail_after(RUN_TIMEOUT_S[cfg.quick]):
        waits, errors = await _drive(submit_to, wait_on, jobs, f"{name} {time.time():.0f}")
    finished = time.monotonic()
    print(f"[bench] replicas: {name} side ran {finished - released:.0f} s", file=sys.stderr, flush=True)
    db_after, (server_after, pg_after), bench_after = await counters(), cpu(), cpu_seconds()
    db = {k: db_after.get(k, 0) - db_before.get(k, 0) for k in set(db_before) | set(db_after)}
    return Side(
        outcomes=measure(emulator, jobs),
        jobs=len(jobs),
        released=released,
        finished=finished,
        waits=waits,
        upstream_polls=sum(emulator.polls.values()),
        db=db,
        server_cpu_s=server_after - server_before,
        db_cpu_s=pg_after - pg_before,
        bench_cpu_s=bench_after - bench_before,
        errors=errors,
    )


@asynccontextmanager
async def _emulator(cfg: Config) -> AsyncIterator[tuple[MuapiEmulator, dict[str, str]]]:
    emulator = MuapiEmulator(job_seconds=job_seconds(cfg), master_key=MUAPI_KEY, initial_balance_usd=1e7)
    try:
        async with serve_on_loopback(emulator.app) as url:
            emulator.base_url = url
            yield emulator, {"MUAPI_BASE_URL": f"{url}/api/v1", "MUAPI_API_KEY": MUAPI_KEY}
    finally:
        emulator.close()


# -- SQLite: one replica ------------------------------------------------------------------------


async def _sqlite_counts(pid: int, path: Path) -> dict[str, int]:
    """The journal's statement count, fresh: asks the server for a snapshot and waits for it."""
    seq = json.loads(path.read_text())["seq"] if path.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    with anyio.fail_after(SNAPSHOT_TIMEOUT_S):
        while True:
            if path.exists():
                data = json.loads(path.read_text())
                if data["seq"] > seq:
                    return {"statements": data["statements"].get("mediamux.sqlite3", 0)}
            await anyio.sleep(0.02)


async def _sqlite_side(cfg: Config) -> Side:
    root = cfg.work / "replicas-sqlite"
    counts = root / "sqlite-counts.json"
    async with (
        _emulator(cfg) as (emulator, env),
        http_server(
            root,
            "replicas-sqlite",
            module="bench.sqlite_count",
            BENCH_SQLITE_COUNTS=str(counts),
            PYTHONPATH=_pythonpath(),
            **env,
        ) as (url, pid),
        _clients([url], JOBS[cfg.quick]) as clients,
    ):
        return await _run(
            cfg,
            emulator,
            clients,
            clients,
            "sqlite",
            lambda: _sqlite_counts(pid, counts),
            lambda: (cpu_seconds(pid), 0.0),
        )


# -- PostgreSQL: two replicas -------------------------------------------------------------------


def _cluster_cpu(cluster: Cluster) -> float:
    """CPU time of the cluster: the postmaster, its live children, and the children it has reaped."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is in the postmaster's children's now
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


async def _pg_side(cfg: Config) -> Side:
    from tests.pg_cluster import find_bin_dir, start_cluster

    bin_dir = find_bin_dir()
    assert bin_dir is not None
    cluster = await anyio.to_thread.run_sync(start_cluster, bin_dir)
    try:
        await anyio.to_thread.run_sync(cluster.create_database, DATABASE)
        relay_cmd = [sys.executable, "-m", "bench.pg_wire", str(cluster.port)]
        relay_env = {
            **os.environ,
            "PYTHONPATH": _pythonpath(),
        }
        with spawned(
            relay_cmd, env=relay_env, log=log_path("replicas-pg-wire"), stdout=subprocess.PIPE
        ) as relay:
            port = (await read_json_line(relay))["port"]
            # No encryption to negotiate on loopback: the relay reads plain protocol messages.
            url = f"postgresql://{cluster.superuser}@127.0.0.1:{port}/{DATABASE}?sslmode=disable&gssencmode=disable"

            async def relay_counts() -> dict[str, int]:
                relay.send_signal(signal.SIGUSR1)
                counts = dict(await read_json_line(relay, SNAPSHOT_TIMEOUT_S))
                # The relay's own cost, so the note can say what measuring took.
                return {**counts, "relay_cpu_ms": round(cpu_seconds(relay.pid) * 1000)}

            async with _emulator(cfg) as (emulator, env), AsyncExitStack() as stack:
                replicas = [
                    await stack.enter_async_context(
                        http_server(
                            cfg.work / f"replicas-pg-{name}",
                            f"replicas-pg-{name}",
                            MEDIAMUX_DATABASE_URL=url,
                            **env,
                        )
                    )
                    for name in ("a", "b")
                ]
                clients = await stack.enter_async_context(_clients([u for u, _ in replicas], JOBS[cfg.quick]))
                pids = [pid for _, pid in replicas]
                side = await _run(
                    cfg,
                    emulator,
                    clients,
                    clients,
                    "postgres",
                    relay_counts,
                    lambda: (sum(cpu_seconds(pid) for pid in pids), _cluster_cpu(cluster)),
                )
    finally:
        cluster.stop()  # not awaited: it must run when the run was cancelled too
    return side


# -- the row ------------------------------------------------------------------------------------


async def run(cfg: Config) -> Section:
    n = JOBS[cfg.quick]
    bench = f"Replicas ({n:,} × {job_seconds(cfg):g} s jobs)"
    reason = missing()
    if reason is not None:
        note = f"skipped: {reason}"
        return Section(
            [Row(bench, "2 replicas on PostgreSQL", None, None, "", "", note)], [f"Replicas {note}."]
        )
    sqlite = await _sqlite_side(cfg)
    pg = await _pg_side(cfg)
    return _section(cfg, bench, pg, sqlite)


def _section(cfg: Config, bench: str, pg: Side, sqlite: Side) -> Section:
    label = "1 replica on SQLite, same client"
    pg_trips, sq_statements = pg.db_calls, sqlite.db_calls
    other = pg_trips - pg.db.get("statements", 0) - pg.db.get("empty_queries", 0)

    def row(metric: str, measure: Callable[[Side], float], unit: str) -> Row:
        return Row(bench, metric, measure(pg), measure(sqlite), unit, label)

    rows = [
        row("job completed → result returned, p50", lambda side: percentile(side.outcomes.lags, 50), "s"),
        row("job completed → result returned, p99", lambda side: percentile(side.outcomes.lags, 99), "s"),
        row("upstream polls per job, mean", lambda side: side.polls / len(side.outcomes.polls), "polls"),
        row("upstream polls per job, max", lambda side: float(max(side.outcomes.polls)), "polls"),
        row(
            "database round trips per upstream poll (SQLite: statements)",
            lambda side: side.db_calls / side.upstream_polls,
            "",
        ),
        row("database round trips per job (SQLite: statements)", lambda side: side.db_calls / side.jobs, ""),
        row(
            "server CPU per job (replicas + PostgreSQL)",
            lambda side: (side.server_cpu_s + side.db_cpu_s) / side.jobs * 1000,
            "ms",
        ),
    ]
    notes = [
        f"Replicas: two `mediamux serve --transport http` on one PostgreSQL (the test suite's throwaway cluster, "
        f"`tests/pg_cluster.py`; default lease time and pool size) against one on SQLite (its home's journal). "
        f"Each side: {pg.jobs:,} `muapi_generate` calls (distinct prompts, `wait_s: 0`, `save_outputs: false`, at "
        f"most {SUBMITTERS} at once), each followed by `jobs_wait` (`wait_s: {WAIT_S:g}`) until the job ends; on "
        "PostgreSQL job i goes to replica i mod 2 and is waited for on replica ⌊i/2⌋ mod 2. Completed: "
        f"{len(pg.outcomes.lags):,} (PostgreSQL), {len(sqlite.outcomes.lags):,} (SQLite); jobs_wait calls: "
        f"{pg.waits:,}, {sqlite.waits:,}.{_errors('PostgreSQL', pg)}{_errors('SQLite', sqlite)}",
        f"Replicas, load: submissions took {_span(pg)} (PostgreSQL) and {_span(sqlite)} (SQLite) from the first to "
        f"the last creation on the emulator; at most {pg.in_flight_peak(job_seconds(cfg)):,} and "
        f"{sqlite.in_flight_peak(job_seconds(cfg)):,} jobs were running upstream at once; the last result came back "
        f"{pg.finished - pg.released:.1f} s and {sqlite.finished - sqlite.released:.1f} s after the first submission.",
        "Replicas, database: PostgreSQL round trips are the ReadyForQuery messages the server sent on the replicas' "
        "connections (relay `bench/pg_wire.py`), from just before the first submission to just after the last "
        f"result: {pg_trips:,} in all, of which {pg.db.get('statements', 0):,} ended statements (BEGIN/COMMIT "
        f"included) and {pg.db.get('empty_queries', 0):,} were empty queries (psycopg_pool's liveness check on "
        f"every checkout), the other {other:,} connection start-ups and psycopg's statement preparations; "
        f"{pg.db.get('connections', 0):,} connections opened, "
        f"{pg.db.get('notifications', 0):,} notifications delivered to listeners. SQLite: {sq_statements:,} "
        "statements stepped on the journal (`bench/sqlite_count.py`'s trace callback), in-process calls rather "
        "than round trips. The relay is one more loopback hop on every PostgreSQL round trip, and used "
        f"{pg.db.get('relay_cpu_ms', 0) / 1000:.1f} s of CPU (counted on neither side). CPU: the replicas "
        f"{pg.server_cpu_s:.1f} s + PostgreSQL {pg.db_cpu_s:.1f} s, against {sqlite.server_cpu_s:.1f} s for the "
        "SQLite replica. The emulator and the client run in the bench process and count on neither side: it used "
        f"{pg.bench_cpu_s:.1f} s and {sqlite.bench_cpu_s:.1f} s of CPU over the two runs.",
    ]
    return Section(rows, notes)


def _errors(name: str, side: Side) -> str:
    if not side.errors:
        return ""
    return f" {name}: {len(side.errors)} tool call(s) answered with an error, e.g. {side.errors[0][:200]!r}."


def _span(side: Side) -> str:
    return f"{max(side.outcomes.created) - min(side.outcomes.created):.1f} s"
