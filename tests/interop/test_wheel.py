"""The published package works: the wheel, installed alone into a clean virtualenv, serves MCP.

``scripts/interop.sh`` builds the wheel (``pip wheel --no-deps``) into ``.interop/dist`` and installs it
into a new ``.interop/wheel`` with nothing but what its metadata asks for, resolved fresh from the
registry (which is where peers break: an unpinned ``mcp`` now resolves to 2.x under them). These tests
then run that install's own ``mediamux`` executable, driven by the SDK's ``Client`` from the project
virtualenv (this file runs there, with ``mcp`` 2.x).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tomllib
from pathlib import Path

import anyio
import pytest
from _support import (
    CALL_TIMEOUT_S,
    CORE_TOOLS,
    INTEROP_DIR,
    MEDIAMUX_BIN,
    REPO,
    missing,
    sandbox_env,
    start_http_server,
    stop,
)

try:
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
except ImportError:  # pragma: no cover - depends on the virtualenv
    missing("the mcp 2.x client", "run this file with the project's .venv/bin/python")

pytestmark = pytest.mark.anyio

WHEEL_VENV = INTEROP_DIR / "wheel"
WHEEL_BIN = WHEEL_VENV / "bin" / "mediamux"
WHEEL_PY = WHEEL_VENV / "bin" / "python"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel_bin() -> Path:
    if not WHEEL_BIN.exists():
        missing("the wheel's virtualenv", f"expected {WHEEL_BIN}")
    return WHEEL_BIN


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False, cwd=cwd
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_install_is_the_wheel_not_the_source_tree(wheel_bin: Path, tmp_path: Path) -> None:
    assert run(wheel_bin, "--version").strip() == f"mediamux {PROJECT['version']}"
    # Imported from the wheel venv's site-packages (run from an empty folder so src/ cannot leak in).
    where = run(WHEEL_PY, "-c", "import mediamux, sys; print(mediamux.__file__)", cwd=tmp_path).strip()
    assert Path(where).resolve().is_relative_to(WHEEL_VENV.resolve()), where
    direct_url = run(
        WHEEL_PY,
        "-c",
        "from importlib.metadata import distribution; print(distribution('mediamux').read_text('direct_url.json'))",
        cwd=tmp_path,
    )
    origin = json.loads(direct_url)
    assert origin["url"].endswith(".whl"), origin
    assert not origin.get("dir_info", {}).get("editable"), origin


def test_the_fresh_resolve_is_consistent_and_within_the_declared_bounds(wheel_bin: Path) -> None:
    run(WHEEL_PY, "-m", "pip", "check")
    versions = json.loads(
        run(
            WHEEL_PY,
            "-c",
            "import json; from importlib.metadata import version as v; "
            "print(json.dumps({n: v(n) for n in ['mcp', 'mcp-types', 'starlette', 'uvicorn', 'httpx2', 'pydantic']}))",
        )
    )
    assert versions["mcp"].split(".")[0] == "2", versions
    # Every runtime requirement the wheel publishes carries an upper bound, so a future major of a
    # dependency cannot slip into a fresh install silently.
    published = json.loads(
        run(
            WHEEL_PY,
            "-c",
            "import json; from importlib.metadata import requires; print(json.dumps(requires('mediamux')))",
        )
    )
    runtime = [r for r in published if "extra ==" not in r]
    assert any(r.startswith("mcp") for r in runtime), runtime
    for requirement in runtime:
        assert "<" in requirement, f"{requirement!r} has no upper bound"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_wheel_serves_stdio_in_both_eras(wheel_bin: Path, tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(
        command=str(wheel_bin), args=["serve", "--sandbox"], env=sandbox_env(tmp_path), cwd=tmp_path
    )
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
            assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            tools = (await client.list_tools()).tools
            balance = await client.call_tool("muapi_get_balance", {})
    assert {t.name for t in tools} >= CORE_TOOLS
    assert not balance.is_error, balance.content
    assert balance.structured_content["balance_usd"] > 0  # type: ignore[index]


async def test_wheel_serves_the_job_viewer_from_its_package_data(wheel_bin: Path, tmp_path: Path) -> None:
    # The viewer's HTML is a data file beside the code: a wheel that left it out would serve no MCP App.
    params = StdioServerParameters(
        command=str(wheel_bin), args=["serve", "--sandbox"], env=sandbox_env(tmp_path), cwd=tmp_path
    )
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with Client(params) as client:
            view = (await client.read_resource("ui://mediamux/job-viewer.html")).contents[0]
    assert view.mime_type == "text/html;profile=mcp-app"
    html = getattr(view, "text", "")
    assert html.startswith("<!doctype html>") and "</html>" in html
    assert "__MEDIAMUX_" not in html  # the policy and settings were filled in


async def test_wheel_lists_the_same_tools_as_the_source_install(wheel_bin: Path, tmp_path: Path) -> None:
    if not MEDIAMUX_BIN.exists():
        missing("the source install to compare with", f"expected {MEDIAMUX_BIN}")
    catalogs = []
    for binary in (wheel_bin, MEDIAMUX_BIN):
        root = tmp_path / binary.parent.parent.name
        params = StdioServerParameters(
            command=str(binary), args=["serve", "--sandbox"], env=sandbox_env(root), cwd=tmp_path
        )
        with anyio.fail_after(CALL_TIMEOUT_S):
            async with Client(params) as client:
                tools = (await client.list_tools()).tools
                resources = (await client.list_resource_templates()).resource_templates
        catalogs.append(({t.name for t in tools}, {r.uri_template for r in resources}))
    assert catalogs[0] == catalogs[1]


async def test_wheel_serves_streamable_http_with_a_token(wheel_bin: Path, tmp_path: Path) -> None:
    # The HTTP transport imports uvicorn and starlette, which only arrive through mcp's dependencies.
    server = start_http_server(wheel_bin, tmp_path, secrets.token_hex(16))
    try:
        with anyio.fail_after(CALL_TIMEOUT_S):
            http = httpx2.AsyncClient(headers=server.auth_headers, timeout=20.0)
            async with http, Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
                tools = (await client.list_tools()).tools
                balance = await client.call_tool("muapi_get_balance", {})
    finally:
        stop(server.proc)
    assert {t.name for t in tools} >= CORE_TOOLS
    assert not balance.is_error, balance.content
