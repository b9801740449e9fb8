"""Sign-in for the HTTP transport, against a real OAuth authorization server (tests/issuer.py).

Tiers: principals-file parsing and static tokens need no server (unit); JWT verification talks to
the real issuer over loopback; the rest runs `mediamux serve --transport http --sandbox` as a
subprocess and signs in to it, by hand and through the SDK client's own OAuth flow.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from mediamux.config import Settings
from mediamux.principals import LOCAL, PRINCIPAL_CLAIM, AuthConfigError, load_principals
from mediamux.server.auth import JWKS_REFRESH_MIN_S, JwtVerifier, StaticTokenVerifier, sign_in
from tests.issuer import Issuer, RunningIssuer
from tests.test_e2e import (
    MODERN_META,
    HttpServer,
    free_port,
    serve_cmd,
    server_env,
    stop,
    wait_until_healthy,
)

AUDIENCE_PATH = "/mcp"
ERAS = ["auto", "legacy"]

# -- unit: the principals file and static tokens ------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.unit
def test_principals_file_keeps_tokens_only_as_digests(tmp_path: Path) -> None:
    token = "alice-secret-token-0123"
    found = load_principals(
        write(
            tmp_path / "p.toml",
            f'[principals.alice]\ntoken = "{token}"\nbudget_usd = 2.5\n'
            f'[principals.bob]\ntoken_sha256 = "{hashlib.sha256(b"bob-secret-token-4567").hexdigest()}"\n'
            'scopes = ["mediamux:read"]\n'
            "[principals.carol]\nbudget_usd = 1\n",
        )
    )
    assert set(found.entries) == {"alice", "bob", "carol"}
    assert token not in repr(found)
    assert found.entries["alice"].token_sha256 == hashlib.sha256(token.encode()).digest()
    assert found.entries["bob"].scopes == ("mediamux:read",)
    assert found.entries["carol"].token_sha256 is None
    assert found.budget_for("alice", 10.0) == 2.5
    assert found.budget_for("dave", 10.0) == 10.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[principals.a]\ntoken = 'short'\n", "shorter than 16"),
        ("[principals.a]\ntoken_sha256 = 'abc'\n", "64 hex digits"),
        ("[principals.a]\npassword = 'x'\n", "unknown key(s) password"),
        ("[principals.local]\nbudget_usd = 1\n", "'local' is the name"),
        ("[principals.a]\nbudget_usd = -1\n", "budget_usd must be a number"),
        (
            "[principals.a]\ntoken = 'same-token-0123456'\n[principals.b]\ntoken = 'same-token-0123456'\n",
            "same token",
        ),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_principals_file_is_refused_with_what_to_fix(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(AuthConfigError) as raised:
        load_principals(write(tmp_path / "p.toml", text))
    assert says in raised.value.message


@pytest.mark.unit
async def test_static_tokens_name_their_principal_and_the_shared_token_is_local(tmp_path: Path) -> None:
    settings = Settings(
        MEDIAMUX_HOME=str(tmp_path),
        MEDIAMUX_HTTP_TOKEN="the-one-shared-token",
        MEDIAMUX_PRINCIPALS_FILE=str(
            write(
                tmp_path / "p.toml",
                '[principals.alice]\ntoken = "alice-secret-token-0123"\nscopes = ["mediamux:read"]\n',
            )
        ),
    )
    verifier = StaticTokenVerifier.from_settings(settings, load_principals(settings.principals_file))
    assert verifier is not None
    shared = await verifier.verify_token("the-one-shared-token")
    alice = await verifier.verify_token("alice-secret-token-0123")
    assert shared is not None and shared.claims == {PRINCIPAL_CLAIM: LOCAL}
    assert (
        alice is not None and alice.claims == {PRINCIPAL_CLAIM: "alice"} and alice.scopes == ["mediamux:read"]
    )
    assert await verifier.verify_token("alice-secret-token-0124") is None


@pytest.mark.unit
def test_an_issuer_without_an_audience_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MEDIAMUX_AUTH_AUDIENCE"):
        Settings(MEDIAMUX_HOME=str(tmp_path), MEDIAMUX_AUTH_ISSUER="https://issuer.example")


@pytest.mark.unit
def test_no_sign_in_is_configured_without_tokens_or_issuer(tmp_path: Path) -> None:
    assert sign_in(Settings(MEDIAMUX_HOME=str(tmp_path))) is None


# -- JWTs against the real issuer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    running = RunningIssuer()
    try:
        yield running.start()
    finally:
        running.stop()


AUDIENCE = "http://127.0.0.1:1/mcp"  # verifier tests only: no server listens there


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_jwt_is_checked_for_signature_expiry_issuer_audience_and_subject(issuer: Issuer) -> None:
    verifier = JwtVerifier(issuer.url, AUDIENCE)
    good = await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE))
    assert good is not None
    assert good.claims is not None and good.claims[PRINCIPAL_CLAIM] == "alice"
    assert set(good.scopes) == {"mediamux:read", "mediamux:spend"}

    expired = issuer.mint("alice", audience=AUDIENCE, expires_in=-120)
    other_audience = issuer.mint("alice", audience="https://other.example/mcp")
    other_issuer = issuer.mint("alice", audience=AUDIENCE, issuer="https://evil.example")
    forged = jwt.encode({"sub": "alice", "aud": AUDIENCE, "iss": issuer.url, "exp": 2**31}, "k" * 32, "HS256")
    unsigned = jwt.encode({"sub": "alice", "aud": AUDIENCE, "iss": issuer.url, "exp": 2**31}, None, "none")
    tampered = issuer.mint("alice", audience=AUDIENCE)[:-4] + "AAAA"
    for token in (expired, other_audience, other_issuer, forged, unsigned, tampered, "not-a-jwt"):
        assert await verifier.verify_token(token) is None


async def test_a_tenant_claim_can_name_the_principal(issuer: Issuer) -> None:
    verifier = JwtVerifier(issuer.url, AUDIENCE, principal_claim="tenant")
    found = await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE, tenant="acme"))
    assert found is not None and found.claims is not None and found.claims[PRINCIPAL_CLAIM] == "acme"
    assert await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE)) is None


async def test_rotated_keys_are_fetched_by_kid_and_withdrawn_ones_stop_working(issuer: Issuer) -> None:
    ticks = Ticks()
    verifier = JwtVerifier(issuer.url, AUDIENCE, monotonic=ticks)
    old = issuer.keys[0]
    assert await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE)) is not None
    fetches = issuer.jwks_fetches

    new = issuer.rotate(keep_old=False)
    # Within the refresh interval a stream of unknown kids makes no request to the issuer.
    assert await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE, key=new)) is None
    assert issuer.jwks_fetches == fetches
    ticks.now += JWKS_REFRESH_MIN_S
    assert await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE, key=new)) is not None
    assert issuer.jwks_fetches == fetches + 1
    # The withdrawn key no longer verifies anything.
    assert await verifier.verify_token(issuer.mint("alice", audience=AUDIENCE, key=old)) is None


# -- a real server signed in to -------------------------------------------------------------------


def spawn(root: Path, **env: str) -> HttpServer:
    port = free_port()
    stderr_path = root / f"server-{port}.stderr"
    with stderr_path.open("wb") as errlog:
        proc = subprocess.Popen(
            serve_cmd("--transport", "http", "--port", str(port)),
            env=server_env(
                root, **{k.replace("__", "_"): v.replace("{port}", str(port)) for k, v in env.items()}
            ),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
    server = HttpServer(f"http://127.0.0.1:{port}", port, proc, stderr_path)
    try:
        anyio.run(wait_until_healthy, server)
    except BaseException:
        stop(proc)
        raise
    return server


@pytest.fixture(scope="module")
def oauth_server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("oauth")
    server = spawn(
        root,
        MEDIAMUX_AUTH_ISSUER=issuer.url,
        MEDIAMUX_AUTH_AUDIENCE="http://127.0.0.1:{port}/mcp",
        MEDIAMUX_AUTH_SCOPES="mediamux:read",
    )
    try:
        yield server
    finally:
        stop(server.proc)


def list_body() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}


HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/list",
}


async def test_without_a_token_the_401_names_the_resource_metadata(
    oauth_server: HttpServer, issuer: Issuer
) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        refused = await http.post(oauth_server.mcp_url, json=list_body(), headers=HEADERS)
        challenge = refused.headers["www-authenticate"]
        metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
        metadata = (await http.get(metadata_url)).json()
    assert refused.status_code == 401
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert metadata_url == f"{oauth_server.base_url}/.well-known/oauth-protected-resource/mcp"
    assert metadata["resource"] == oauth_server.mcp_url
    # Exactly the issuer string: clients compare it with the issuer's own metadata.
    assert metadata["authorization_servers"] == [issuer.url]
    assert {"mediamux:read", "mediamux:spend"} <= set(metadata["scopes_supported"])


async def test_tokens_for_another_audience_expired_or_without_the_scope_are_refused(
    oauth_server: HttpServer, issuer: Issuer
) -> None:
    cases = {
        "audience": (issuer.mint("alice", audience="https://elsewhere.example/mcp"), 401),
        "expired": (issuer.mint("alice", audience=oauth_server.mcp_url, expires_in=-300), 401),
        "scope": (issuer.mint("alice", audience=oauth_server.mcp_url, scopes="profile"), 403),
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        for why, (token, status) in cases.items():
            answer = await http.post(
                oauth_server.mcp_url,
                json=list_body(),
                headers={**HEADERS, "Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == status, (why, answer.text)
            assert token not in answer.text
            if status == 403:
                assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert "eyJ" not in oauth_server.stderr()  # no token in the server's log


def authed(token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.mark.parametrize("mode", ERAS)
async def test_a_read_only_token_sees_and_may_call_only_tools_that_spend_nothing(
    oauth_server: HttpServer, issuer: Issuer, mode: str
) -> None:
    reader = issuer.mint("rita", audience=oauth_server.mcp_url, scopes="mediamux:read")
    spender = issuer.mint("sam", audience=oauth_server.mcp_url, scopes="mediamux:read mediamux:spend")
    with anyio.fail_after(30):
        async with (
            authed(reader) as http,
            Client(streamable_http_client(oauth_server.mcp_url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            read_tools = {t.name: t for t in (await client.list_tools()).tools}
            refused = await client.call_tool("muapi_generate", {"model": "flux-dev", "prompt": "a fox"})
        async with (
            authed(spender) as http,
            Client(streamable_http_client(oauth_server.mcp_url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            all_tools = {t.name for t in (await client.list_tools()).tools}
    assert read_tools and all(t.annotations and t.annotations.read_only_hint for t in read_tools.values())
    assert "jobs_list" in read_tools and "muapi_generate" not in read_tools
    assert "muapi_generate" in all_tools and set(read_tools) < all_tools
    assert refused.is_error
    assert "mediamux:spend" in refused.content[0].text  # type: ignore[union-attr]


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@pytest.mark.parametrize("mode", ERAS)
async def test_the_sdk_clients_oauth_flow_signs_in_from_the_401_alone(
    oauth_server: HttpServer, issuer: Issuer, mode: str
) -> None:
    """Discovery from the 401, registration, authorization with PKCE, the token, then MCP."""
    redirect_uri = "http://127.0.0.1:1/callback"
    landed: dict[str, str] = {}

    async def follow(authorize_url: str) -> None:
        # The "browser": the issuer approves at once and redirects to the client's callback.
        async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as browser:
            answer = await browser.get(authorize_url)
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        landed.update(code=query["code"][0], state=query["state"][0])

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=landed["code"], state=landed["state"])

    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=oauth_server.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mediamux-test",
            redirect_uris=[redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code"],
            response_types=["code"],
            scope="mediamux:read mediamux:spend",
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=follow,
        callback_handler=callback,
    )
    issuer.next_subject = f"oauth-{mode}"
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(oauth_server.mcp_url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            names = {t.name for t in (await client.list_tools()).tools}
    assert "muapi_generate" in names
    assert storage.tokens is not None
    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert claims["aud"] == oauth_server.mcp_url and claims["sub"] == f"oauth-{mode}"


# -- isolation: two people on one server ----------------------------------------------------------

ALICE, BOB, CAROL = "alice-secret-token-0123", "bob-secret-token-45678", "carol-secret-token-9012"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Three named static tokens; Carol has the default per-principal budget, the others overrides."""
    root = tmp_path_factory.mktemp("team")
    principals = write(
        root / "principals.toml",
        f'[principals.alice]\ntoken = "{ALICE}"\nbudget_usd = 1.0\n'
        f'[principals.bob]\ntoken = "{BOB}"\nbudget_usd = 0.5\n'
        f'[principals.carol]\ntoken = "{CAROL}"\n',
    )
    server = spawn(root, MEDIAMUX_PRINCIPALS_FILE=str(principals), MEDIAMUX_PRINCIPAL_BUDGET_USD="0.005")
    try:
        yield server
    finally:
        stop(server.proc)


class Person:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, name: str, **arguments: Any) -> Any:
        return await self.client.call_tool(name, arguments)

    async def data(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(name, **arguments)
        assert not result.is_error, result.content
        return dict(result.structured_content or {})


def as_person(server: HttpServer, token: str, mode: str = "auto") -> Any:
    http = authed(token)
    return http, Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode)  # type: ignore[arg-type]


def image(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"endpoint": "flux-schnell-image", "params": {"prompt": prompt}, **extra}


@pytest.mark.parametrize("mode", ERAS)
async def test_two_principals_identical_prompts_make_two_jobs_and_neither_sees_the_others(
    team_server: HttpServer, mode: str
) -> None:
    prompt = f"a lighthouse at dusk ({mode})"
    with anyio.fail_after(60):
        alice_http, alice_client = as_person(team_server, ALICE, mode)
        bob_http, bob_client = as_person(team_server, BOB, mode)
        async with alice_http, alice_client, bob_http, bob_client:
            alice, bob = Person(alice_client), Person(bob_client)
            a = await alice.data("muapi_generate", **image(prompt, save_outputs=True, wait_s=60))
            b = await bob.data("muapi_generate", **image(prompt, wait_s=0))
            again = await alice.data("muapi_generate", **image(prompt, save_outputs=True, wait_s=60))
            assert a["job_id"] != b["job_id"]
            assert not b["deduplicated"]
            assert again["job_id"] == a["job_id"] and again["deduplicated"]

            alice_jobs = {j["job_id"] for j in (await alice.data("jobs_list"))["jobs"]}
            bob_jobs = {j["job_id"] for j in (await bob.data("jobs_list"))["jobs"]}
            assert a["job_id"] in alice_jobs and b["job_id"] not in alice_jobs
            assert b["job_id"] in bob_jobs and a["job_id"] not in bob_jobs

            # Every way of reaching Alice's job by its id answers Bob "not found", like a made-up id.
            for tool in ("jobs_get", "jobs_wait", "jobs_cancel"):
                theirs = await bob.call(tool, job_id=a["job_id"])
                made_up = await bob.call(tool, job_id="job_doesnotexist0")
                assert theirs.is_error and made_up.is_error
                assert theirs.content[0].text.replace(a["job_id"], "X") == made_up.content[0].text.replace(
                    "job_doesnotexist0", "X"
                )
            with pytest.raises(Exception, match="no job"):
                await bob_client.read_resource(f"mediamux://jobs/{a['job_id']}")

            saved = a["result"]["saved"][0]["uri"]
            assert (await alice_client.read_resource(saved)).contents
            with pytest.raises(Exception, match="no saved output"):
                await bob_client.read_resource(saved)
            bob_listing = await bob_client.read_resource("mediamux://jobs")
            assert a["job_id"] not in bob_listing.contents[0].text  # type: ignore[union-attr]

            # Completion offers each person their own ids and outputs only.
            from tests.test_completions import complete

            name = saved.removeprefix("mediamux://outputs/")
            for client, mine in ((alice_client, a), (bob_client, b)):
                # The first answer may be the cached list, refreshed behind it: look until it is fresh.
                ids: list[str] = []
                with anyio.fail_after(10):
                    while mine["job_id"] not in ids:
                        ids = (
                            await complete(client, "mediamux://jobs/{job_id}", "job_id", "job_")
                        ).completion.values
                        await anyio.sleep(0.05)
                assert (a if mine is b else b)["job_id"] not in ids
            alice_names = (
                await complete(alice_client, "mediamux://outputs/{name}", "name")
            ).completion.values
            bob_names = (await complete(bob_client, "mediamux://outputs/{name}", "name")).completion.values
            assert name in alice_names and name not in bob_names

            alice_costs = await alice.data("jobs_costs")
            bob_costs = await bob.data("jobs_costs")
            assert alice_costs["principal"] == "alice" and bob_costs["principal"] == "bob"
            assert alice_costs["budget_usd"] == 1.0 and bob_costs["budget_usd"] == 0.5
            assert a["job_id"] in {e["job_id"] for e in alice_costs["audit"]}
            assert {e["principal"] for e in alice_costs["audit"]} == {"alice"}
            assert a["job_id"] not in {e["job_id"] for e in bob_costs["audit"]}


async def test_a_principal_budget_stops_one_person_without_stopping_the_other(
    team_server: HttpServer,
) -> None:
    with anyio.fail_after(60):
        alice_http, alice_client = as_person(team_server, ALICE)
        carol_http, carol_client = as_person(team_server, CAROL)
        async with alice_http, alice_client, carol_http, carol_client:
            alice, carol = Person(alice_client), Person(carol_client)
            # Carol's $0.005 holds one $0.003 image, not two: the second is refused before any upstream call.
            first = await carol.call("muapi_generate", **image("budget one", wait_s=0))
            second = await carol.call("muapi_generate", **image("budget two", wait_s=0))
            third = await alice.call("muapi_generate", **image("budget three", wait_s=0))
    assert not first.is_error, first.content
    assert second.is_error and "your budget on this server" in second.content[0].text
    assert "MEDIAMUX_PRINCIPAL_BUDGET_USD" in second.content[0].text
    assert not third.is_error, third.content


async def test_the_operator_sees_everybodys_jobs_and_the_audit_trail_without_tokens(
    team_server: HttpServer,
) -> None:
    with anyio.fail_after(60):
        for token, who in ((ALICE, "alice"), (BOB, "bob")):
            http, client = as_person(team_server, token)
            async with http, client:
                await Person(client).data("muapi_generate", **image(f"for the audit, by {who}", wait_s=0))
    env = server_env(Path(team_server.stderr_path).parent)
    # The CLI reads the journal directly, as an operator on the server's machine does.
    everyone = subprocess.run(
        [*serve_cmd(sandbox=False)[:3], "jobs", "--audit", "--limit", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    bob_only = subprocess.run(
        [*serve_cmd(sandbox=False)[:3], "jobs", "--principal", "bob", "--audit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "alice" in everyone and "bob" in everyone and "submit" in everyone
    assert "alice" not in bob_only and "by bob" in bob_only
    for secret in (ALICE, BOB, CAROL):
        assert secret not in everyone + bob_only + team_server.stderr()


async def test_another_principals_task_is_not_found_and_its_changes_are_not_streamed(
    team_server: HttpServer,
) -> None:
    """Tasks are jobs: the same isolation holds for tasks/get, tasks/cancel and a listen on its id."""
    from tests.test_tasks_e2e import answer, post

    async with authed(ALICE) as alice_http, authed(BOB) as bob_http:
        with anyio.fail_after(60):
            created = answer(
                await post(
                    alice_http,
                    team_server.mcp_url,
                    "tools/call",
                    {"name": "muapi_generate", "arguments": image("a task of alice's", wait_s=0)},
                )
            )
            task_id = created["result"]["taskId"]
            own = answer(await post(alice_http, team_server.mcp_url, "tasks/get", {"taskId": task_id}))
            theirs = answer(await post(bob_http, team_server.mcp_url, "tasks/get", {"taskId": task_id}))
            made_up = answer(
                await post(bob_http, team_server.mcp_url, "tasks/get", {"taskId": "job_nobody-has-this"})
            )
            cancel = answer(await post(bob_http, team_server.mcp_url, "tasks/cancel", {"taskId": task_id}))
            still = answer(await post(alice_http, team_server.mcp_url, "tasks/get", {"taskId": task_id}))
    assert own["result"]["taskId"] == task_id
    assert theirs["error"]["code"] == made_up["error"]["code"] == -32602
    assert theirs["error"]["message"].replace(task_id, "X") == made_up["error"]["message"].replace(
        "job_nobody-has-this", "X"
    )
    assert "error" in cancel
    assert still["result"]["status"] != "cancelled"
