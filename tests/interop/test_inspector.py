"""The MCP Inspector CLI (``@modelcontextprotocol/inspector`` 2.x, on Node 22) against ``mediamux serve --sandbox``.

Each step is one ``inspector --cli`` process, as a developer or a CI script would run it: over stdio the
Inspector spawns the server itself (so a job started by one call is read back by the next from the
journal on disk); over Streamable HTTP it sends the bearer token as a header. Both protocol eras the
Inspector speaks are covered: ``legacy`` (2025-11-25 initialize handshake) and ``modern`` (2026-07-28).

Installed by scripts/interop.sh: Node 22 from the ``node@22`` npm package in ``.interop/node``, the
Inspector in ``.interop/inspector``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import CALL_TIMEOUT_S, CORE_TOOLS, INTEROP_DIR, HttpServer, generate_args, missing

NODE = INTEROP_DIR / "node" / "node_modules" / ".bin" / "node"
INSPECTOR_BIN = INTEROP_DIR / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
ERAS = ["legacy", "modern"]
SERVER_INFO = "io.modelcontextprotocol/serverInfo"  # where 2026-07-28 results carry the server's identity


@dataclass
class Inspector:
    node: Path
    script: Path
    home: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.node), str(self.script), "--cli", "--format", "json", *args],
            env={
                "PATH": os.environ.get("PATH", ""),
                **(env or {}),
                "HOME": str(self.home),  # the Inspector's catalog and client config land here
                "MCP_AUTO_OPEN_ENABLED": "false",  # never try to open a browser for OAuth
            },
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        done = self.run(*args, env=env)
        assert done.returncode == 0, (
            f"inspector {args} exited {done.returncode}:\n{done.stderr}\n{done.stdout}"
        )
        payload = json.loads(done.stdout)
        assert "error" not in payload, payload
        return dict(payload["result"])


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    if not (NODE.exists() and INSPECTOR_BIN.exists()):
        missing("the MCP Inspector with Node 22", f"expected {NODE} and {INSPECTOR_BIN}")
    version = subprocess.run(
        [str(NODE), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 22, f"the Inspector needs Node >= 22, got {version}"
    home = tmp_path_factory.mktemp("inspector-home")
    return Inspector(NODE, INSPECTOR_BIN.resolve(), home)


def tool_payload(result: dict[str, Any]) -> dict[str, Any]:
    assert result.get("isError") is not True, result
    data = result.get("structuredContent")
    assert isinstance(data, dict), result
    return data


def check_era(result: dict[str, Any], era: str) -> None:
    """A 2026-07-28 (modern) result names the server in its _meta; 2025-11-25 results do not.

    Not checked on tools/list: the Inspector merges its pages into a fresh object without the _meta.
    """
    if era == "modern":
        assert result["_meta"][SERVER_INFO]["name"] == "mediamux", result.get("_meta")
    else:
        assert SERVER_INFO not in (result.get("_meta") or {}), result["_meta"]


def check_session(inspector: Inspector, era: str, target: list[str], env: dict[str, str] | None) -> None:
    """tools/list, a paid job tool, the job and cost resources: the walk a developer does in the Inspector."""

    def run(*args: str) -> dict[str, Any]:
        return inspector.ok("--protocol-era", era, *args, *target, env=env)

    listed = run("--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) >= CORE_TOOLS
    for tool in tools.values():
        assert tool["inputSchema"]["type"] == "object", tool["name"]
        assert tool.get("annotations"), f"{tool['name']} has no annotations"

    started = run(
        "--method",
        "tools/call",
        "--tool-name",
        "muapi_generate",
        "--tool-args-json",
        json.dumps(generate_args(f"a lighthouse, from the Inspector ({era})", wait_s=1)),
    )
    job = tool_payload(started)
    check_era(started, era)
    assert job["status"] in ("queued", "running", "completed"), job
    assert job["job_id"].startswith("job_"), job
    assert job["cost"]["usd"] > 0, job
    links = [c for c in started["content"] if c["type"] == "resource_link"]
    assert f"mediamux://jobs/{job['job_id']}" in {c["uri"] for c in links}, started["content"]

    got = tool_payload(
        run(
            "--method",
            "tools/call",
            "--tool-name",
            "jobs_get",
            "--tool-args-json",
            json.dumps({"job_id": job["job_id"]}),
        )
    )
    assert (got["job_id"], got["provider"], got["operation"]) == (job["job_id"], "muapi", "generate")

    resources = run("--method", "resources/list")
    assert {"mediamux://jobs", "mediamux://costs"} <= {r["uri"] for r in resources["resources"]}
    templates = run("--method", "resources/templates/list")
    assert "mediamux://jobs/{job_id}" in {t["uriTemplate"] for t in templates["resourceTemplates"]}

    job_doc = run("--method", "resources/read", "--uri", f"mediamux://jobs/{job['job_id']}")
    assert json.loads(job_doc["contents"][0]["text"])["job_id"] == job["job_id"]

    costs = run("--method", "resources/read", "--uri", "mediamux://costs")
    content = costs["contents"][0]
    assert content["uri"] == "mediamux://costs"
    assert content["mimeType"] == "application/json"
    check_era(costs, era)
    ledger = json.loads(content["text"])
    assert ledger["all_time"]["providers"]["muapi"]["entries"] >= 1
    assert ledger["all_time"]["usd"] >= job["cost"]["usd"]


# -- stdio: the Inspector spawns `mediamux serve --sandbox` itself ------------------------------------


@pytest.mark.parametrize("era", ERAS)
def test_stdio_list_call_and_read(
    inspector: Inspector, mediamux_bin: Path, server_env: dict[str, str], era: str
) -> None:
    server_vars = [f"{k}={server_env[k]}" for k in ("MEDIAMUX_HOME", "MEDIAMUX_ALLOWED_DIRS")]
    target = [*(a for v in server_vars for a in ("-e", v)), str(mediamux_bin), "serve", "--sandbox"]
    check_session(inspector, era, ["--transport", "stdio", *target], env=server_env)


def test_stdio_tool_schemas_pass_the_inspectors_strict_portability_check(
    inspector: Inspector, mediamux_bin: Path, server_env: dict[str, str]
) -> None:
    # --strict exits 6 when any tool schema has an error-severity portability problem.
    done = inspector.run(
        "--strict",
        "--method",
        "tools/list",
        "-e",
        f"MEDIAMUX_HOME={server_env['MEDIAMUX_HOME']}",
        str(mediamux_bin),
        "serve",
        "--sandbox",
        env=server_env,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr}"
    assert "error:" not in done.stderr.lower(), done.stderr


# -- Streamable HTTP with the bearer token ---------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
def test_http_with_bearer_token_list_call_and_read(
    inspector: Inspector, http_server: HttpServer, era: str
) -> None:
    target = [
        "--transport",
        "http",
        "--stored-auth-only",
        "--server-url",
        http_server.mcp_url,
        "--header",
        f"Authorization: Bearer {http_server.token}",
    ]
    check_session(inspector, era, target, env=None)


@pytest.mark.parametrize("header", [None, "Authorization: Bearer not-the-token"])
def test_http_without_the_right_token_is_refused(
    inspector: Inspector, http_server: HttpServer, header: str | None
) -> None:
    args = ["--transport", "http", "--stored-auth-only", "--server-url", http_server.mcp_url]
    if header:
        args += ["--header", header]
    done = inspector.run(*args, "--method", "tools/list")
    assert done.returncode != 0, done.stdout
    error = json.loads(done.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "auth_required", error
    assert "unauthorized" in error["message"], error
    assert http_server.token not in done.stdout + done.stderr
