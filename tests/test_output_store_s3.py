"""Saved outputs in S3-compatible storage (MEDIAMUX_OUTPUT_URL), against a real S3 endpoint on loopback.

The endpoint is moto's server mode started by these tests (tests/s3_endpoint.py): real HTTP, real
SigV4-signed requests from the real client, conditional writes answered 412 — no mock of the client.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from mediamux.config import Settings
from mediamux.files import OutputStoreError, save_output_bytes
from mediamux.files.s3 import S3OutputStore
from mediamux.sandbox import Sandbox
from mediamux.server.app import MediamuxServer
from tests.s3_endpoint import S3Endpoint
from tests.test_e2e import (
    HTTP_TOKEN,
    HttpServer,
    free_port,
    generate_args,
    serve_cmd,
    server_env,
    stop,
    wait_until_healthy,
)
from tests.test_muapi_tools import call, text

SECRET = S3Endpoint.SECRET_ACCESS_KEY
SERVE_TIMEOUT_S = 60  # two spawns and an image job, with room for a slow CI box


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def bucket(s3: S3Endpoint) -> str:
    return s3.create_bucket(f"outputs-{uuid.uuid4().hex[:12]}", versioned=True)


@pytest.fixture
def s3_env(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables of this endpoint, in this process (the client reads them at construction)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3.env()


def store_for(bucket: str, staging: Path, prefix: str = "team-a") -> S3OutputStore:
    return S3OutputStore(f"s3://{bucket}/{prefix}", staging_dir=staging)


# -- the store ---------------------------------------------------------------------------------------


async def test_two_replicas_storing_the_same_output_at_once_write_one_object_and_both_succeed(
    s3: S3Endpoint, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    replicas = [store_for(bucket, tmp_path / "a"), store_for(bucket, tmp_path / "b")]
    data = os.urandom(256 * 1024)
    saved: list[Any] = []

    async def save(i: int) -> None:
        saved.append(
            await save_output_bytes(data, replicas[i % 2], media_type="audio/wav", source="muzaic:x")
        )

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(save, i)

    digest = hashlib.sha256(data).hexdigest()
    name = f"{digest[:16]}.wav"
    assert {s.name for s in saved} == {name} and {s.sha256 for s in saved} == {digest}
    assert {s.path for s in saved} == {f"s3://{bucket}/team-a/{name}"}
    # Six saves, one write: every later conditional PUT was answered 412 and counted as done.
    assert len(s3.versions(bucket, f"team-a/{name}")) == 1
    assert s3.get(bucket, f"team-a/{name}") == (data, "audio/wav")
    # Staging leaves nothing behind on either replica.
    assert [p for p in (tmp_path / "a").iterdir()] == [] and [p for p in (tmp_path / "b").iterdir()] == []


async def test_the_saved_entry_carries_a_link_that_fetches_the_file_without_credentials(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)
    saved = await save_output_bytes(data, store_for(bucket, tmp_path), media_type="image/png", source="x")

    assert saved.url is not None and saved.url_expires_at is not None
    assert SECRET not in saved.url and "X-Amz-Signature=" in saved.url
    async with httpx2.AsyncClient(timeout=10) as plain:  # no credentials of any kind
        fetched = await plain.get(saved.url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"


async def test_an_unreachable_store_is_reported_in_seconds_in_our_words(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    store = S3OutputStore(
        "s3://outputs/x",
        staging_dir=tmp_path,
        environ={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
            "AWS_ACCESS_KEY_ID": S3Endpoint.ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        },
    )
    with anyio.fail_after(15), pytest.raises(OutputStoreError) as caught:
        await store.check()

    message = str(caught.value)
    assert f"s3://outputs/x at http://127.0.0.1:{closed} could not be reached (connection refused)" in message
    assert "AWS_ENDPOINT_URL" in message and SECRET not in message


async def test_a_missing_bucket_is_named_with_what_to_do(
    s3: S3Endpoint, s3_env: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(OutputStoreError) as caught:
        await store_for("no-such-bucket", tmp_path).check()

    assert str(caught.value) == (
        f"output store s3://no-such-bucket/team-a at {s3.url}: the bucket 'no-such-bucket' does not exist; "
        "create it, or correct MEDIAMUX_OUTPUT_URL"
    )


# -- through the server --------------------------------------------------------------------------------


@pytest.mark.providers("muapi")
async def test_a_bucket_gone_after_start_keeps_the_paid_result_and_says_why_saving_failed(
    make_server: Callable[..., MediamuxServer], sandbox: Sandbox, s3_env: dict[str, str]
) -> None:
    server = make_server(MEDIAMUX_OUTPUT_URL="s3://deleted-bucket/outputs")
    async with Client(server) as client:
        result = await call(client, "muapi_generate", generate_args("a lighthouse"))

    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["status"] == "completed" and data["result"]["outputs"]  # paid for, and its URLs kept
    assert data["result"]["saved"] == []
    assert "the bucket 'deleted-bucket' does not exist" in data["result"]["save_error"]
    assert sandbox.muapi.submissions == 1


@pytest.mark.providers("muzaic")
async def test_an_output_too_large_to_inline_is_refused_with_a_link_to_fetch_it(
    make_server: Callable[..., MediamuxServer], bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    big = await save_output_bytes(
        os.urandom(800 * 1024), store_for(bucket, tmp_path, "big"), media_type="video/mp4", source="x"
    )
    async with Client(make_server(MEDIAMUX_OUTPUT_URL=f"s3://{bucket}/big")) as client:
        with pytest.raises(Exception, match="too large to send inline") as caught:
            await client.read_resource(big.uri)

    message = str(caught.value)
    assert f"download it from {s3_env['AWS_ENDPOINT_URL']}/{bucket}/big/{big.name}?" in message
    assert SECRET not in message


async def test_an_output_saved_by_one_server_process_is_read_through_another(
    s3: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    """Two real `mediamux serve --transport http --sandbox` processes sharing nothing but the bucket."""
    servers: list[HttpServer] = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        port = free_port()
        errlog = root / "server.stderr"
        env = server_env(
            root,
            MEDIAMUX_HTTP_TOKEN=HTTP_TOKEN,
            MEDIAMUX_OUTPUT_URL=f"s3://{bucket}/shared",
            MEDIAMUX_LOG_LEVEL="INFO",  # every line a server writes is checked for the secret below
            **s3.env(),
        )
        with errlog.open("wb") as sink:
            proc = subprocess.Popen(
                serve_cmd("--transport", "http", "--port", str(port)),
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        servers.append(HttpServer(f"http://127.0.0.1:{port}", port, proc, errlog))
    try:
        with anyio.fail_after(SERVE_TIMEOUT_S):
            for server in servers:
                await wait_until_healthy(server)
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=30.0)
            async with http:
                async with Client(streamable_http_client(servers[0].mcp_url, http_client=http)) as a:  # type: ignore[arg-type]
                    made = await a.call_tool("muapi_generate", generate_args("a kestrel over a bucket"))
                async with Client(streamable_http_client(servers[1].mcp_url, http_client=http)) as b:  # type: ignore[arg-type]
                    (saved,) = made.structured_content["result"]["saved"]  # type: ignore[index]
                    read = await b.read_resource(saved["uri"])
                    missing = await b.call_tool("jobs_list", {})
                fetched = await httpx2.AsyncClient(timeout=10).get(saved["url"])
    finally:
        for server in servers:
            stop(server.proc)

    blob = base64.b64decode(read.contents[0].blob)  # type: ignore[union-attr]
    assert hashlib.sha256(blob).hexdigest() == saved["sha256"]
    assert read.contents[0].mime_type == saved["mime_type"]
    assert saved["path"] == f"s3://{bucket}/shared/{saved['name']}"
    assert fetched.content == blob
    assert s3.get(bucket, f"shared/{saved['name']}")[0] == blob
    # B never ran the job (its own journal is empty): the bytes came from the bucket.
    assert missing.structured_content["jobs"] == []  # type: ignore[index]
    # The secret key is nowhere: not in results, not in the links, not in either server's log.
    shown = made.model_dump_json() + read.model_dump_json()
    assert SECRET not in shown
    for server in servers:
        assert SECRET not in server.stderr()


def test_a_missing_bucket_stops_the_server_before_it_serves_with_a_clear_error(
    s3: S3Endpoint, tmp_path: Path
) -> None:
    env = server_env(tmp_path, MEDIAMUX_OUTPUT_URL="s3://never-created/outputs", **s3.env())
    done = subprocess.run(
        serve_cmd("--transport", "http", "--port", str(free_port()), sandbox=False),
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert (
        f"mediamux: output store s3://never-created/outputs at {s3.url}: the bucket 'never-created' does not "
        "exist; create it, or correct MEDIAMUX_OUTPUT_URL"
    ) in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# -- settings ------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://bucket/prefix", "must be an s3:// URL"),
        ("s3://Bad_Bucket/x", "is not a valid bucket name"),
        ("s3://key:hunter2-secret@bucket/x", "credentials go in AWS_ACCESS_KEY_ID"),
        ("s3://bucket/a//b", "has an empty, '.' or '..' segment"),
        ("s3://bucket/x?versionId=1", "takes no query"),
    ],
)
def test_a_bad_output_url_is_refused_at_start_up_saying_what_to_write(url: str, said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(MEDIAMUX_OUTPUT_URL=url)

    message = str(caught.value)
    assert said in message
    assert "hunter2-secret" not in message


@pytest.mark.unit
def test_the_s3_client_is_imported_only_when_an_output_url_is_set(tmp_path: Path) -> None:
    probe = (
        "import sys; from pathlib import Path; from mediamux.config import Settings; "
        "from mediamux.files import open_output_store; import mediamux.server.app, mediamux.cli; "
        "store = open_output_store(Settings(), Path(sys.argv[1])); "
        "print(store.kind, 'obstore' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAMUX_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.stdout.split() == ["local", "False"], done.stderr


@pytest.mark.unit
def test_half_a_credential_pair_is_refused_when_the_store_is_opened(tmp_path: Path) -> None:
    with pytest.raises(OutputStoreError) as caught:
        S3OutputStore("s3://outputs/x", staging_dir=tmp_path, environ={"AWS_SECRET_ACCESS_KEY": SECRET})

    assert str(caught.value) == (
        "output store s3://outputs/x at AWS S3 cannot be set up: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "must be set together"
    )


@pytest.mark.unit
def test_the_storage_secret_is_kept_out_of_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value-1234")

    secrets = Settings(MEDIAMUX_OUTPUT_URL="s3://outputs/team").secrets()

    assert SECRET in secrets and "session-token-value-1234" in secrets
