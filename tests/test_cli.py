"""The command line: catalog, doctor and journal listing (serve and demo are covered end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediamux.cli import main


def test_tools_json_lists_every_tool_with_annotations_and_token_estimates(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAMUX_HOME", str(home))

    assert main(["tools", "--all", "--json"]) == 0

    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"muapi_generate", "jobs_wait"} <= names
    generate = next(r for r in rows if r["name"] == "muapi_generate")
    assert generate["toolset"] == "muapi"
    assert generate["annotations"]["readOnlyHint"] is False
    assert 0 < generate["tokens_visible"] <= generate["tokens_full"]


def test_doctor_in_sandbox_reaches_the_emulator_and_never_prints_a_key(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAMUX_HOME", str(home))
    monkeypatch.setenv("MUSEAI_API_KEY", "CANARY-museai-123456")

    assert main(["doctor", "--sandbox"]) == 0

    out = capsys.readouterr().out
    assert "SANDBOX" in out and "balance $25.00" in out
    assert "CANARY" not in out
    assert str(home) in out


def test_doctor_reports_an_unreachable_provider_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAMUX_HOME", str(home))
    monkeypatch.setenv("MUAPI_API_KEY", "CANARY-muapi-abcdef")
    monkeypatch.setenv("MUAPI_BASE_URL", "http://127.0.0.1:9/api/v1")  # discard port: nothing listens

    assert main(["doctor"]) == 1

    out = capsys.readouterr().out
    assert "NOT reachable" in out and "could not connect" in out
    assert "CANARY" not in out


@pytest.mark.unit
def test_jobs_command_says_when_there_is_no_journal(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAMUX_HOME", str(home))

    assert main(["jobs"]) == 0
    assert "no journal yet" in capsys.readouterr().out


@pytest.mark.unit
def test_a_configuration_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAMUX_TOOLSETS", "vidz")

    with pytest.raises(SystemExit, match="MEDIAMUX_TOOLSETS"):
        main(["jobs"])


async def test_login_museai_writes_a_new_key_to_a_private_file_and_never_prints_it(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    import anyio

    from mediamux.sandbox.loopback import serve_on_loopback
    from mediamux.sandbox.museai import MuseaiEmulator

    emulator = MuseaiEmulator(login_email="me@example.com", login_password="correct horse")
    async with serve_on_loopback(emulator.app) as url:
        monkeypatch.setenv("MEDIAMUX_HOME", str(home))
        monkeypatch.setenv("MUSEAI_BASE_URL", f"{url}/api")
        monkeypatch.setattr("getpass.getpass", lambda prompt="": "correct horse")
        code = await anyio.to_thread.run_sync(main, ["login", "museai", "--email", "me@example.com"])
        monkeypatch.setattr("getpass.getpass", lambda prompt="": "wrong")
        refused = await anyio.to_thread.run_sync(main, ["login", "museai", "--email", "me@example.com"])
    emulator.close()

    out = capsys.readouterr()
    assert code == 0 and refused == 1
    [key_file] = (home / "keys").iterdir()
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key and key not in out.out and key not in out.err
    assert "MUSEAI_API_KEY" in out.out
    assert "correct horse" not in out.out + out.err


async def test_doctor_says_plainly_when_museai_does_not_answer_as_documented(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from mediamux.cli import _doctor
    from mediamux.config import Settings
    from mediamux.sandbox.loopback import serve_on_loopback

    async def landing(request: object) -> HTMLResponse:
        return HTMLResponse("<!doctype html><html><body>Meet your AI agent</body></html>")

    site = Starlette(routes=[Route("/{path:path}", landing)])
    async with serve_on_loopback(site) as url:
        settings = Settings(
            MEDIAMUX_HOME=str(home), MUSEAI_API_KEY="k", MUSEAI_BASE_URL=f"{url}/api", MUSEAI_JOBS_URL=url
        )
        assert await _doctor(settings) == 1

    out = capsys.readouterr().out
    assert "muse.ai  key set; NOT reachable: muse.ai's video API did not answer as documented" in out
    assert "different product" in out
