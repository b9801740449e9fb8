"""An agent's session replayed over stdio, every status it is told checked against the provider's truth.

The real ``mediamux serve`` process talks to a MuAPI emulator running in this test process, whose
clock the test holds: between calls the test moves provider time, so "what MuAPI would say now" is
known exactly and every answer the agent gets can be compared with it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator
from tests.test_e2e import server_env

KEY = "agent-session-key"
VIDEO = {"endpoint": "kling-v2.1-master-t2v", "params": {"prompt": "rain on a window", "duration": 5}}
SESSION_TIMEOUT_S = 90


class Provider:
    """The emulator and the time it lives in."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.emulator = MuapiEmulator(now=lambda: self.t, job_seconds=60.0, master_key=KEY)

    def truth(self, request_id: str) -> str:
        return str(self.emulator._jobs[request_id].status_at(self.t))


def told(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return dict(result.structured_content)


def agrees(told_status: str, truth: str) -> bool:
    # A finished job whose files are still downloading is, truthfully, not yet what was asked for.
    return told_status == truth or (truth == "completed" and told_status == "saving_outputs")


async def test_every_status_an_agent_is_told_matches_the_provider(tmp_path: Path) -> None:
    provider = Provider()
    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with serve_on_loopback(provider.emulator.app) as url:
            provider.emulator.base_url = url
            env = server_env(tmp_path, MUAPI_API_KEY=KEY, MUAPI_BASE_URL=f"{url}/api/v1")
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "mediamux", "serve"], env=env, cwd=tmp_path
            )
            async with Client(params) as client:
                # 1. Start a long video without waiting: the answer is what MuAPI says right now.
                started = told(await client.call_tool("muapi_generate", {**VIDEO, "wait_s": 0}))
                rid = started["provider_job_id"]
                assert agrees(started["status"], provider.truth(rid)), (
                    started["status"],
                    provider.truth(rid),
                )

                # 2. Provider time passes; the job finishes upstream. Every read reports it as finished.
                provider.t += 600
                waited = told(
                    await client.call_tool("jobs_wait", {"job_id": started["job_id"], "wait_s": 20})
                )
                got = told(await client.call_tool("jobs_get", {"job_id": started["job_id"]}))
                listed = told(await client.call_tool("jobs_list", {}))
                assert provider.truth(rid) == "completed"
                assert waited["status"] == "completed" and waited["result"]["saved"]
                assert agrees(got["status"], "completed") and got["checked_at"] is not None
                assert [j["status"] for j in listed["jobs"]] == ["completed"]

                # 3. A second video is cancelled: MuAPI cannot stop it, and the agent is told exactly that.
                second = told(
                    await client.call_tool(
                        "muapi_generate", {**VIDEO, "params": {"prompt": "fog"}, "wait_s": 0}
                    )
                )
                cancelled = told(await client.call_tool("jobs_cancel", {"job_id": second["job_id"]}))
                assert cancelled["status"] == "cancelled"
                assert provider.truth(second["provider_job_id"]) in ("queued", "processing")
                assert "may still run" in cancelled["note"] and "stands" in cancelled["note"]

                # 4. What the agent is told it spent is what MuAPI charged.
                costs = told(await client.call_tool("jobs_costs", {}))
    charged = round(25.0 - provider.emulator.balance_usd, 6)
    assert charged > 0
    assert costs["session"]["usd"] == pytest.approx(charged)
    assert costs["session"]["providers"]["muapi"]["entries"] == 2
