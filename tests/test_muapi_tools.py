"""Every MuAPI tool through the real server and the in-memory MCP client.

Tool behaviour is checked in one protocol era; tests whose subject is the protocol (progress, resources,
the error-result shape) are marked ``both_eras``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mediamux.sandbox import Sandbox

pytestmark = pytest.mark.providers("muapi")

GEN = {"endpoint": "flux-schnell-image", "params": {"prompt": "a red fox in snow"}}


async def call(client: Client, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    with anyio.fail_after(30):
        return await client.call_tool(name, args or {}, **kw)


def text(result: Any) -> str:
    return "\n".join(getattr(b, "text", "") for b in result.content)


@pytest.mark.both_eras
async def test_generate_waits_for_the_job_and_returns_outputs_cost_and_a_saved_file(
    client: Client, sandbox: Sandbox, home: Path
) -> None:
    seen: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    result = await call(client, "muapi_generate", GEN, progress_callback=progress)

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "completed"
    assert data["provider"] == "muapi" and data["operation"] == "generate"
    assert data["cost"]["usd"] == pytest.approx(0.003)
    assert data["cost"]["source"] == "body+headers"
    assert data["cost"]["balance_usd"] is not None
    saved = data["result"]["saved"]
    assert len(saved) == 1 and saved[0]["uri"].startswith("mediamux://outputs/")
    assert Path(saved[0]["path"]).read_bytes().startswith(b"\x89PNG")
    assert Path(saved[0]["path"]).parent == home / "outputs"
    assert any("submitting" in m for m in seen) and any("completed" in m for m in seen)
    assert sandbox.muapi.submissions == 1
    links = [b for b in result.content if getattr(b, "type", "") == "resource_link"]
    assert {str(link.uri) for link in links} >= {f"mediamux://jobs/{data['job_id']}", saved[0]["uri"]}


async def test_generate_uploads_local_files_named_in_url_params_first(
    client: Client, sandbox: Sandbox, files_dir: Path
) -> None:
    (files_dir / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cat" * 100)

    result = await call(
        client,
        "muapi_generate",
        {"endpoint": "ai-image-upscale", "params": {"image_url": "cat.png"}, "save_outputs": False},
    )

    assert not result.is_error, text(result)
    assert result.structured_content["status"] == "completed"
    # The emulator saw one upload and then a generation whose image_url is the hosted upload URL.
    posts = [p for m, p in sandbox.muapi.requests if m == "POST"]
    assert posts == ["/api/v1/upload_file", "/api/v1/ai-image-upscale"]


async def test_generate_rejects_a_local_path_outside_the_allowed_folders_before_any_call(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x")

    result = await call(
        client, "muapi_generate", {"endpoint": "ai-image-upscale", "params": {"image_url": "../secret.png"}}
    )

    assert result.is_error
    assert "MEDIAMUX_ALLOWED_DIRS" in text(result)
    assert result.meta["mediamux/error"]["class"] == "invalid_input"
    assert sandbox.muapi.requests == []


@pytest.mark.both_eras
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"endpoint": "../keys", "params": {}}, "endpoint"),
        ({"endpoint": "flux-schnell-image", "params": {}, "wait_s": -1}, "wait_s"),
        (
            {"endpoint": "flux-schnell-image", "params": {}, "webhook_url": "http://plain.example/x"},
            "webhook_url",
        ),
        ({"endpoint": "flux-schnell-image"}, "params"),
    ],
)
async def test_generate_with_invalid_arguments_fails_clearly_and_calls_nothing(
    client: Client, sandbox: Sandbox, args: dict[str, Any], fragment: str
) -> None:
    result = await call(client, "muapi_generate", args)

    assert result.is_error
    assert fragment in text(result)
    assert sandbox.muapi.requests == []


@pytest.mark.parametrize(
    ("endpoint", "instead"),
    [
        ("keys", "muapi_create_key"),
        ("account/topup", "muapi_topup"),
        ("predictions/abc/result", "muapi_get_result"),
    ],
)
async def test_generate_refuses_muapi_account_and_api_paths_and_names_the_tool_that_does_it(
    client: Client, sandbox: Sandbox, endpoint: str, instead: str
) -> None:
    result = await call(
        client, "muapi_generate", {"endpoint": endpoint, "params": {"name": "x", "amount": 50}}
    )
    jobs = await call(client, "jobs_list", {})

    assert result.is_error
    assert result.meta["mediamux/error"]["class"] == "invalid_input"
    assert "is not a model endpoint" in text(result) and instead in text(result)
    assert sandbox.muapi.requests == []  # no key created, no checkout opened, nothing journaled
    assert jobs.structured_content["jobs"] == []


async def test_generate_with_an_empty_wallet_says_how_to_top_up_and_creates_no_job(
    client: Client, sandbox: Sandbox
) -> None:
    sandbox.muapi.balance_usd = 0.0

    result = await call(client, "muapi_generate", GEN)

    assert result.is_error
    message = text(result)
    assert "MuAPI generate: not enough credits (402)" in message
    assert "muapi_topup" in message
    assert result.meta["mediamux/error"]["class"] == "insufficient_credits"
    assert sandbox.muapi.submissions == 0


async def test_unknown_model_endpoint_is_reported_as_not_found(client: Client) -> None:
    result = await call(client, "muapi_generate", {"endpoint": "no-such-model", "params": {"prompt": "x"}})

    assert result.is_error
    assert result.meta["mediamux/error"]["class"] == "not_found"
    assert "no-such-model" in text(result)


async def test_missing_required_model_input_is_reported_with_the_field_name(client: Client) -> None:
    result = await call(client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {}})

    assert result.is_error
    assert result.meta["mediamux/error"]["class"] == "invalid_input"
    assert "prompt" in text(result)


@pytest.mark.both_eras
async def test_failed_job_is_an_error_result_that_shows_the_refund(client: Client) -> None:
    result = await call(
        client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "boom [fail]"}}
    )

    assert result.is_error
    data = result.structured_content
    assert data["status"] == "failed"
    assert data["error"]["class"] == "provider_error"
    assert data["error"]["message"].startswith("MuAPI job failed:")
    assert data["cost"]["refunded"] is True
    assert "refunded" in text(result)


async def test_cancelled_job_is_terminal_not_polled_until_the_deadline(
    client: Client, sandbox: Sandbox
) -> None:
    result = await call(
        client, "muapi_generate", {"endpoint": "flux-schnell-image", "params": {"prompt": "stop [cancel]"}}
    )

    assert result.is_error
    assert result.structured_content["status"] == "cancelled"
    assert result.structured_content["elapsed_s"] < 45


async def test_get_result_reads_a_prediction_and_links_it_to_our_job(client: Client) -> None:
    done = (await call(client, "muapi_generate", GEN)).structured_content

    result = await call(client, "muapi_get_result", {"request_id": done["provider_job_id"]})

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "completed" and len(data["outputs"]) == 1
    assert data["job_id"] == done["job_id"]
    assert data["cost"]["usd"] == pytest.approx(0.003)


async def test_get_result_of_an_unknown_request_is_not_found(client: Client) -> None:
    result = await call(client, "muapi_get_result", {"request_id": "nope"})

    assert result.is_error and result.meta["mediamux/error"]["class"] == "not_found"


@pytest.mark.both_eras
async def test_upload_file_streams_a_local_file_and_returns_its_hosted_url(
    client: Client, files_dir: Path
) -> None:
    payload = os.urandom(300_000)
    (files_dir / "clip.mp4").write_bytes(payload)
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    result = await call(client, "muapi_upload_file", {"path": "clip.mp4"}, progress_callback=on_progress)

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["size_bytes"] == len(payload)
    import httpx2

    async with httpx2.AsyncClient() as http:
        served = await http.get(data["url"])
    assert served.content == payload
    assert progress and progress[-1][1] is not None and progress[-1][0] == progress[-1][1]


async def test_balance_topup_and_key_management_round_trip(client: Client, home: Path) -> None:
    balance = await call(client, "muapi_get_balance")
    assert balance.structured_content["balance_usd"] == pytest.approx(25.0)

    topup = await call(client, "muapi_topup", {"amount": 20})
    assert topup.structured_content["checkout_url"].startswith("https://checkout.stripe.com/")

    created = await call(client, "muapi_create_key", {"name": "ci", "is_test": True})
    assert not created.is_error, text(created)
    key_file = Path(created.structured_content["key_file"])
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in text(created) and key not in str(created.structured_content)

    listed = await call(client, "muapi_list_keys")
    ids = [k["id"] for k in listed.structured_content["keys"]]
    assert created.structured_content["id"] in ids
    assert key not in text(listed)

    deleted = await call(client, "muapi_delete_key", {"key_id": created.structured_content["id"]})
    assert not deleted.is_error
    again = await call(client, "muapi_delete_key", {"key_id": created.structured_content["id"]})
    assert again.is_error and again.meta["mediamux/error"]["class"] == "not_found"


async def test_topup_below_one_dollar_is_refused_before_any_call(client: Client, sandbox: Sandbox) -> None:
    result = await call(client, "muapi_topup", {"amount": 0})

    assert result.is_error
    assert sandbox.muapi.requests == []


async def test_models_can_be_listed_filtered_and_described_with_their_input_schema(client: Client) -> None:
    everything = (await call(client, "muapi_list_models")).structured_content
    assert everything["total"] >= 20

    videos = (await call(client, "muapi_list_models", {"category": "Text to Video"})).structured_content
    assert videos["models"] and all(m["category"] == "Text to Video" for m in videos["models"])

    flux = (await call(client, "muapi_list_models", {"query": "flux", "limit": 2})).structured_content
    assert len(flux["models"]) <= 2 and all("flux" in m["name"] for m in flux["models"])

    detail = await call(client, "muapi_get_model", {"name": "flux-dev-image"})
    schema = detail.structured_content["input_schema"]
    assert "prompt" in schema["properties"] and "prompt" in schema["required"]


@pytest.mark.both_eras
async def test_muapi_prediction_resource_reads_live_status(client: Client) -> None:
    done = (await call(client, "muapi_generate", GEN)).structured_content

    with anyio.fail_after(10):
        read = await client.read_resource(f"muapi://predictions/{done['provider_job_id']}")

    assert '"completed"' in read.contents[0].text


@pytest.mark.both_eras
async def test_saved_output_is_readable_as_a_resource_with_its_media_type(client: Client) -> None:
    done = (await call(client, "muapi_generate", GEN)).structured_content
    uri = done["result"]["saved"][0]["uri"]

    with anyio.fail_after(10):
        read = await client.read_resource(uri)

    content = read.contents[0]
    assert content.mime_type == "image/png"
    import base64

    assert base64.b64decode(content.blob).startswith(b"\x89PNG")
