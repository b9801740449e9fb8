"""What an agent is told about a job is true: fresh status, cancel for every job, complete costs,
progress that only rises. Checked against the emulators' own records."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import DriverBase, JobEngine, Outcome
from mediamux.jobs.journal import Journal
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.test_muapi_tools import call, text

VIDEO = {"endpoint": "kling-v2.1-master-t2v", "params": {"prompt": "rain on a window", "duration": 5}}


async def ok(client: Client, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await call(client, name, args, **kw)
    assert not result.is_error, text(result)
    return dict(result.structured_content)


# -- status is never stale ------------------------------------------------------------------------


@pytest.mark.providers("muapi")
async def test_a_job_that_finished_upstream_is_never_reported_as_running(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    started = await ok(client, "muapi_generate", {**VIDEO, "wait_s": 0})
    assert started["status"] in ("queued", "running")
    clock.advance(600)  # the video is done at MuAPI; nobody has asked since

    got = await ok(client, "jobs_get", {"job_id": started["job_id"]})
    listed = await ok(client, "jobs_list", {})

    job = sandbox.muapi._jobs[started["provider_job_id"]]
    assert job.status_at(clock.monotonic()) == "completed"  # the emulator's own truth
    assert got["status"] in ("completed", "saving_outputs") and got["checked_at"] is not None
    [row] = listed["jobs"]
    assert row["status"] in ("completed", "saving_outputs") and row["checked_at"] is not None


@pytest.mark.providers("muapi")
async def test_wait_s_zero_makes_one_poll_then_answers(
    client: Client, sandbox: Sandbox, clock: FakeClock
) -> None:
    started = await ok(client, "muapi_generate", {**VIDEO, "wait_s": 0})
    polls = sandbox.muapi.polls.get(started["provider_job_id"], 0)
    clock.advance(600)

    checked = await ok(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 0})

    assert sandbox.muapi.polls[started["provider_job_id"]] == polls + 1
    assert checked["status"] in ("completed", "saving_outputs")


class Args(BaseModel):
    n: int


class CountingPolls(DriverBase):
    provider = "muapi"
    operation = "generate"
    title = "Stub"
    args_model = Args

    def __init__(self) -> None:
        self.polls = 0

    async def submit(self, args: Args, options: dict[str, Any], progress: Any) -> Outcome:
        return Outcome(status="running", provider_job_id=f"r{args.n}")

    async def poll(self, provider_job_id: str, args: Args, options: dict[str, Any]) -> Outcome:
        self.polls += 1
        return Outcome(status="running")


async def test_a_list_of_many_stale_jobs_refreshes_only_a_bounded_number(tmp_path: Path) -> None:
    from mediamux.jobs.engine import REFRESH_MANY

    clock = FakeClock()
    journal = Journal(tmp_path / "j.sqlite3")
    engine = JobEngine(journal, clock=clock)
    driver = CountingPolls()
    engine.register(driver)
    try:
        with anyio.fail_after(20):
            for n in range(60):
                await engine.run("muapi", "generate", Args(n=n), wait_s=0)
            polls_at_submit = driver.polls
            clock.advance(3600)
            refreshed = await engine.refresh_all(journal.list(limit=200))
    finally:
        journal.close()

    assert len(refreshed) == 60
    assert driver.polls - polls_at_submit == REFRESH_MANY


# -- cancel, for every job --------------------------------------------------------------------------


@pytest.mark.providers("muapi")
async def test_cancelling_a_muapi_job_stops_polling_and_says_the_charge_stands(
    client: Client, sandbox: Sandbox
) -> None:
    started = await ok(client, "muapi_generate", {**VIDEO, "wait_s": 0})

    cancelled = await ok(client, "jobs_cancel", {"job_id": started["job_id"]})
    polls = dict(sandbox.muapi.polls)
    later = (await call(client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 30})).structured_content

    assert cancelled["status"] == "cancelled"
    assert "no way to stop a job" in cancelled["note"] and "charge for it stands" in cancelled["note"]
    assert cancelled["cost"]["usd"] == started["cost"]["usd"] and cancelled["cost"]["usd"] > 0
    assert later["status"] == "cancelled" and sandbox.muapi.polls == polls


@pytest.mark.providers("mixpeek")
async def test_cancelling_a_mixpeek_index_job_stops_the_task_upstream(
    client: Client, sandbox: Sandbox
) -> None:
    started = await ok(
        client,
        "mixpeek_index_url",
        {
            "url": "https://media.example.com/videos/city_night_walk.mp4",
            "collection_id": "clips",
            "wait_s": 0,
        },
    )

    cancelled = await ok(client, "jobs_cancel", {"job_id": started["job_id"]})

    assert cancelled["status"] == "cancelled" and "Mixpeek stopped the job" in cancelled["note"]
    assert sandbox.mixpeek.task_status(started["provider_job_id"]) == "CANCELED"


@pytest.mark.providers("muapi")
async def test_cancelling_a_finished_job_changes_nothing(client: Client) -> None:
    done = await ok(
        client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}
    )

    again = await ok(client, "jobs_cancel", {"job_id": done["job_id"]})

    assert again["status"] == "completed" and "nothing was cancelled" in again["note"]


# -- costs are complete -------------------------------------------------------------------------------


@pytest.mark.providers("museai", "muzaic")
async def test_every_job_is_in_the_ledger_with_what_its_provider_reported(
    make_server: Callable[..., MediamuxServer], files_dir: Path
) -> None:
    from mediamux.sandbox.media import wav_sequence_bytes

    (files_dir / "talk.wav").write_bytes(wav_sequence_bytes([(1.0, 440.0), (0.3, None), (1.0, 330.0)]))
    async with Client(make_server()) as client:
        speech = await ok(client, "museai_transcribe", {"path": "talk.wav"})
        music = await ok(client, "muzaic_generate_music", {"duration": 30})
        listed = await ok(client, "jobs_list", {})
        costs = await ok(client, "jobs_costs", {})
        with anyio.fail_after(10):
            resource = json.loads((await client.read_resource("mediamux://costs")).contents[0].text)

    assert speech["cost"]["note"] == "not reported by muse.ai"
    assert music["cost"]["tokens"] == 30
    by_provider = {row["provider"]: row for row in listed["jobs"]}
    assert by_provider["muzaic"]["cost"]["tokens"] == 30
    assert by_provider["museai"]["cost"]["note"] is None or by_provider["museai"]["cost"]["usd"] is None
    for report in (costs["session"], costs["today"], costs["all_time"], resource["session"]):
        assert report["providers"]["museai"]["entries"] == 1
        assert report["providers"]["museai"]["note"] == "not reported by muse.ai"
        assert report["providers"]["muzaic"]["tokens"] == 30


# -- progress only rises --------------------------------------------------------------------------------


@pytest.mark.providers("museai")
async def test_auto_subtitles_progress_is_one_rising_sequence_that_names_its_steps(
    client: Client, files_dir: Path
) -> None:
    from tests.test_museai_tools import SIX_WORDS_WAV, upload

    video = await upload(client, files_dir, "briefing.wav", SIX_WORDS_WAV)
    seen: list[tuple[float, float | None, str]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message or ""))

    made = await ok(client, "museai_auto_subtitles", {"svid": video["svid"]}, progress_callback=on_progress)

    values = [v for v, _, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values), values
    assert all(total is None or value <= total for value, total, _ in seen)
    messages = " | ".join(m for _, _, m in seen)
    for step in ("step 1 of 4", "step 2 of 4", "step 3 of 4", "step 4 of 4"):
        assert step in messages
    assert made["cost"]["note"] == "not reported by muse.ai"


def _wav(seconds: float) -> bytes:
    from mediamux.sandbox.media import wav_sequence_bytes

    return wav_sequence_bytes([(seconds, 440.0)])


MULTI_STEP: list[tuple[str, dict[str, Any], dict[str, bytes]]] = [
    # (tool, arguments, files it reads): each reports several steps and at least one byte transfer.
    (
        "muapi_generate",
        {"endpoint": "nano-banana-edit", "params": {"prompt": "merge", "images_list": ["a.png", "b.png"]}},
        {"a.png": b"\x89PNG\r\n\x1a\n" + b"a" * 300_000, "b.png": b"\x89PNG\r\n\x1a\n" + b"b" * 200_000},
    ),
    ("museai_upload_video", {"path": "talk.wav", "wait_ready": True}, {"talk.wav": _wav(2.0)}),
    ("museai_transcribe", {"path": "talk.wav"}, {"talk.wav": _wav(2.0)}),
    (
        "mixpeek_index_file",
        {"path": "clip.mp4", "collection_id": "clips"},
        {"clip.mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 800},
    ),
]


@pytest.mark.parametrize(("tool", "args", "files"), MULTI_STEP, ids=[t for t, _, _ in MULTI_STEP])
async def test_every_multi_step_tool_reports_one_rising_progress_sequence(
    make_server: Callable[..., MediamuxServer],
    files_dir: Path,
    tool: str,
    args: dict[str, Any],
    files: dict[str, bytes],
) -> None:
    for name, data in files.items():
        (files_dir / name).write_bytes(data)
    seen: list[tuple[float, float | None, str]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message or ""))

    async with Client(make_server()) as client:
        result = await call(client, tool, args, progress_callback=on_progress)

    assert not result.is_error, text(result)
    values = [v for v, _, _ in seen]
    assert len(values) >= 2 and all(b > a for a, b in itertools.pairwise(values)), values
    assert all(total is None or value <= total for value, total, _ in seen)
    assert all(message for _, _, message in seen)  # each step says what it is
