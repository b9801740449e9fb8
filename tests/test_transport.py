"""The shared HTTP transport: retries, Retry-After, classification, size caps, secrets and redirects.

Group A drives ``Transport`` through ``httpx2.MockTransport`` with a recording handler. Group B runs the
MuAPI emulator over real HTTP on loopback and injects faults in front of it. Time is a ``FakeClock``, so
backoff costs nothing; the only real waits are bounded socket operations, each under ``anyio.fail_after``.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import random
import re
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
from pydantic import SecretStr

from mediamux.clock import FakeClock
from mediamux.deadlines import unbounded, within
from mediamux.providers.errors import (
    AuthFailed,
    InsufficientCredits,
    InvalidRequest,
    MissingCredentials,
    NotFound,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from mediamux.providers.masking import SecretMask
from mediamux.providers.muapi import MuapiClient
from mediamux.providers.transport import (
    ProviderHints,
    Retry,
    RetryConfig,
    Transport,
    parse_retry_after,
)
from mediamux.sandbox.faults import wait_unless_client_leaves
from mediamux.sandbox.loopback import serve_on_loopback
from mediamux.sandbox.muapi import MuapiEmulator

KEY = "sandbox-muapi-key"
API = "https://api.muapi.ai"
BASE_URL = f"{API}/api/v1"
HINTS = ProviderHints(title="MuAPI", key_env="MUAPI_API_KEY")
RETRY = RetryConfig(
    max_attempts=3, base_delay_s=0.5, max_delay_s=2.0, max_total_s=30.0, retry_after_cap_s=60.0
)
OK_BALANCE = {"balance": 12.5, "currency": "usd"}
OK_SUBMIT = {"request_id": "req-1", "status": "queued"}
BOUND_S = 10  # every test body runs under this real-time bound


def jitter_window(attempt: int, config: RetryConfig) -> tuple[float, float]:
    """Where the backoff after failed attempt ``attempt`` (1-based) must land: half to full ceiling."""
    ceiling = min(config.max_delay_s, config.base_delay_s * 2 ** (attempt - 1))
    return ceiling / 2, ceiling


def everything_about(exc: BaseException) -> str:
    """Every text an exception could leak through: str, repr, attributes and the formatted traceback."""
    return "\n".join(
        [str(exc), repr(exc), repr(vars(exc)), repr(exc.args), "".join(traceback.format_exception(exc))]
    )


# --- group A: MockTransport ------------------------------------------------------------------------------

Handler = Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Seen:
    """One request as the fake provider received it, with the fake time it arrived at."""

    method: str
    url: httpx2.URL
    headers: httpx2.Headers
    body: bytes
    at: float


@dataclass
class Mocked:
    transport: Transport
    clock: FakeClock
    seen: list[Seen] = field(default_factory=list)

    @property
    def muapi(self) -> MuapiClient:
        return MuapiClient(self.transport)


def scripted(*steps: httpx2.Response | BaseException | Handler) -> Handler:
    """A handler that plays ``steps`` in order, repeating the last one for ever."""
    index = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal index
        step = steps[min(index, len(steps) - 1)]
        index += 1
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx2.Response):
            return step
        return step(request)

    return handler


def connect_error() -> httpx2.ConnectError:
    return httpx2.ConnectError("connection refused")


@pytest.fixture
async def mocked() -> AsyncIterator[Callable[..., Mocked]]:
    clients: list[httpx2.AsyncClient] = []

    def make(
        handler: Handler,
        *,
        api_key: SecretStr | None = SecretStr(KEY),  # noqa: B008 - immutable default
        retry: RetryConfig = RETRY,
    ) -> Mocked:
        clock = FakeClock()
        seen: list[Seen] = []

        def recording(request: httpx2.Request) -> httpx2.Response:
            seen.append(Seen(request.method, request.url, request.headers, request.read(), clock.monotonic()))
            return handler(request)

        client = httpx2.AsyncClient(transport=httpx2.MockTransport(recording), follow_redirects=False)
        clients.append(client)
        transport = Transport(
            provider="muapi",
            base_url=BASE_URL,
            hints=HINTS,
            auth_header="x-api-key",
            api_key=api_key,
            clock=clock,
            retry=retry,
            rng=random.Random(7),
            client=client,
        )
        return Mocked(transport, clock, seen)

    yield make
    for client in clients:
        await client.aclose()


# Retry budget, classification and jitter (checklist 10) -------------------------------------------------


@pytest.mark.unit
async def test_persistent_503_on_a_get_makes_exactly_max_attempts_requests_with_jittered_backoff(
    mocked: Callable[..., Mocked],
) -> None:
    config = RetryConfig(max_attempts=5, base_delay_s=0.5, max_delay_s=2.0, max_total_s=30.0)
    m = mocked(scripted(httpx2.Response(503, json={"detail": "upstream overloaded"})), retry=config)

    with anyio.fail_after(BOUND_S), pytest.raises(ServerError) as caught:
        await m.muapi.balance()

    assert len(m.seen) == config.max_attempts
    assert len(m.clock.sleeps) == config.max_attempts - 1
    assert sum(m.clock.sleeps) <= config.max_total_s
    assert len(set(m.clock.sleeps)) > 1, m.clock.sleeps
    ceilings = [jitter_window(attempt, config)[1] for attempt in range(1, config.max_attempts)]
    assert m.clock.sleeps != ceilings  # jittered, not the bare exponential schedule
    assert m.clock.sleeps[2] != m.clock.sleeps[3]  # same 2 s ceiling, different draws
    for attempt, delay in enumerate(m.clock.sleeps, start=1):
        low, high = jitter_window(attempt, config)
        assert low <= delay <= high, (attempt, delay)
    # The requests really were spaced out on the fake clock by the recorded sleeps.
    gaps = [b.at - a.at for a, b in zip(m.seen, m.seen[1:], strict=False)]
    assert gaps == pytest.approx(m.clock.sleeps)
    error = caught.value
    assert error.error_class == "provider_error"
    assert error.status == 503
    assert "MuAPI get_balance" in str(error)
    assert "upstream overloaded" in str(error)
    assert "try again later" in str(error)


@pytest.mark.unit
async def test_retries_stop_before_max_attempts_when_the_next_wait_would_overrun_the_total_budget(
    mocked: Callable[..., Mocked],
) -> None:
    config = RetryConfig(max_attempts=10, base_delay_s=1.0, max_delay_s=8.0, max_total_s=5.0)
    m = mocked(scripted(httpx2.Response(503)), retry=config)

    with anyio.fail_after(BOUND_S), pytest.raises(ServerError):
        await m.muapi.balance()

    assert 1 < len(m.seen) < config.max_attempts
    assert sum(m.clock.sleeps) <= config.max_total_s
    assert m.seen[-1].at - m.seen[0].at <= config.max_total_s


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "kind", "error_class", "remedy"),
    [
        (400, InvalidRequest, "invalid_input", "fix the arguments and call again"),
        (401, AuthFailed, "auth", "check MUAPI_API_KEY"),
        (403, AuthFailed, "auth", "check MUAPI_API_KEY"),
        (404, NotFound, "not_found", "check the id or name"),
        (422, InvalidRequest, "invalid_input", "fix the arguments and call again"),
    ],
)
async def test_a_client_error_on_a_get_is_not_retried_and_names_provider_operation_and_remedy(
    mocked: Callable[..., Mocked], status: int, kind: type[ProviderError], error_class: str, remedy: str
) -> None:
    m = mocked(scripted(httpx2.Response(status, json={"detail": "nope"})))

    with anyio.fail_after(BOUND_S), pytest.raises(kind) as caught:
        await m.muapi.balance()

    assert len(m.seen) == 1
    assert m.clock.sleeps == []
    error = caught.value
    assert error.error_class == error_class
    assert error.status == status
    assert error.maybe_sent is False
    message = str(error)
    assert message.startswith("MuAPI get_balance: ")
    assert f"({status})" in message
    assert remedy in message


# Retry-After (checklist 9) --------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_makes_the_next_attempt_exactly_that_many_fake_seconds_later(
    mocked: Callable[..., Mocked], status: int
) -> None:
    m = mocked(
        scripted(httpx2.Response(status, headers={"Retry-After": "7"}), httpx2.Response(200, json=OK_BALANCE))
    )

    with anyio.fail_after(BOUND_S):
        balance, _cost = await m.muapi.balance()

    assert balance.balance == 12.5
    assert len(m.seen) == 2
    assert m.clock.sleeps == [7.0]
    assert m.seen[1].at - m.seen[0].at == 7.0


@pytest.mark.unit
async def test_retry_after_as_an_http_date_seven_seconds_ahead_waits_seven_fake_seconds(
    mocked: Callable[..., Mocked],
) -> None:
    clock_box: list[FakeClock] = []

    def rate_limited(request: httpx2.Request) -> httpx2.Response:
        when = clock_box[0].now() + timedelta(seconds=7)
        return httpx2.Response(429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)})

    m = mocked(scripted(rate_limited, httpx2.Response(200, json=OK_BALANCE)))
    clock_box.append(m.clock)

    with anyio.fail_after(BOUND_S):
        await m.muapi.balance()

    assert m.clock.sleeps == [7.0]
    assert m.seen[1].at - m.seen[0].at == 7.0


@pytest.mark.unit
@pytest.mark.parametrize(
    "value",
    ["-10", "", "   ", "soon", "99999999999999999999", "1e3", "7s", "Wed, 32 Foo 2026 00:00:00 GMT"],
)
async def test_an_unusable_retry_after_falls_back_to_jittered_backoff(
    mocked: Callable[..., Mocked], value: str
) -> None:
    m = mocked(
        scripted(httpx2.Response(429, headers={"Retry-After": value}), httpx2.Response(200, json=OK_BALANCE))
    )

    with anyio.fail_after(BOUND_S):
        await m.muapi.balance()

    assert len(m.seen) == 2
    assert len(m.clock.sleeps) == 1
    low, high = jitter_window(1, RETRY)
    assert low <= m.clock.sleeps[0] <= high


def _past_http_date() -> str:
    # FakeClock's wall clock starts at 2026-01-01T00:00:00Z; this is 7 s before it.
    return "Wed, 31 Dec 2025 23:59:53 GMT"


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", _past_http_date()])
async def test_a_zero_or_past_retry_after_falls_back_to_backoff_instead_of_hammering(
    mocked: Callable[..., Mocked], value: str
) -> None:
    m = mocked(
        scripted(httpx2.Response(429, headers={"Retry-After": value}), httpx2.Response(200, json=OK_BALANCE))
    )

    with anyio.fail_after(BOUND_S):
        await m.muapi.balance()

    low, high = jitter_window(1, RETRY)
    assert len(m.clock.sleeps) == 1
    assert low <= m.clock.sleeps[0] <= high


@pytest.mark.unit
@pytest.mark.parametrize(("value", "seconds"), [("3600", 3600.0), ("61", 61.0)])
async def test_a_retry_after_beyond_the_cap_raises_rate_limited_at_once_without_sleeping(
    mocked: Callable[..., Mocked], value: str, seconds: float
) -> None:
    m = mocked(
        scripted(httpx2.Response(429, headers={"Retry-After": value}), httpx2.Response(200, json=OK_BALANCE))
    )

    with anyio.fail_after(BOUND_S), pytest.raises(RateLimited) as caught:
        await m.muapi.balance()

    assert len(m.seen) == 1
    assert m.clock.sleeps == []
    error = caught.value
    assert error.error_class == "rate_limited"
    assert error.retry_after_s == seconds
    assert f"retry after {seconds:.0f} s" in str(error)
    assert str(error).startswith("MuAPI get_balance: rate limited (429)")


NOW = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("7.5", 7.5),
        ("61", 61.0),
        ("3600", 3600.0),
        ("-10", None),
        ("-0.5", None),
        ("99999999999999999999", None),
        ("soon", None),
        ("1e3", None),
        ("0x10", None),
        ("Wed, 32 Foo 2026 00:00:00 GMT", None),
        ("Thu, 01 Jan 2026 00:00:07 GMT", 7.0),
        ("Thu, 01 Jan 2026 01:00:07 +0100", 7.0),
        ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
        ("Thu, 01 Jan 2026 00:00:30", 30.0),  # no zone: taken as UTC
    ],
)
def test_parse_retry_after_reads_delta_seconds_and_http_dates_and_rejects_everything_else(
    value: str | None, expected: float | None
) -> None:
    assert parse_retry_after(value, NOW) == expected


# Paid submissions: retried only when provably not sent (checklist 1-3) -----------------------------------


@pytest.mark.unit
async def test_a_submission_answered_with_503_is_not_resent_and_is_flagged_maybe_sent(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(
        scripted(httpx2.Response(503, json={"detail": "gateway"}), httpx2.Response(200, json=OK_SUBMIT))
    )

    with anyio.fail_after(BOUND_S), pytest.raises(ServerError) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert [s.method for s in m.seen] == ["POST"]
    assert m.clock.sleeps == []
    assert caught.value.maybe_sent is True
    assert "MuAPI generate" in str(caught.value)


@pytest.mark.unit
async def test_a_submission_whose_connection_could_not_be_opened_is_retried_until_it_gets_through(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(scripted(connect_error(), connect_error(), httpx2.Response(200, json=OK_SUBMIT)))

    with anyio.fail_after(BOUND_S):
        submission = await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert submission.request_id == "req-1"
    assert [s.method for s in m.seen] == ["POST"] * 3
    assert {json.loads(s.body)["prompt"] for s in m.seen} == {"x"}
    assert len(m.clock.sleeps) == 2


@pytest.mark.unit
async def test_a_submission_that_can_never_connect_gives_up_after_max_attempts_as_not_sent(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(scripted(connect_error()))

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderConnectionError) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert len(m.seen) == RETRY.max_attempts
    assert caught.value.maybe_sent is False
    assert "MuAPI generate: could not connect to api.muapi.ai" in str(caught.value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("failure", "kind", "error_class"),
    [
        (httpx2.ReadTimeout("read timed out"), ProviderTimeout, "timeout"),
        (httpx2.WriteTimeout("write timed out"), ProviderTimeout, "timeout"),
        (httpx2.RemoteProtocolError("server disconnected"), ProviderConnectionError, "provider_error"),
        (httpx2.ReadError("connection reset"), ProviderConnectionError, "provider_error"),
    ],
    ids=["ReadTimeout", "WriteTimeout", "RemoteProtocolError", "ReadError"],
)
async def test_a_submission_lost_after_sending_is_not_resent_and_is_flagged_maybe_sent(
    mocked: Callable[..., Mocked], failure: Exception, kind: type[ProviderError], error_class: str
) -> None:
    m = mocked(scripted(failure, httpx2.Response(200, json=OK_SUBMIT)))

    with anyio.fail_after(BOUND_S), pytest.raises(kind) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert len(m.seen) == 1
    assert m.clock.sleeps == []
    assert caught.value.maybe_sent is True
    assert caught.value.error_class == error_class
    assert str(caught.value).startswith("MuAPI generate: ")


@pytest.mark.unit
@pytest.mark.parametrize(
    "failure",
    [
        httpx2.RemoteProtocolError("server disconnected"),
        httpx2.ReadError("connection reset"),
        httpx2.ReadTimeout("read timed out"),
        httpx2.ConnectError("connection refused"),
    ],
    ids=["RemoteProtocolError", "ReadError", "ReadTimeout", "ConnectError"],
)
async def test_a_get_whose_connection_failed_is_retried_and_succeeds(
    mocked: Callable[..., Mocked], failure: Exception
) -> None:
    m = mocked(scripted(failure, httpx2.Response(200, json={"id": "req-1", "status": "completed"})))

    with anyio.fail_after(BOUND_S):
        prediction = await m.muapi.get_result("req-1")

    assert prediction.status == "completed"
    assert len(m.seen) == 2
    assert len(m.clock.sleeps) == 1


# Malformed and hostile payloads (checklist 12) ------------------------------------------------------------

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Oops</title></head><body><h1>Bad gateway</h1></body></html>"


@pytest.mark.unit
async def test_an_html_page_answered_with_200_is_described_not_quoted(mocked: Callable[..., Mocked]) -> None:
    m = mocked(scripted(httpx2.Response(200, content=HTML_PAGE, headers={"content-type": "text/html"})))

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.muapi.balance()

    message = str(caught.value)
    assert "an HTML page" in message
    assert "MuAPI get_balance" in message
    assert "<html" not in message.lower()
    assert "<" not in message
    assert len(m.seen) == 1


@pytest.mark.unit
async def test_an_html_error_page_with_a_5xx_is_summarised_without_markup(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(scripted(httpx2.Response(502, content=HTML_PAGE, headers={"content-type": "text/html"})))

    with anyio.fail_after(BOUND_S), pytest.raises(ServerError) as caught:
        await m.muapi.balance()

    assert "<" not in str(caught.value)
    assert "MuAPI get_balance: internal error (502)" in str(caught.value)


async def _endless() -> AsyncIterator[bytes]:
    chunk = b"x" * 4096
    while True:
        yield chunk
        await anyio.lowlevel.checkpoint()


@pytest.mark.unit
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "endless-stream"])
async def test_a_body_over_the_size_cap_is_refused_instead_of_read_to_the_end(
    mocked: Callable[..., Mocked], declared: bool
) -> None:
    def big(request: httpx2.Request) -> httpx2.Response:
        if declared:
            return httpx2.Response(200, content=b"x" * 50_000)
        return httpx2.Response(200, content=_endless())

    m = mocked(big)

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.transport.request(
            "GET", "account/balance", operation="get_balance", retry=Retry.ALWAYS, max_bytes=10_000
        )

    assert "larger than" in str(caught.value)
    assert caught.value.error_class == "provider_error"
    assert len(m.seen) == 1


@pytest.mark.unit
async def test_the_size_cap_error_names_the_limit_that_was_applied(mocked: Callable[..., Mocked]) -> None:
    m = mocked(scripted(httpx2.Response(200, content=b"x" * 5 * 1024 * 1024)))

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.transport.request(
            "GET", "account/balance", operation="get_balance", retry=Retry.ALWAYS, max_bytes=1024 * 1024
        )

    assert "16 MiB" not in str(caught.value)
    assert "1 MiB" in str(caught.value)


@pytest.mark.unit
async def test_a_body_with_a_corrupt_content_encoding_becomes_a_provider_error(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(
        scripted(
            httpx2.Response(
                200, stream=httpx2.ByteStream(b"not gzip at all"), headers={"content-encoding": "gzip"}
            )
        )
    )

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderError):
        await m.muapi.balance()


@pytest.mark.unit
async def test_fastapi_validation_details_are_flattened_into_field_and_message(
    mocked: Callable[..., Mocked],
) -> None:
    detail = [
        {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"},
        {"loc": ["body", "images_list", 0], "msg": "Input should be a valid URL", "type": "url_parsing"},
    ]
    m = mocked(scripted(httpx2.Response(422, json={"detail": detail})))

    with anyio.fail_after(BOUND_S), pytest.raises(InvalidRequest) as caught:
        await m.muapi.submit("flux-schnell-image", {"width": 512})

    message = str(caught.value)
    assert "prompt: Field required" in message
    assert "images_list.0: Input should be a valid URL" in message
    assert "MuAPI generate: invalid input (422)" in message
    assert "fix the arguments and call again" in message
    assert len(m.seen) == 1


# Secrets (checklist 14) ------------------------------------------------------------------------------------

CANARY = "CANARY-muapi-7f3a9"


def _echo_headers(request: httpx2.Request) -> str:
    return " ".join(f"{name}={value}" for name, value in request.headers.items())


def echoing(status: int, shape: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        echo = _echo_headers(request)
        if shape == "detail":
            return httpx2.Response(status, json={"detail": f"bad key {echo}"})
        if shape == "detail-list":
            return httpx2.Response(status, json={"detail": [{"loc": ["header", "x-api-key"], "msg": echo}]})
        if shape == "error-object":
            return httpx2.Response(
                status, json={"error": {"message": echo, "headers": dict(request.headers)}}
            )
        return httpx2.Response(status, text=f"upstream said: {echo}")

    return handler


@pytest.mark.unit
@pytest.mark.parametrize("shape", ["detail", "detail-list", "error-object", "plain-text"])
@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("operation", ["balance", "submit"])
async def test_the_api_key_never_appears_in_errors_or_logs_even_when_the_provider_echoes_it(
    mocked: Callable[..., Mocked], caplog: pytest.LogCaptureFixture, status: int, shape: str, operation: str
) -> None:
    caplog.set_level(logging.DEBUG)
    m = mocked(echoing(status, shape), api_key=SecretStr(CANARY))

    call: Callable[[], Awaitable[object]] = (
        m.muapi.balance
        if operation == "balance"
        else lambda: m.muapi.submit("flux-schnell-image", {"prompt": "x"})
    )

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderError) as caught:
        await call()

    # The canary really was sent and echoed, so its absence below means it was scrubbed.
    assert m.seen
    assert all(s.headers["x-api-key"] == CANARY for s in m.seen)
    assert CANARY not in everything_about(caught.value)
    assert CANARY not in caplog.text
    assert all(CANARY not in record.getMessage() for record in caplog.records)
    assert CANARY not in repr(m.transport.__dict__.get("_api_key"))


# Redirects (checklist 15) ----------------------------------------------------------------------------------

OFF_ORIGIN = [
    "https://other.test/x",
    "//other.test/x",
    "https://api.muapi.ai@other.test/x",
    "https://api.muapi.ai:8443/x",
    "http://api.muapi.ai/x",
]
SAME_ORIGIN = [
    "/api/v1/account/balance-v2",
    "https://api.muapi.ai/api/v1/elsewhere",
    "https://API.muapi.ai:443/y",
]


def redirect_once(status: int, location: str, final: httpx2.Response) -> Handler:
    return scripted(httpx2.Response(status, headers={"Location": location}), final)


@pytest.mark.unit
@pytest.mark.parametrize("location", OFF_ORIGIN)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_get_redirected_to_another_origin_is_refused_without_a_second_request(
    mocked: Callable[..., Mocked], status: int, location: str
) -> None:
    m = mocked(redirect_once(status, location, httpx2.Response(200, json=OK_BALANCE)))

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.muapi.balance()

    assert len(m.seen) == 1  # the other origin was never asked, with or without the key
    assert m.seen[0].headers["x-api-key"] == KEY
    assert caught.value.error_class == "provider_error"
    assert caught.value.maybe_sent is False  # a read: nothing was acted upon
    assert str(caught.value).startswith(
        "MuAPI get_balance: the provider redirected the request to another host"
    )
    assert "other.test" not in str(caught.value)
    assert m.clock.sleeps == []  # an answer, not a transient failure: not retried


@pytest.mark.unit
@pytest.mark.parametrize("location", SAME_ORIGIN)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_same_origin_redirect_keeps_the_api_key(
    mocked: Callable[..., Mocked], status: int, location: str
) -> None:
    m = mocked(redirect_once(status, location, httpx2.Response(200, json=OK_BALANCE)))

    with anyio.fail_after(BOUND_S):
        await m.muapi.balance()

    assert len(m.seen) == 2
    assert m.seen[1].url.host == "api.muapi.ai"
    assert m.seen[1].headers["x-api-key"] == KEY


@pytest.mark.unit
@pytest.mark.parametrize("location", OFF_ORIGIN)
@pytest.mark.parametrize(
    "status",
    [
        307,
        308,
        301,
        302,
        303,
    ],
)
async def test_a_submission_redirected_to_another_origin_is_refused_without_a_second_request(
    mocked: Callable[..., Mocked], status: int, location: str
) -> None:
    m = mocked(redirect_once(status, location, httpx2.Response(200, json={"request_id": "planted"})))

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert len(m.seen) == 1
    assert caught.value.maybe_sent is True
    assert "MuAPI generate" in str(caught.value)
    assert "other.test" not in str(caught.value)


# Missing credentials ---------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("api_key", [None, SecretStr("")], ids=["unset", "empty"])
async def test_a_missing_api_key_raises_missing_credentials_naming_the_variable_before_any_request(
    mocked: Callable[..., Mocked], api_key: SecretStr | None
) -> None:
    m = mocked(scripted(httpx2.Response(200, json=OK_BALANCE)), api_key=api_key)

    with anyio.fail_after(BOUND_S), pytest.raises(MissingCredentials) as caught:
        await m.muapi.balance()
    with anyio.fail_after(BOUND_S), pytest.raises(MissingCredentials):
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert m.seen == []
    assert caught.value.error_class == "auth"
    assert "MUAPI_API_KEY" in str(caught.value)
    assert str(caught.value).startswith("MuAPI get_balance: ")


# --- group B: real HTTP on loopback against the MuAPI emulator --------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[MuapiEmulator]:
    emulator = MuapiEmulator(now=clock.monotonic)
    yield emulator
    # The emulator has no public close(); without this its TemporaryDirectory is only removed by a
    # finaliser, which raises a ResourceWarning under -W error.
    emulator.close()


def real_transport(base: str, clock: FakeClock, timeout: httpx2.Timeout | None = None) -> Transport:
    return Transport(
        provider="muapi",
        base_url=f"{base}/api/v1",
        hints=HINTS,
        auth_header="x-api-key",
        api_key=SecretStr(KEY),
        clock=clock,
        retry=RETRY,
        rng=random.Random(7),
        timeout=timeout or httpx2.Timeout(2.0),
    )


@asynccontextmanager
async def live(
    emu: MuapiEmulator, clock: FakeClock, timeout: httpx2.Timeout | None = None, *, front: Any = None
) -> AsyncIterator[tuple[MuapiClient, Transport]]:
    """The emulator on loopback (behind ``front``, an ASGI app around it, if given) and a
    production-like transport (owning its own client) pointed at it."""
    async with serve_on_loopback(front or emu.app) as url:
        emu.base_url = url
        transport = real_transport(url, clock, timeout)
        try:
            yield MuapiClient(transport), transport
        finally:
            emu.faults.release.set()  # let any request parked by a "hang" fault go
            await transport.aclose()


def in_flight(transport: Transport) -> int:
    """Requests the connection pool still counts as open (anthropic's no-leak check)."""
    pool = transport.client._transport._pool  # type: ignore[attr-defined]
    return len(pool._requests)


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening. It stays bound (without listening) while in use, so
    no server started meanwhile — this test's emulator, another pytest-xdist worker's — can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def posts(emu: MuapiEmulator) -> int:
    return sum(1 for method, _path in emu.requests if method == "POST")


async def test_loopback_rate_limit_on_balance_is_retried_after_the_retry_after_delay(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    emu.faults.add(
        method="GET", path=r"^/api/v1/account/balance$", kind="status", status=429, retry_after="2"
    )

    with anyio.fail_after(BOUND_S):
        async with live(emu, clock) as (muapi, _transport):
            balance, _cost = await muapi.balance()

    assert balance.balance == 25.0
    assert clock.sleeps == [2.0]
    assert emu.requests.count(("GET", "/api/v1/account/balance")) == 2


async def test_loopback_two_503s_on_the_poll_endpoint_are_retried_and_get_result_succeeds(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    with anyio.fail_after(BOUND_S):
        async with live(emu, clock) as (muapi, _transport):
            submission = await muapi.submit("flux-schnell-image", {"prompt": "x"})
            emu.faults.add(method="GET", path=r"/predictions/.*/result", kind="status", status=503, times=2)
            prediction = await muapi.get_result(submission.request_id)

    assert prediction.id == submission.request_id
    assert prediction.status in ("queued", "running", "processing")
    assert len(clock.sleeps) == 2
    assert emu.polls[submission.request_id] == 1  # the two faulted polls never reached the handler
    assert emu.submissions == 1


async def test_loopback_a_poll_answer_dropped_mid_body_is_retried_without_leaking_connections(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    with anyio.fail_after(BOUND_S):
        async with live(emu, clock) as (muapi, transport):
            submission = await muapi.submit("flux-schnell-image", {"prompt": "x"})
            emu.faults.add(method="GET", path=r"/predictions/.*/result", kind="drop", times=1)
            prediction = await muapi.get_result(submission.request_id)
            assert in_flight(transport) == 0
            # The client is still usable: the broken connection was discarded, not reused.
            clock.advance(60)
            again = await muapi.get_result(submission.request_id)
            balance, _cost = await muapi.balance()
            assert in_flight(transport) == 0

    assert prediction.id == submission.request_id
    assert again.status == "completed"
    assert balance.balance < 25.0
    assert len(clock.sleeps) == 1
    assert emu.submissions == 1


@dataclass(frozen=True)
class SubmitFault:
    fault: dict[str, Any]
    error: type[ProviderError]
    maybe_sent: bool
    submissions: int
    read_timeout_s: float = 2.0


SUBMIT_FAULTS = {
    "503-after-handler": SubmitFault(
        {"kind": "status", "status": 503, "after_handler": True}, ServerError, True, 1
    ),
    "500-before-handler": SubmitFault(
        {"kind": "status", "status": 500, "after_handler": False}, ServerError, True, 0
    ),
    "drop-after-handler": SubmitFault(
        {"kind": "drop", "after_handler": True}, ProviderConnectionError, True, 1
    ),
    "hang-after-handler": SubmitFault(
        {"kind": "hang", "after_handler": True}, ProviderTimeout, True, 1, read_timeout_s=0.3
    ),
}


@pytest.mark.parametrize("case", list(SUBMIT_FAULTS.values()), ids=list(SUBMIT_FAULTS))
async def test_loopback_a_submission_is_never_duplicated_under_a_fault(
    emu: MuapiEmulator, clock: FakeClock, case: SubmitFault
) -> None:
    emu.faults.add(method="POST", path=r"/flux-schnell-image$", times=1, **case.fault)
    timeout = httpx2.Timeout(2.0, read=case.read_timeout_s)

    with anyio.fail_after(BOUND_S):
        async with live(emu, clock, timeout) as (muapi, _transport):
            with pytest.raises(case.error) as caught:
                await muapi.submit("flux-schnell-image", {"prompt": "x"})
            # The fault is used up: a fresh request would now succeed, so a hidden retry would have shown.
            balance, _cost = await muapi.balance()

    assert caught.value.maybe_sent is case.maybe_sent
    assert str(caught.value).startswith("MuAPI generate: ")
    assert posts(emu) == 1  # reached the provider's front door exactly once, never re-sent
    assert emu.submissions == case.submissions
    assert len(emu.jobs) == case.submissions
    assert clock.sleeps == []
    assert balance.balance == pytest.approx(25.0 - 0.003 * case.submissions)


async def test_loopback_a_submission_to_a_closed_port_is_retried_and_never_reaches_the_provider(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    with closed_port() as port, anyio.fail_after(BOUND_S):
        async with serve_on_loopback(emu.app) as url:
            emu.base_url = url
            transport = real_transport(f"http://127.0.0.1:{port}", clock)
            try:
                with pytest.raises(ProviderConnectionError) as caught:
                    await MuapiClient(transport).submit("flux-schnell-image", {"prompt": "x"})
            finally:
                await transport.aclose()

    error = caught.value
    assert type(error) is ProviderConnectionError
    assert error.maybe_sent is False
    assert "could not connect to 127.0.0.1" in str(error)
    assert len(clock.sleeps) == RETRY.max_attempts - 1  # connect failures are provably unsent: retried
    assert emu.requests == []
    assert emu.submissions == 0


async def test_loopback_an_empty_wallet_gives_insufficient_credits_and_creates_no_job(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    emu.balance_usd = 0

    with anyio.fail_after(BOUND_S):
        async with live(emu, clock) as (muapi, _transport):
            with pytest.raises(InsufficientCredits) as caught:
                await muapi.submit("flux-schnell-image", {"prompt": "x"})

    error = caught.value
    assert error.error_class == "insufficient_credits"
    assert error.status == 402
    assert error.maybe_sent is False
    assert "MuAPI generate: not enough credits (402)" in str(error)
    assert "top up" in str(error)
    assert emu.submissions == 0
    assert emu.jobs == {}
    assert posts(emu) == 1
    assert clock.sleeps == []


@pytest.mark.unit
async def test_a_tls_verification_failure_is_reported_once_and_not_retried(
    mocked: Callable[..., Mocked],
) -> None:
    import ssl

    def refuse(request: httpx2.Request) -> httpx2.Response:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: CERTIFICATE_VERIFY_FAILED")
        except ssl.SSLError as exc:
            raise httpx2.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc

    m = mocked(refuse)

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderError) as caught:
        await m.muapi.balance()

    assert len(m.seen) == 1
    assert "TLS verification of api.muapi.ai failed" in str(caught.value)
    assert m.clock.sleeps == []


# Redirects on real sockets: the sandbox's own origin is loopback http, like an internal service's ----------


class RedirectPolls:
    """In front of the emulator: a result poll (without a query) is answered 302 to ``location(path)``."""

    def __init__(self, app: Any, location: Callable[[str], str]) -> None:
        self.app = app
        self.location = location

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/result") and not scope["query_string"]:
            await send(
                {
                    "type": "http.response.start",
                    "status": 302,
                    "headers": [
                        (b"location", self.location(scope["path"]).encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def json_head(body: bytes) -> dict[str, Any]:
    """The ASGI start of a 200 JSON answer whose body is ``body``."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}


INTERNAL_BODY = {"id": "x", "status": "completed", "outputs": ["INTERNAL-ONLY: db password hunter2"]}


@asynccontextmanager
async def internal_service() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback service nobody outside this machine should read: (its URL, the paths it was asked for)."""
    asked: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        asked.append(scope["path"])
        body = json.dumps(INTERNAL_BODY).encode()
        await send(json_head(body))
        await send({"type": "http.response.body", "body": body})

    async with serve_on_loopback(app) as url:
        yield url, asked


@pytest.mark.faults
async def test_loopback_a_poll_redirected_to_an_internal_service_is_refused_and_the_service_never_asked(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    with anyio.fail_after(BOUND_S):
        async with internal_service() as (internal_url, asked):
            front = RedirectPolls(emu.app, lambda _path: f"{internal_url}/admin/status")
            async with live(emu, clock, front=front) as (muapi, _transport):
                submission = await muapi.submit("flux-schnell-image", {"prompt": "x"})
                with pytest.raises(ProviderResponseError) as caught:
                    await muapi.get_result(submission.request_id)

    assert asked == []
    assert "INTERNAL-ONLY" not in everything_about(caught.value)
    assert internal_url.split("//")[1] not in str(caught.value)
    assert "redirected the request to another host" in str(caught.value)
    assert clock.sleeps == []


async def test_loopback_a_poll_redirected_within_the_providers_own_origin_is_followed_with_the_key(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    with anyio.fail_after(BOUND_S):
        front = RedirectPolls(emu.app, lambda path: f"{path}?moved=1")
        async with live(emu, clock, front=front) as (muapi, _transport):
            submission = await muapi.submit("flux-schnell-image", {"prompt": "x"})
            prediction = await muapi.get_result(submission.request_id)

    # Only the redirected request reaches the emulator, which answers it only with the key.
    assert prediction.id == submission.request_id
    assert ("GET", f"/api/v1/predictions/{submission.request_id}/result") in emu.requests


# The call's time budget (mediamux.deadlines) bounds the whole request: attempts, backoff and body ---------

BUDGET_S = 0.5
SLACK_S = 1.0  # scheduling noise on a shared machine; the drip alone would take 200 s


@asynccontextmanager
async def dripping_provider() -> AsyncIterator[str]:
    """A provider that answers 200 at once and then sends its body one byte every 2 s."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"id": "drip", "status": "processing", "pad": "x" * 60}).encode()
        await send(json_head(body))

        async def drip() -> None:
            for i in range(len(body)):
                await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": True})
                await anyio.sleep(2.0)

        # Stops dripping once the client hangs up, so the server can shut down at once.
        await wait_unless_client_leaves(receive, drip)

    async with serve_on_loopback(app) as url:
        yield url


@pytest.mark.faults
async def test_a_poll_whose_body_drips_ends_within_the_calls_budget_as_a_resumable_timeout(
    clock: FakeClock,
) -> None:
    async with dripping_provider() as url:
        # Per-read timeouts far above the drip interval: only the call's budget can stop this.
        transport = real_transport(url, clock, httpx2.Timeout(30.0))
        try:
            started = time.monotonic()
            with anyio.fail_after(BOUND_S), within(BUDGET_S), pytest.raises(ProviderTimeout) as caught:
                await MuapiClient(transport).get_result("drip")
            elapsed = time.monotonic() - started
            assert in_flight(transport) == 0  # the half-read answer was abandoned, not leaked
        finally:
            await transport.aclose()

    error = caught.value
    assert BUDGET_S <= elapsed < BUDGET_S + SLACK_S
    assert error.error_class == "timeout"
    assert error.maybe_sent is False  # a read: nothing is lost by giving up on it
    message = str(error)
    assert message.startswith("MuAPI get_result: ")
    assert "time budget ran out" in message and "nothing is lost" in message and "resumed" in message
    assert clock.sleeps == []  # no retry inside a budget that is already spent


@pytest.mark.faults
async def test_a_submission_whose_answer_hangs_past_the_budget_may_have_been_sent(
    emu: MuapiEmulator, clock: FakeClock
) -> None:
    emu.faults.add(method="POST", path=r"/flux-schnell-image$", kind="hang", after_handler=True)

    with anyio.fail_after(BOUND_S):
        async with live(emu, clock, httpx2.Timeout(30.0)) as (muapi, transport):
            with within(BUDGET_S), pytest.raises(ProviderTimeout) as caught:
                await muapi.submit("flux-schnell-image", {"prompt": "x"})
            assert in_flight(transport) == 0

    error = caught.value
    assert error.maybe_sent is True  # the provider did take it: the job exists upstream
    assert emu.submissions == 1 and posts(emu) == 1
    assert "time budget ran out" in str(error) and "may have reached" in str(error)
    assert "nothing is lost" not in str(error)


async def test_a_spent_budget_makes_no_request_at_all(mocked: Callable[..., Mocked]) -> None:
    m = mocked(scripted(httpx2.Response(200, json=OK_BALANCE)))

    with anyio.fail_after(BOUND_S), within(0), pytest.raises(ProviderTimeout) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert m.seen == []
    assert caught.value.maybe_sent is False
    assert "nothing was sent" in str(caught.value)


async def test_no_retry_is_started_that_the_budget_cannot_wait_for(mocked: Callable[..., Mocked]) -> None:
    # The first backoff is at least 0.25 s (half of 0.5 s); a 0.1 s budget cannot wait for it.
    m = mocked(scripted(httpx2.Response(503, json={"detail": "overloaded"})))

    with anyio.fail_after(BOUND_S), within(0.1), pytest.raises(ServerError) as caught:
        await m.muapi.balance()

    assert len(m.seen) == 1
    assert m.clock.sleeps == []
    assert caught.value.status == 503  # the provider's own answer, which says more than "out of time"


async def test_work_marked_unbounded_is_not_cut_short_by_the_callers_budget(
    mocked: Callable[..., Mocked],
) -> None:
    m = mocked(scripted(httpx2.Response(503), httpx2.Response(200, json=OK_BALANCE)))

    with anyio.fail_after(BOUND_S), within(0), unbounded():
        balance, _cost = await m.muapi.balance()

    assert balance.balance == 12.5
    assert len(m.seen) == 2


# A key echoed in another form is masked too -----------------------------------------------------------------

LONG_KEY = "mk_live_4f9a2c7e1b8d3f60a5c2"


def echoes_of(key: str) -> dict[str, str]:
    """The forms a provider has echoed a key in: changed case, spaced out, base64 (as in a Basic auth
    header, at any alignment), hex, and inside an id."""
    raw = key.encode()
    return {
        "upper": key.upper(),
        "lower": key.lower(),
        "spaced": " ".join(key),
        "dashed-upper": "-".join(key.upper()),
        "line-broken": key[:9] + "\n  " + key[9:],
        "base64": base64.b64encode(raw).decode(),
        "basic-auth": "Basic " + base64.b64encode(b"user:" + raw).decode(),
        "base64-offset-1": base64.b64encode(b"k" + raw + b"!").decode(),
        "urlsafe-base64": base64.urlsafe_b64encode(b"??" + raw).decode(),
        "hex": raw.hex(),
        "in-an-id": f"req_{key}_7",
    }


def leaks(text: str, key: str) -> list[str]:
    """Which echoes of ``key`` (or its letters and digits in order) survive in ``text``."""
    found = [name for name, form in echoes_of(key).items() if form in text]
    squeezed = re.sub(r"[^0-9a-z]", "", text.lower())
    if re.sub(r"[^0-9a-z]", "", key.lower()) in squeezed:
        found.append("letters-and-digits")
    return found


@pytest.mark.parametrize("form", list(echoes_of(LONG_KEY)))
async def test_scrub_masks_the_key_in_every_form_a_provider_echoed_it_in(
    mocked: Callable[..., Mocked], form: str
) -> None:
    m = mocked(scripted(httpx2.Response(200)), api_key=SecretStr(LONG_KEY))

    shown = m.transport.scrub(f"upstream said: {echoes_of(LONG_KEY)[form]} (request 42)")

    assert leaks(shown, LONG_KEY) == []
    assert "[redacted]" in shown
    assert shown.startswith("upstream said: ") and shown.endswith("(request 42)")


async def test_scrub_leaves_ordinary_text_and_short_lookalikes_alone(mocked: Callable[..., Mocked]) -> None:
    m = mocked(scripted(httpx2.Response(200)), api_key=SecretStr(LONG_KEY))
    text = "model mk_live is busy; retry in 4 s; ids 4f9a2c7e, 1b8d3f60"

    assert m.transport.scrub(text) == text


@pytest.mark.parametrize("echoes", [0, 1, 3, 5, 30])
async def test_a_long_body_cut_before_masking_never_shows_part_of_a_key(
    mocked: Callable[..., Mocked], echoes: int
) -> None:
    m = mocked(scripted(httpx2.Response(200)), api_key=SecretStr(LONG_KEY))
    spaced = " ".join(LONG_KEY) + " "
    shown_chars = 40
    # Echoes that shrink when masked, then filler, then a key at every position up to where the body
    # is cut, wherever that is: a key split by the cut must not slide into view.
    for filler in range(SecretMask([LONG_KEY]).window(shown_chars) + 10):
        text = spaced * echoes + "f" * filler + LONG_KEY + "x" * 20_000
        visible = m.transport.scrub(text, shown_chars).replace("[redacted]", "").lower()
        assert not any(LONG_KEY[i : i + 5].lower() in visible for i in range(len(LONG_KEY) - 4)), filler


@pytest.mark.parametrize("form", ["in-an-id", "base64", "upper"])
async def test_a_request_id_carrying_the_key_is_refused_as_an_answer_that_may_have_been_acted_upon(
    mocked: Callable[..., Mocked], form: str
) -> None:
    request_id = echoes_of(LONG_KEY)[form]
    m = mocked(
        scripted(httpx2.Response(200, json={"request_id": request_id, "status": "processing"})),
        api_key=SecretStr(LONG_KEY),
    )

    with anyio.fail_after(BOUND_S), pytest.raises(ProviderResponseError) as caught:
        await m.muapi.submit("flux-schnell-image", {"prompt": "x"})

    assert caught.value.maybe_sent is True
    assert "request_id contains the API key" in str(caught.value)
    assert leaks(everything_about(caught.value), LONG_KEY) == []
