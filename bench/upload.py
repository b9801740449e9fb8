"""Upload: one large ``.mp4`` streamed through ``museai_upload_video`` against a raw httpx2
streaming multipart upload of the same file to the same emulator endpoint.

The muse.ai emulator runs in a process of its own (``bench.emulator_host``), so its spooling
(Starlette spools the multipart body to disk; the emulator keeps the first 64 MiB in memory for
analysis) counts toward neither side. mediamux is ``mediamux serve`` over stdio pointed at it with
``MUSEAI_BASE_URL``/``MUSEAI_JOBS_URL``/``MUSEAI_API_KEY``; its peak RSS is the server process's
VmHWM, reset to the current RSS just before the call. The raw upload runs in the bench process,
whose VmHWM is reset the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

from bench.common import (
    GIB,
    MIB,
    MUSEAI_KEY,
    Config,
    Row,
    Section,
    check_result,
    clean_env,
    cpu_seconds,
    log_path,
    mcp_stdio,
    mediamux_cmd,
    mediamux_env,
    median,
    memory,
    read_json_line,
    reset_peak,
    spawned,
)

MIN_FREE = 4 * GIB
UPLOAD_TIMEOUT_S = 900.0
BLOCK = MIB
REPS = 3


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(BLOCK)
    with path.open("wb") as out:
        for _ in range(size // BLOCK):
            out.write(block)
        out.write(block[: size % BLOCK])


def _free_bytes(*paths: Path) -> int:
    return min(shutil.disk_usage(p).free for p in paths)


async def _delete(http: httpx2.AsyncClient, files_url: str, fid: str | None) -> None:
    """Remove the stored copy from the emulator so the next upload has the disk space."""
    if fid:
        (
            await http.delete(f"{files_url}/api/files/delete/{fid}", headers={"Key": MUSEAI_KEY})
        ).raise_for_status()


@dataclass
class Sample:
    seconds: float
    growth: int  # peak RSS minus RSS just before, bytes
    peak: int
    uploader_cpu: float  # CPU seconds of the uploading process
    receiver_cpu: float  # CPU seconds of the emulator process
    fid: str | None = None  # the stored copy, deleted before the next upload


async def _through_mediamux(client: Any, pid: int, path: Path, host_pid: int, on_progress: Any) -> Sample:
    before = memory(pid)["VmRSS"]
    if not reset_peak(pid):
        raise RuntimeError("cannot reset VmHWM (/proc/<pid>/clear_refs)")
    cpu0, host0 = cpu_seconds(pid), cpu_seconds(host_pid)
    start = time.perf_counter()
    result = await client.call_tool("museai_upload_video", {"path": str(path)}, progress_callback=on_progress)
    elapsed = time.perf_counter() - start
    peak = memory(pid)["VmHWM"]
    sample = Sample(elapsed, peak - before, peak, cpu_seconds(pid) - cpu0, cpu_seconds(host_pid) - host0)
    data = check_result(result, "museai_upload_video")
    if data.get("size") not in (None, path.stat().st_size):
        raise RuntimeError(f"the emulator stored {data.get('size')} bytes of {path.stat().st_size}")
    sample.fid = data.get("fid")
    return sample


async def _raw(http: httpx2.AsyncClient, path: Path, files_url: str, host_pid: int) -> Sample:
    reset_peak()
    before = memory()["VmRSS"]
    cpu0, host0 = time.process_time(), cpu_seconds(host_pid)
    with path.open("rb") as body:
        start = time.perf_counter()
        response = await http.post(
            f"{files_url}/api/files/upload",
            files={"file": (path.name, body, "video/mp4")},
            headers={"Key": MUSEAI_KEY},
        )
        elapsed = time.perf_counter() - start
    peak = memory()["VmHWM"]
    sample = Sample(elapsed, peak - before, peak, time.process_time() - cpu0, cpu_seconds(host_pid) - host0)
    response.raise_for_status()
    sample.fid = response.json().get("fid")
    return sample


async def _measure(cfg: Config, root: Path, path: Path) -> tuple[list[Sample], list[Sample], int, int]:
    """(mediamux samples, raw samples, server RSS idle, progress notifications), uploads alternating."""
    ours: list[Sample] = []
    raw: list[Sample] = []
    notifications = 0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal notifications
        notifications += 1

    host_cmd = [sys.executable, "-m", "bench.emulator_host", "museai"]
    host_env = clean_env(TMPDIR=str(root / "tmp"))  # Starlette spools the multipart body there
    with spawned(host_cmd, env=host_env, log=log_path("upload-emulator"), stdout=subprocess.PIPE) as host:
        urls = await read_json_line(host)
        env = mediamux_env(
            root,
            MUSEAI_BASE_URL=urls["museai"] + "/api",
            MUSEAI_JOBS_URL=urls["museai_jobs"],
            MUSEAI_API_KEY=MUSEAI_KEY,
        )
        log = log_path("upload-mediamux")
        async with (
            httpx2.AsyncClient(
                trust_env=False, timeout=httpx2.Timeout(UPLOAD_TIMEOUT_S, connect=10.0)
            ) as http,
            mcp_stdio(mediamux_cmd(), env=env, log=log, request_timeout_s=UPLOAD_TIMEOUT_S) as (client, pid),
        ):
            if pid is None:
                raise RuntimeError("could not find the server's pid")
            await client.list_tools()
            idle = memory(pid)["VmRSS"]
            for _ in range(REPS):
                with anyio.fail_after(UPLOAD_TIMEOUT_S):
                    ours.append(await _through_mediamux(client, pid, path, host.pid, on_progress))
                await _delete(http, urls["museai"], ours[-1].fid)
                with anyio.fail_after(UPLOAD_TIMEOUT_S):
                    raw.append(await _raw(http, path, urls["museai"], host.pid))
                await _delete(http, urls["museai"], raw[-1].fid)
    return ours, raw, idle, notifications // REPS


async def run(cfg: Config) -> Section:
    size = cfg.upload_bytes
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    bench = f"Upload ({label} .mp4)"
    root = cfg.work / "upload"
    root.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    free = _free_bytes(root)
    if free < MIN_FREE:
        note = f"skipped: {free / GIB:.1f} GiB free on disk, {MIN_FREE / GIB:.0f} GiB needed"
        return Section([Row(bench, "streamed upload", None, None, "", "", note)], [f"Upload {note}."])
    path = root / "bench-upload.mp4"
    _make_file(path, size)
    try:
        ours, raw, idle, notifications = await _measure(cfg, root, path)
    finally:
        path.unlink(missing_ok=True)
    gib = size / GIB
    raw_label = "raw httpx2 streaming multipart upload (bench process)"
    section = Section(
        [
            Row(
                bench,
                f"peak RSS growth during the upload (VmHWM − RSS before), worst of {REPS}",
                max(s.growth for s in ours) / MIB,
                max(s.growth for s in raw) / MIB,
                "MiB",
                raw_label,
            ),
            Row(
                bench,
                f"throughput, median of {REPS} (higher is better)",
                median([size / MIB / s.seconds for s in ours]),
                median([size / MIB / s.seconds for s in raw]),
                "MiB/s",
                raw_label,
            ),
            Row(
                bench,
                f"CPU time of the uploading process per GiB, median of {REPS}",
                median([s.uploader_cpu / gib for s in ours]),
                median([s.uploader_cpu / gib for s in raw]),
                "s",
                raw_label,
            ),
            Row(
                bench,
                "server peak RSS (VmHWM) during the uploads",
                max(s.peak for s in ours) / MIB,
                idle / MIB,
                "MiB",
                "the same server, idle, just before",
            ),
        ]
    )
    receiver = [(s.receiver_cpu / s.seconds) for s in ours + raw]
    section.notes.append(
        "Upload: the muse.ai emulator runs in its own process (`python -m bench.emulator_host museai`), so "
        "its spooling counts toward neither side; `mediamux serve` (stdio, no `--sandbox`) is pointed at it "
        "with MUSEAI_BASE_URL/MUSEAI_JOBS_URL/MUSEAI_API_KEY, the file inside MEDIAMUX_ALLOWED_DIRS. The "
        f"client passed a progress callback, as hosts do ({notifications} progress notifications per upload). "
        "Peak RSS is /proc/<pid>/status VmHWM after resetting it (clear_refs) to the RSS just before each "
        f"upload; {REPS} uploads each, alternating. The raw upload is httpx2 `files=` with an open file (64 KiB "
        "reads on the event loop); mediamux streams 1 MiB chunks read in a worker thread. Throughput is "
        f"bounded by the receiver: the emulator's multipart parsing kept it {min(receiver):.0%}–"
        f"{max(receiver):.0%} busy on one core, so the CPU row says more about the uploader itself."
    )
    return section
