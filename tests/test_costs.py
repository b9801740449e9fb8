"""Reported costs are validated: a figure that cannot be a charge is a provider fault, never a charge.

Negative, infinite, NaN and unparseable amounts, in MuAPI's headers or its ``cost`` object and in
Muzaic's ``tokensUsed``, are logged as the provider's fault and treated as not reported; the ledger
and ``mediamux://costs`` stay finite, valid JSON, and keep counting later charges.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from pydantic import SecretStr

from mediamux.clock import FakeClock
from mediamux.jobs.journal import Journal
from mediamux.providers.cost import Cost
from mediamux.providers.muapi import cost_from
from mediamux.providers.muzaic import MuzaicClient
from mediamux.providers.transport import ProviderHints, ProviderResponse, Transport
from tests.test_muapi_tools import call, text
from tests.test_security_and_surface import server_behind

pytestmark = pytest.mark.faults

# Header text, and the same value as the JSON token Python's json module writes (and reads back).
UNUSABLE = {
    "negative": ("-5", -5.0),
    "minus-infinity": ("-inf", float("-inf")),
    "infinity": ("inf", float("inf")),
    "nan": ("nan", float("nan")),
    "overflow": ("1e999", float("inf")),
    "not-a-number": ("five dollars", "five dollars"),
}


def strict_json(text: str) -> Any:
    """JSON as other languages read it: Infinity and NaN are not JSON."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def response(headers: dict[str, str]) -> ProviderResponse:
    return ProviderResponse(200, httpx2.Headers(headers), b"", "/api/v1/predictions/x/result")


# -- the client edge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_an_unusable_cost_header_is_not_reported_and_logged_as_a_provider_fault(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    header, _ = UNUSABLE[case]
    caplog.set_level(logging.WARNING)

    cost = cost_from(
        response({"X-MuAPI-Cost-USD": header, "X-MuAPI-Cost-Credits": "1", "X-Account-Balance": "18.5"}), {}
    )

    assert cost.usd is None
    assert cost.credits == 1 and cost.balance_usd == 18.5  # the usable figures stand
    assert cost.source == "headers"
    faults = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(faults) == 1
    assert "MuAPI" in faults[0].getMessage() and "X-MuAPI-Cost-USD" in faults[0].getMessage()
    assert "five dollars" not in caplog.text  # text from the provider is named, never quoted


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_an_unusable_amount_in_the_cost_object_is_not_reported_and_logged(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, value = UNUSABLE[case]
    caplog.set_level(logging.WARNING)
    body = json.loads(json.dumps({"cost": {"amount_usd": value, "amount_credits": 2, "refunded": False}}))

    cost = cost_from(response({}), body)

    assert cost.usd is None
    assert cost.credits == 2 and cost.refunded is False
    assert cost.source == "body"
    assert any("cost.amount_usd" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_bad_header_does_not_override_a_good_body_figure_and_a_bad_body_figure_keeps_the_header() -> None:
    bad_header = cost_from(response({"X-MuAPI-Cost-USD": "-5"}), {"cost": {"amount_usd": 0.004}})
    bad_body = cost_from(response({"X-MuAPI-Cost-USD": "0.004"}), {"cost": {"amount_usd": -5}})

    assert bad_header.usd == 0.004
    assert bad_body.usd == 0.004


def test_an_overdrawn_balance_is_a_balance_but_an_infinite_one_is_not() -> None:
    assert cost_from(response({"X-Account-Balance": "-3.25"}), {}).balance_usd == -3.25
    assert cost_from(response({"X-Account-Balance": "-inf"}), {}).balance_usd is None


@pytest.mark.parametrize("value", [-5, float("-inf"), float("inf"), float("nan"), "abc", True])
def test_a_cost_block_can_never_hold_a_negative_or_non_finite_charge(value: object) -> None:
    cost = Cost.model_validate({"usd": value, "credits": value, "bonus_credits": value, "tokens": value})

    assert (cost.usd, cost.credits, cost.bonus_credits, cost.tokens) == (None, None, None, None)
    strict_json(cost.model_dump_json())


# As JSON tokens: Python's json module (and so the transport) reads -Infinity and NaN.
@pytest.mark.parametrize("tokens", ["-30", "-Infinity", "NaN", '"thirty"'])
async def test_unusable_muzaic_tokens_are_not_reported_and_logged(
    tokens: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content='{"mp3": "https://cdn.muzaic.test/a.mp3", "tokensUsed": ' + tokens + "}"
        )

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as http:
        transport = Transport(
            provider="muzaic",
            base_url="https://m10.muzaic.test",
            hints=ProviderHints(title="Muzaic", key_env="MUZAIC_API_KEY"),
            auth_header="MuzaicAPI-Secret-Key",
            api_key=SecretStr("muzaic-key"),
            client=http,
        )
        with anyio.fail_after(10):
            generation = await MuzaicClient(transport).single_file(duration=30, tags=[1], params={})

    assert generation.tokens_used is None
    assert generation.cost.tokens is None and generation.cost.is_empty
    assert any("tokensUsed" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# -- the ledger -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-5.0, float("-inf"), float("inf"), float("nan")])
def test_the_ledger_never_stores_a_negative_or_non_finite_charge(tmp_path: Path, value: float) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        # model_construct: a Cost that skipped validation, as a future code path might build one.
        bad = Cost.model_construct(usd=value, credits=value, tokens=value)
        journal.record_cost("bad", provider="muapi", operation="generate", session_id="s", cost=bad, ts=1.0)
        journal.record_cost(
            "good", provider="muapi", operation="generate", session_id="s", cost=Cost(usd=0.5), ts=2.0
        )
        totals = journal.totals("s")
    finally:
        journal.close()

    assert totals["usd"] == 0.5
    assert totals["providers"]["muapi"]["credits"] is None
    strict_json(json.dumps(totals))


# -- through a tool call, against the emulator on loopback ---------------------------------------------


class RewriteCost:
    """Between the client and the MuAPI emulator: the next answers carry ``usd`` as their charge, in the
    ``X-MuAPI-Cost-USD`` header and in the body's ``cost.amount_usd``, as a provider at fault would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.usd: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.usd or not scope["path"].startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        usd = self.usd[0]
        start: dict[str, Any] = {}
        body = b""

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal body
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("cost"), dict):
                data["cost"]["amount_usd"] = "__USD__"
                body = json.dumps(data).replace('"__USD__"', usd).encode()
            headers = [
                (k, v)
                for k, v in start["headers"]
                if k.lower() not in (b"x-muapi-cost-usd", b"content-length")
            ]
            headers += [(b"x-muapi-cost-usd", usd.encode()), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, capture)


@pytest.fixture
async def faulty_costs(
    home: Path, files_dir: Path, clock: FakeClock
) -> AsyncIterator[tuple[RewriteCost, Client]]:
    async with server_behind(RewriteCost, home, files_dir, clock) as (_emulator, rewrite, client):
        yield rewrite, client


async def test_negative_and_infinite_charges_never_reach_the_ledger_and_later_charges_still_count(
    faulty_costs: tuple[RewriteCost, Client], caplog: pytest.LogCaptureFixture
) -> None:
    rewrite, client = faulty_costs
    caplog.set_level(logging.WARNING)
    charged: list[float | None] = []
    for n, usd in enumerate(["-5", "-Infinity", "Infinity", "NaN", None]):
        rewrite.usd = [usd] if usd else []
        result = await call(
            client,
            "muapi_generate",
            {"endpoint": "flux-schnell-image", "params": {"prompt": f"fox {n}"}, "save_outputs": False},
        )
        assert not result.is_error, text(result)
        assert result.structured_content["status"] == "completed"
        charged.append(result.structured_content["cost"]["usd"])
        strict_json(json.dumps(result.structured_content))
    with anyio.fail_after(10):
        costs = strict_json((await client.read_resource("mediamux://costs")).contents[0].text)

    assert charged == [None, None, None, None, pytest.approx(0.003)]
    for scope in ("session", "all_time"):
        assert costs[scope]["usd"] == pytest.approx(0.003), costs
        assert math.isfinite(costs[scope]["providers"]["muapi"]["usd"])
        assert costs[scope]["providers"]["muapi"]["entries_without_usd"] == 4
    faults = [r.getMessage() for r in caplog.records if r.name == "mediamux.providers.cost"]
    assert faults and all("MuAPI" in m for m in faults)
