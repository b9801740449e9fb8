"""Two real ``mediamux serve --transport http`` processes on one PostgreSQL database, in front of one
shared set of emulators (served by the test process on loopback, on real time), as a team would run
them behind a load balancer.

What the emulators' request logs must show, whichever replica a call lands on:

* 20 identical concurrent paid calls spread over both replicas → one upstream submission;
* a $1 budget and ten concurrent $0.50 calls over both replicas → exactly two renders;
* SIGKILL the replica polling a job → the other completes it: one submission, one download;
* a client that gave up on replica A → ``jobs_wait`` on replica B returns the finished job;
* a change seen on replica A → reaches a ``subscriptions/listen`` stream on replica B.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourcesListChanged
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ResourceUpdatedNotification

from mediamux import registry
from mediamux.sandbox import Sandbox
from mediamux.sandbox.media import wav_bytes
from tests.support import eventually
from tests.test_e2e import (
    HTTP_TOKEN,
    HttpServer,
    free_port,
    raw_call,
    rpc_result,
    server_env,
    stop,
    wait_until_healthy,
)

IMAGE = "flux-schnell-image"
SUBMIT_PATH = f"/api/v1/{IMAGE}"
LEASE_S = "2"
CALL_TIMEOUT_S = 60
SPAWN_TIMEOUT_S = 90


@dataclass
class Deployment:
    sandbox: Sandbox
    replicas: list[HttpServer]

    def submissions(self) -> int:
        return sum(
            1 for method, path in self.sandbox.muapi.requests if method == "POST" and path == SUBMIT_PATH
        )

    def downloads(self) -> int:
        return sum(
            1
            for method, path in self.sandbox.muapi.requests
            if method == "GET" and path.startswith("/cdn/outputs/")
        )

    def polls(self) -> int:
        return sum(
            1 for method, path in self.sandbox.muapi.requests if method == "GET" and path.endswith("/result")
        )


def provider_env(sandbox: Sandbox, urls: dict[str, str]) -> dict[str, str]:
    """Each emulated provider's key and base URLs, as a deployment would set them for the real ones."""
    env: dict[str, str] = {}
    for provider, key in sandbox.keys.items():
        spec = registry.get(provider)
        env[spec.key_env] = key
        for host in spec.hosts:
            alias = spec.settings.model_fields[host.url_field].validation_alias
            assert isinstance(alias, str)
            env[alias] = urls[host.name].rstrip("/") + host.sandbox_path
    return env


@asynccontextmanager
async def deployment(
    tmp_path: Path, pg_url: str, *, job_seconds: float, **settings: str
) -> AsyncIterator[Deployment]:
    sandbox = registry.make_sandbox(job_seconds=job_seconds, only=("muapi", "museai", "muzaic"))
    async with AsyncExitStack() as stack:
        stack.callback(sandbox.close)
        urls = await stack.enter_async_context(sandbox.running())
        replicas: list[HttpServer] = []
        for name in ("a", "b"):
            root = tmp_path / name
            root.mkdir()
            port = free_port()
            env = server_env(
                root,
                MEDIAMUX_DATABASE_URL=pg_url,
                MEDIAMUX_LEASE_S=LEASE_S,
                MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN,
                MEDIAMUX_TOOLSETS="muapi,museai,muzaic,jobs",
                **provider_env(sandbox, urls),
                **settings,
            )
            stderr_path = root / "server.stderr"
            with stderr_path.open("wb") as errlog:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mediamux", "serve", "--transport", "http", "--port", str(port)],
                    env=env,
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errlog,
                )
            server = HttpServer(f"http://127.0.0.1:{port}", port, proc, stderr_path)
            stack.callback(stop, proc)
            replicas.append(server)
        for server in replicas:
            # Generous: two interpreters start at once on a shared CI machine.
            await wait_until_healthy(server, timeout_s=SPAWN_TIMEOUT_S)
        yield Deployment(sandbox, replicas)


def http() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=CALL_TIMEOUT_S)


async def call(
    server: HttpServer, name: str, arguments: dict[str, Any], *, timeout_s: float = CALL_TIMEOUT_S
) -> dict[str, Any]:
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=timeout_s
    ) as client:
        response = await raw_call(client, server.mcp_url, name, arguments)
    assert response.status_code == 200, response.text
    return rpc_result(response)


def data(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("isError"), result
    return dict(result["structuredContent"])


async def test_twenty_identical_paid_calls_over_two_replicas_make_one_upstream_submission(
    tmp_path: Path, pg_url: str
) -> None:
    results: list[dict[str, Any]] = [{} for _ in range(20)]
    with anyio.fail_after(120):
        async with deployment(tmp_path, pg_url, job_seconds=2) as d:

            async def one(i: int) -> None:
                args = {"endpoint": IMAGE, "params": {"prompt": "one heron, twenty askers"}, "wait_s": 30}
                results[i] = data(await call(d.replicas[i % 2], "muapi_generate", args))

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            submissions, downloads = d.submissions(), d.downloads()

    assert {r["job_id"] for r in results} == {results[0]["job_id"]}
    assert sum(not r["deduplicated"] for r in results) == 1
    assert all(r["status"] == "completed" for r in results), [r["status"] for r in results]
    assert submissions == 1
    assert downloads == 1


async def test_a_one_dollar_budget_takes_two_of_ten_fifty_cent_renders_over_two_replicas(
    tmp_path: Path, pg_url: str
) -> None:
    results: list[dict[str, Any]] = [{} for _ in range(10)]
    with anyio.fail_after(120):
        async with deployment(
            tmp_path, pg_url, job_seconds=2, MEDIAMUX_BUDGET_USD="1", MEDIAMUX_MUZAIC_USD_PER_TOKEN="0.01"
        ) as d:

            async def one(i: int) -> None:
                # 50 s of audio at 1 token a second and $0.01 a token: $0.50 each, each a different request.
                args = {"duration": 50, "tags": [i + 1], "wait_s": 0}
                results[i] = await call(d.replicas[i % 2], "muzaic_generate_music", args)

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one, i)
            await eventually(lambda: d.sandbox.muzaic.generations >= 2)
            generations = d.sandbox.muzaic.generations

    accepted = [r for r in results if not r.get("isError")]
    refused = [r for r in results if r.get("isError")]
    assert len(accepted) == 2, [r["content"][0]["text"] for r in accepted]
    assert all(r["_meta"]["mediamux/error"]["class"] == "budget" for r in refused)
    assert generations == 2


async def test_a_killed_replicas_job_is_completed_by_the_other_with_one_submission_and_one_download(
    tmp_path: Path, pg_url: str
) -> None:
    with anyio.fail_after(120):
        async with deployment(tmp_path, pg_url, job_seconds=6) as d:
            a, b = d.replicas
            args = {"endpoint": IMAGE, "params": {"prompt": "a replica falls over"}, "wait_s": 0}
            started = data(await call(a, "muapi_generate", args))
            assert started["status"] in ("queued", "running")
            await eventually(lambda: d.polls() >= 1, timeout_s=30)  # replica A is polling it
            a.proc.kill()
            a.proc.wait(timeout=10)

            done = data(await call(b, "jobs_wait", {"job_id": started["job_id"], "wait_s": 40}))
            submissions, downloads = d.submissions(), d.downloads()

    assert done["status"] == "completed", done
    assert len(done["result"]["saved"]) == 1
    assert Path(done["result"]["saved"][0]["path"]).is_relative_to(tmp_path / "b")  # saved by B
    assert submissions == 1
    assert downloads == 1


async def test_jobs_wait_on_replica_b_returns_a_job_whose_caller_gave_up_on_replica_a(
    tmp_path: Path, pg_url: str
) -> None:
    with anyio.fail_after(120):
        async with deployment(tmp_path, pg_url, job_seconds=4) as d:
            a, b = d.replicas
            args = {"endpoint": IMAGE, "params": {"prompt": "a dropped stream"}, "wait_s": 30}
            with pytest.raises(httpx2.TimeoutException):
                await call(a, "muapi_generate", args, timeout_s=1.5)  # the client's stream drops
            await eventually(lambda: d.submissions() == 1, timeout_s=30)
            listed = data(await call(b, "jobs_list", {"limit": 5}))["jobs"]
            assert len(listed) == 1

            done = data(await call(b, "jobs_wait", {"job_id": listed[0]["job_id"], "wait_s": 40}))
            submissions = d.submissions()

    assert done["status"] == "completed" and done["result"]["saved"], done
    assert submissions == 1


async def test_a_change_seen_on_replica_a_reaches_a_listen_stream_on_replica_b(
    tmp_path: Path, pg_url: str
) -> None:
    heard: list[Any] = []
    with anyio.fail_after(120):
        async with deployment(tmp_path, pg_url, job_seconds=2) as d:
            a, b = d.replicas
            async with (
                http() as client_http,
                Client(streamable_http_client(b.mcp_url, http_client=client_http), mode="auto") as client,  # type: ignore[arg-type]
                client.listen(resources_list_changed=True) as stream,
            ):
                created = data(await call(a, "museai_create_collection", {"name": "Made on A"}))
                async for event in stream:
                    heard.append(event)
                    break

    assert created["scid"]
    assert heard == [ResourcesListChanged()]


async def test_a_video_changed_on_replica_a_is_announced_to_a_legacy_subscriber_on_replica_b(
    tmp_path: Path, pg_url: str
) -> None:
    """2025-11-25 clients subscribe with resources/subscribe, which is not a listen stream: replica B
    relays what the database announces to its own subscribers."""
    updated: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            arrived.set()

    with anyio.fail_after(120):
        async with deployment(tmp_path, pg_url, job_seconds=0.5) as d:
            a, b = d.replicas
            clip = tmp_path / "a" / "talk.wav"
            clip.write_bytes(wav_bytes(1.0))
            video = data(await call(a, "museai_upload_video", {"path": str(clip), "title": "Talk"}))
            uri = f"museai://videos/{video['svid']}"
            async with (
                http() as client_http,
                Client(
                    streamable_http_client(b.mcp_url, http_client=client_http),  # type: ignore[arg-type]
                    mode="legacy",
                    message_handler=on_message,
                ) as client,
            ):
                with pytest.warns(MCPDeprecationWarning):
                    await client.subscribe_resource(uri)
                data(
                    await call(a, "museai_update_video", {"fid": video["fid"], "description": "edited on A"})
                )
                await arrived.wait()

    assert updated == [uri]
