"""Webhooks end to end, over real HTTP on loopback: the server is reachable at MEDIAMUX_PUBLIC_URL (itself),
its sandbox MuAPI emulator POSTs there when a job finishes, as MuAPI documents, and the job is woken at once.
A webhook only wakes a job: a forged body changes nothing, and unknown tokens get an empty 404.

Real time throughout (the emulator's image job takes about 4 s). The journal is seeded with jobs of the
same model that took a minute, so without the webhook the first poll would come about a minute in:
completing within the bounded wait below is the webhook's doing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mediamux.config import Settings
from mediamux.jobs.journal import Journal
from mediamux.jobs.models import JobRecord
from mediamux.registry import make_sandbox
from mediamux.sandbox import Sandbox
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.server.app import build_server
from mediamux.server.hooks import MAX_BODY_BYTES
from mediamux.server.http import build_http_app
from tests.test_e2e import free_port

TOKEN = "hooks-test-token"
MODEL = "flux-schnell-image"
SEEDED_S = 60.0  # what earlier jobs of MODEL took, per the journal
BOUND_S = 30.0  # far less than SEEDED_S: only a webhook can finish a job inside it


@dataclass
class Live:
    base: str
    sandbox: Sandbox
    client: Client
    journal_path: Path

    @property
    def emulator(self) -> Any:
        return self.sandbox.muapi


def seed_history(path: Path) -> None:
    journal = Journal(path)
    try:
        for n in range(5):
            t = 1_700_000_000.0 + n
            journal.save(
                JobRecord(
                    job_id=f"job_seed{n}",
                    provider="muapi",
                    operation="generate",
                    dedup_key=f"seed{n}",
                    args={"endpoint": MODEL, "params": {"prompt": f"seed {n}"}},
                    options={"_accepted_ts": t, "_finished_s": SEEDED_S},
                    status="completed",
                    submit_state="accepted",
                    session_id="earlier",
                    submitted_ts=t,
                    updated_ts=t + SEEDED_S,
                    completed_ts=t + SEEDED_S,
                    polls=3,
                    finalized=True,
                    price_key=MODEL,
                )
            )
    finally:
        journal.close()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = make_sandbox(only=("muapi",))  # real time: the emulator's jobs finish while we wait
    yield box
    box.close()


@asynccontextmanager
async def live_server(tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[Live]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        MEDIAMUX_HOME=str(tmp_path / "home"),
        MEDIAMUX_ALLOWED_DIRS=str(tmp_path),
        MEDIAMUX_TOOLSETS="muapi,jobs",
        MEDIAMUX_PUBLIC_URL=base,
        MEDIAMUX_HTTP_TOKEN=TOKEN,
    )
    seed_history(settings.state_db)
    app = build_http_app(build_server(settings, sandbox=sandbox), settings, host="127.0.0.1", port=port)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60.0, trust_env=False)
    async with (
        serve_on_loopback(app, port=port),
        http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,  # type: ignore[arg-type]
    ):
        yield Live(base, sandbox, client, settings.state_db)


async def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def generate(prompt: str, wait_s: float) -> dict[str, Any]:
    return {"endpoint": MODEL, "params": {"prompt": prompt}, "wait_s": wait_s, "save_outputs": False}


def polls_in_journal(path: Path, job_id: str) -> int:
    journal = Journal(path)
    try:
        record = journal.get(job_id)
    finally:
        journal.close()
    assert record is not None
    return record.polls


async def test_the_providers_webhook_completes_a_job_long_before_its_first_poll(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with live_server(tmp_path, sandbox) as live:
        with anyio.fail_after(BOUND_S):
            done = await call(live.client, "muapi_generate", generate("a heron at dawn", wait_s=120))

        request_id = done["provider_job_id"]
        assert done["status"] == "completed" and done["elapsed_s"] < BOUND_S
        assert live.emulator.jobs[request_id].webhook_url.startswith(f"{live.base}/hooks/{done['job_id']}/")
        assert [w["id"] for w in live.emulator.webhooks_sent] == [request_id]
        assert live.emulator.polls[request_id] == 1  # the webhook's poll, and no other
        assert polls_in_journal(live.journal_path, done["job_id"]) == 1


async def test_a_forged_webhook_wakes_the_job_but_its_body_changes_nothing(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with live_server(tmp_path, sandbox) as live:
        with anyio.fail_after(BOUND_S):
            started = await call(live.client, "muapi_generate", generate("a forged heron", wait_s=0))
            request_id = started["provider_job_id"]
            hook = live.emulator.jobs[request_id].webhook_url
            forged = {
                "id": request_id,
                "status": "completed",
                "outputs": ["https://evil.example/not-what-was-made.png"],
                "cost": {"amount_usd": 0, "amount_credits": 0, "refunded": True},
            }
            async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as anyone:
                woken = await anyone.post(hook, json=forged)
                right_after = await call(live.client, "jobs_get", {"job_id": started["job_id"]})
                done = await call(live.client, "jobs_wait", {"job_id": started["job_id"], "wait_s": 25})

        assert woken.status_code == 204  # a real token: the job was asked about, nothing more
        assert right_after["status"] in ("queued", "running") and right_after["result"] is None
        assert done["status"] == "completed"
        outputs = done["result"]["outputs"]
        assert outputs and all(u.startswith(live.emulator.base_url) for u in outputs)
        assert done["cost"]["usd"] == started["cost"]["usd"] > 0  # MuAPI's charge, not the body's


async def test_wrong_tokens_unknown_jobs_and_oversized_bodies_are_refused_without_detail(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with live_server(tmp_path, sandbox) as live:
        with anyio.fail_after(BOUND_S):
            started = await call(live.client, "muapi_generate", generate("a guarded heron", wait_s=0))
            hook = live.emulator.jobs[started["provider_job_id"]].webhook_url
            job_url, token = hook.rsplit("/", 1)
            async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as anyone:
                wrong = await anyone.post(f"{job_url}/{token[::-1]}", json={})
                unknown = await anyone.post(f"{live.base}/hooks/job_nosuchjob/{token}", json={})
                garbage = await anyone.post(f"{live.base}/hooks/../mcp", json={})
                huge = await anyone.post(hook, content=b"x" * (MAX_BODY_BYTES + 1))
                read = await anyone.get(hook)
                mcp_needs_the_token = await anyone.post(f"{live.base}/mcp", json={})
            after = await call(live.client, "jobs_get", {"job_id": started["job_id"]})

    assert (wrong.status_code, unknown.status_code) == (404, 404)
    assert wrong.content == unknown.content == b""
    assert garbage.status_code in (401, 404)
    assert huge.status_code == 413
    assert read.status_code in (401, 405)  # only a POST is a webhook
    assert mcp_needs_the_token.status_code == 401
    assert after["status"] in ("queued", "running")
    assert json.dumps(after).count(token) == 0  # the token is never shown
