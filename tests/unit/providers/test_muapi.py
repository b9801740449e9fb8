"""MuAPI client: the documented submit / poll / account shapes, cost signals, and error mapping.

Shapes are quoted from ``shared/providers/muapi-api.txt`` (S4) and NOTES §4; the variants come from
the official CLI and third-party code the NOTES cite. The last test is a round trip against the
MuAPI emulator's ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mediamux.providers.errors import (
    AuthFailed,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderResponseError,
    RateLimited,
    ServerError,
)
from mediamux.providers.muapi import MuapiClient, Prediction, normalize_status
from mediamux.sandbox.muapi import MuapiEmulator
from tests.sandbox.conftest import FakeNow
from tests.unit.conftest import KEY, Wire, always, answer

BASE = "https://api.muapi.ai/api/v1"
DOC_COST = {"amount_usd": 0.0042, "amount_credits": 1, "bonus_credits_used": 0, "refunded": False}
DOC_HEADERS = {"X-MuAPI-Cost-USD": "0.004200", "X-MuAPI-Cost-Credits": "1", "X-Account-Balance": "18.7234"}


def muapi(
    wire: Callable[..., Wire], handler: Callable[[httpx2.Request], httpx2.Response]
) -> tuple[MuapiClient, Wire]:
    w = wire("muapi", BASE, handler)
    return MuapiClient(w.transport), w


# -- submit ---------------------------------------------------------------------------------------


async def test_submit_reads_the_documented_answer_with_cost_from_body_and_headers(
    wire: Callable[..., Wire],
) -> None:
    body = {"request_id": "abc123xyz", "status": "processing", "cost": DOC_COST}
    client, w = muapi(wire, always(answer(200, body, **DOC_HEADERS)))

    submission = await client.submit("flux-dev-image", {"prompt": "a heron", "num_images": 1})

    assert submission.request_id == "abc123xyz" and submission.status == "processing"
    cost = submission.cost
    assert (cost.usd, cost.credits, cost.bonus_credits, cost.refunded) == (0.0042, 1, 0, False)
    assert cost.balance_usd == pytest.approx(18.7234)
    assert cost.source == "body+headers"
    [sent] = w.sent
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/flux-dev-image")
    assert sent.json() == {"prompt": "a heron", "num_images": 1}
    assert sent.headers["x-api-key"] == KEY


@pytest.mark.parametrize("request_id", ["9f1c2b", 1234], ids=["string", "number"])
async def test_submit_accepts_the_id_field_in_place_of_request_id(
    wire: Callable[..., Wire], request_id: Any
) -> None:
    client, _ = muapi(wire, always(answer(200, {"id": request_id, "status": "queued"})))

    submission = await client.submit("flux-schnell-image", {"prompt": "x"})

    assert submission.request_id == str(request_id)
    assert submission.cost.is_empty and submission.cost.source is None  # nothing reported, nothing invented


async def test_a_submit_answer_without_a_request_id_may_have_been_charged(wire: Callable[..., Wire]) -> None:
    client, w = muapi(wire, always(answer(200, {"status": "processing", "cost": DOC_COST})))

    with pytest.raises(ProviderResponseError, match="no request_id") as caught:
        await client.submit("flux-schnell-image", {"prompt": "x"})

    assert caught.value.maybe_sent is True
    assert len(w.sent) == 1


async def test_a_webhook_url_travels_as_the_documented_query_parameter(wire: Callable[..., Wire]) -> None:
    client, w = muapi(wire, always(answer(200, {"request_id": "r1"})))

    await client.submit("flux-schnell-image", {"prompt": "x"}, webhook_url="https://hooks.example/done")

    assert w.sent[0].url.params["webhook"] == "https://hooks.example/done"
    assert "webhook" not in w.sent[0].json()


async def test_a_submission_answered_with_a_5xx_is_sent_once_and_flagged_possibly_sent(
    wire: Callable[..., Wire],
) -> None:
    client, w = muapi(wire, always(answer(503, {"detail": "upstream busy"})))

    with pytest.raises(ServerError) as caught:
        await client.submit("flux-schnell-image", {"prompt": "x"})

    assert caught.value.maybe_sent is True
    assert len(w.sent) == 1 and w.clock.sleeps == []


@pytest.mark.parametrize("endpoint", ["../keys", "a//b", "", "flux dev", "x/../../account/topup"])
async def test_an_endpoint_that_is_not_a_model_slug_is_refused_before_any_request(
    wire: Callable[..., Wire], endpoint: str
) -> None:
    client, w = muapi(wire, always(answer(200, {"request_id": "r"})))

    with pytest.raises(InvalidRequest, match="not a model endpoint slug"):
        await client.submit(endpoint, {})

    assert w.sent == []


def test_nested_model_slugs_are_endpoints() -> None:
    assert MuapiClient.check_endpoint(" /mmaudio-v2/text-to-audio/ ") == "mmaudio-v2/text-to-audio"


# -- cost signals ------------------------------------------------------------------------------------


async def test_cost_from_headers_alone_includes_bonus_and_refund_flags(wire: Callable[..., Wire]) -> None:
    headers = {
        "X-MuAPI-Cost-USD": "0.600000",
        "X-MuAPI-Cost-Credits": "143",
        "X-MuAPI-Cost-Bonus-Credits": "20",
        "X-MuAPI-Cost-Refunded": "true",
        "X-Account-Balance": "3.5",
    }
    client, _ = muapi(wire, always(answer(200, {"id": "r", "status": "failed", "error": "nsfw"}, **headers)))

    prediction = await client.get_result("r")

    cost = prediction.cost
    assert (cost.usd, cost.credits, cost.bonus_credits, cost.refunded, cost.balance_usd) == (
        0.6,
        143,
        20,
        True,
        3.5,
    )
    assert cost.source == "headers"


async def test_cost_from_the_body_alone_leaves_unreported_fields_unknown(wire: Callable[..., Wire]) -> None:
    client, _ = muapi(
        wire, always(answer(200, {"id": "r", "status": "completed", "cost": {"amount_usd": 0.01}}))
    )

    cost = (await client.get_result("r")).cost

    assert cost.usd == 0.01 and cost.source == "body"
    assert (cost.credits, cost.bonus_credits, cost.refunded, cost.balance_usd) == (None, None, None, None)


async def test_unreadable_cost_values_are_ignored_not_guessed(wire: Callable[..., Wire]) -> None:
    body = {"id": "r", "status": "completed", "cost": "free!"}
    client, _ = muapi(wire, always(answer(200, body, X_MuAPI_Cost_USD="n/a", X_Account_Balance="")))

    cost = (await client.get_result("r")).cost

    assert cost.is_empty and cost.source is None


# -- polling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ours"),
    [
        ("queued", "queued"),
        ("pending", "queued"),
        ("processing", "running"),
        ("Completed", "completed"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("canceled", "cancelled"),
        ("warming_up", "warming_up"),  # unknown words pass through, non-terminal, reported by name
        (None, "unknown"),
    ],
)
def test_status_words_map_onto_ours(raw: str | None, ours: str) -> None:
    assert normalize_status(raw) == ours


async def test_the_documented_completed_result_reads_its_outputs_and_cost(wire: Callable[..., Wire]) -> None:
    body = {
        "id": "abc123xyz",
        "status": "completed",
        "outputs": ["https://cdn.muapi.ai/o.png"],
        "cost": DOC_COST,
    }
    client, w = muapi(wire, always(answer(200, body)))

    prediction = await client.get_result("abc123xyz")

    assert prediction.status == "completed" and prediction.output_urls == ["https://cdn.muapi.ai/o.png"]
    assert prediction.cost.usd == 0.0042 and prediction.error_message is None
    assert str(w.sent[0].url) == f"{BASE}/predictions/abc123xyz/result"


def test_outputs_may_be_urls_or_objects_and_null_means_none() -> None:
    mixed = Prediction.model_validate(
        {
            "status": "completed",
            "outputs": ["https://a/1.png", {"url": "https://a/2.mp4"}, {"uri": "https://a/3"}, 7],
        }
    )
    empty = Prediction.model_validate({"status": "processing", "outputs": None})

    assert mixed.output_urls == ["https://a/1.png", "https://a/2.mp4", "https://a/3"]
    assert empty.outputs == []


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("NSFW content detected", "NSFW content detected"),
        ({"message": "bad prompt"}, "bad prompt"),
        ("", None),
    ],
)
def test_a_failed_prediction_reports_its_error_from_a_string_or_an_object(
    error: Any, message: str | None
) -> None:
    assert Prediction.model_validate({"status": "failed", "error": error}).error_message == message


@pytest.mark.parametrize("word", ["processing", "pending", "queued"])
async def test_a_400_whose_body_says_still_running_is_read_as_a_running_prediction(
    wire: Callable[..., Wire], word: str
) -> None:
    # NOTES §4.3: some integrations see HTTP 400 from the poll endpoint while the job is running.
    client, w = muapi(wire, always(answer(400, {"id": "r", "status": word})))

    prediction = await client.get_result("r")

    assert normalize_status(prediction.status) in ("queued", "running")
    assert len(w.sent) == 1


async def test_a_400_with_an_error_body_is_an_invalid_request(wire: Callable[..., Wire]) -> None:
    client, _ = muapi(wire, always(answer(400, {"detail": "request_id is malformed"})))

    with pytest.raises(InvalidRequest, match="request_id is malformed"):
        await client.get_result("r")


@pytest.mark.parametrize("request_id", ["a/b", "..", " ", "x\ny"])
async def test_a_request_id_that_would_change_the_path_is_refused_before_any_request(
    wire: Callable[..., Wire], request_id: str
) -> None:
    client, w = muapi(wire, always(answer(200, {"status": "completed"})))

    with pytest.raises(InvalidRequest):
        await client.get_result(request_id)

    assert w.sent == []


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "error_class", "what"),
    [
        (401, AuthFailed, "auth", "authentication failed (401)"),
        (403, AuthFailed, "auth", "access denied (403)"),
        (402, InsufficientCredits, "insufficient_credits", "not enough credits (402)"),
        (404, NotFound, "not_found", "not found (404)"),
        (422, InvalidRequest, "invalid_input", "invalid input (422)"),
    ],
)
async def test_error_statuses_map_to_the_documented_classes_and_are_not_retried(
    wire: Callable[..., Wire], status: int, kind: type[ProviderError], error_class: str, what: str
) -> None:
    client, w = muapi(wire, always(answer(status, {"detail": "the provider's words"})))

    with pytest.raises(kind) as caught:
        await client.balance()

    error = caught.value
    assert error.error_class == error_class and error.status == status
    assert str(error).startswith(f"MuAPI get_balance: {what}: the provider's words")
    assert len(w.sent) == 1 and error.maybe_sent is False


async def test_a_rate_limit_beyond_the_cap_is_raised_with_its_retry_after(wire: Callable[..., Wire]) -> None:
    client, w = muapi(wire, always(answer(429, {"detail": "slow down"}, Retry_After="300")))

    with pytest.raises(RateLimited) as caught:
        await client.balance()

    assert caught.value.retry_after_s == 300 and "retry after 300 s" in str(caught.value)
    assert len(w.sent) == 1 and w.clock.sleeps == []


async def test_a_read_that_keeps_failing_with_5xx_is_retried_then_reported(wire: Callable[..., Wire]) -> None:
    client, w = muapi(wire, always(answer(500, {"detail": "boom"})))

    with pytest.raises(ServerError, match="internal error \\(500\\)"):
        await client.balance()

    assert len(w.sent) == 3 and len(w.clock.sleeps) == 2


# -- account, keys, uploads, models ------------------------------------------------------------------


async def test_balance_and_topup_read_their_answers(wire: Callable[..., Wire]) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/account/balance"):
            return answer(200, {"balance": 18.7234, "currency": "usd", "email": "me@example.com"})
        return answer(200, {"checkout_url": "https://checkout.stripe.com/c/pay/x", "amount": 20})

    client, w = muapi(wire, handler)

    balance, _ = await client.balance()
    checkout = await client.topup(20)

    assert balance.balance == 18.7234 and balance.email == "me@example.com"
    assert checkout.checkout_url.startswith("https://checkout.stripe.com/")
    assert w.sent[1].json() == {"amount": 20, "currency": "usd"}


async def test_a_balance_answer_without_a_balance_is_a_response_error(wire: Callable[..., Wire]) -> None:
    client, _ = muapi(wire, always(answer(200, {"currency": "usd"})))

    with pytest.raises(ProviderResponseError, match="no usable balance"):
        await client.balance()


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare-list", "keys-object"])
async def test_a_key_listing_never_keeps_a_raw_key(wire: Callable[..., Wire], wrapped: bool) -> None:
    keys = [
        {"id": 1, "name": "master", "is_active": True, "api_key": "sk-live-SECRET"},
        {"id": 2, "name": "ci", "is_test": True, "key": "sk-test-SECRET"},
        "not-a-key-object",
    ]
    client, _ = muapi(wire, always(answer(200, {"keys": keys} if wrapped else keys)))

    listed = await client.list_keys()

    assert [(k.id, k.name) for k in listed] == [(1, "master"), (2, "ci")]
    assert "SECRET" not in repr(listed) and "SECRET" not in str([k.model_dump() for k in listed])


async def test_a_created_key_is_returned_but_kept_out_of_its_repr(wire: Callable[..., Wire]) -> None:
    client, w = muapi(wire, always(answer(200, {"id": 7, "name": "ci", "api_key": "sk-test-NEWKEY"})))

    created = await client.create_key("ci", is_test=True)

    assert created.api_key == "sk-test-NEWKEY" and created.is_test is True
    assert "NEWKEY" not in repr(created)
    assert w.sent[0].json() == {"name": "ci", "is_test": True}


@pytest.mark.parametrize(
    ("body", "message"), [(b"", "deleted"), (b'{"message": "Key revoked"}', "Key revoked")]
)
async def test_deleting_a_key_reads_the_message_or_nothing(
    wire: Callable[..., Wire], body: bytes, message: str
) -> None:
    client, w = muapi(wire, always(answer(200, body)))

    assert await client.delete_key(7) == message
    assert (w.sent[0].method, w.sent[0].path) == ("DELETE", "/api/v1/keys/7")


@pytest.mark.parametrize("field", ["url", "file_url", "output"])
async def test_an_upload_answer_names_its_hosted_url_in_any_documented_field(
    wire: Callable[..., Wire], tmp_path: Path, field: str
) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cat" * 100)
    client, w = muapi(wire, always(answer(200, {field: "https://cdn.muapi.ai/uploads/cat.png"})))

    url = await client.upload_file(tmp_path / "cat.png", [tmp_path])

    assert url == "https://cdn.muapi.ai/uploads/cat.png"
    assert w.sent[0].headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="cat.png"' in w.sent[0].body


async def test_an_upload_answer_without_a_url_is_a_response_error(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    client, _ = muapi(wire, always(answer(200, {"ok": True})))

    with pytest.raises(ProviderResponseError, match="no url"):
        await client.upload_file(tmp_path / "cat.png", [tmp_path])


@pytest.mark.parametrize("key", [None, "models", "items", "data"])
async def test_a_model_listing_may_be_bare_or_wrapped_and_nameless_entries_are_skipped(
    wire: Callable[..., Wire], key: str | None
) -> None:
    models = [
        {"name": "flux-dev-image", "category": "Text to Image", "cost": {"usd": 0.01}, "extra": "kept"},
        {"category": "no name"},
    ]
    client, w = muapi(wire, always(answer(200, models if key is None else {key: models})))

    listed = await client.list_models(category="Text to Image")

    assert [m.name for m in listed] == ["flux-dev-image"]
    assert listed[0].model_extra == {"extra": "kept"}
    assert w.sent[0].url.params["category"] == "Text to Image" and "family" not in w.sent[0].url.params


# -- against the emulator ----------------------------------------------------------------------------


async def test_a_generation_round_trip_against_the_emulator_in_process(wire: Callable[..., Wire]) -> None:
    now = FakeNow()
    emulator = MuapiEmulator(now=now, master_key=KEY)
    try:
        client = MuapiClient(wire("muapi", "http://muapi.test/api/v1", app=emulator.app).transport)

        submission = await client.submit("flux-schnell-image", {"prompt": "a red fox in snow"})
        early = await client.get_result(submission.request_id)
        now.advance(600)
        done = await client.get_result(submission.request_id)
    finally:
        emulator.close()

    assert submission.cost.usd == pytest.approx(0.003) and submission.cost.source == "body+headers"
    assert normalize_status(early.status) in ("queued", "running")
    assert done.status == "completed" and len(done.output_urls) == 1
    assert done.cost.balance_usd == pytest.approx(25.0 - 0.003)
    assert emulator.submissions == 1


@pytest.mark.parametrize(
    ("listed", "slug"),
    [
        ({"name": "FLUX dev", "endpoint": "flux-dev-image"}, "flux-dev-image"),
        ({"name": "FLUX dev", "endpoint_url": "flux-dev-image"}, "flux-dev-image"),
        (
            {"name": "FLUX dev", "endpoint_url": "https://api.muapi.ai/api/v1/flux-dev-image"},
            "flux-dev-image",
        ),
        ({"name": "flux-dev-image"}, None),
    ],
)
def test_a_model_is_called_by_its_endpoint_even_when_it_differs_from_its_name(
    listed: dict[str, str], slug: str | None
) -> None:
    from mediamux.providers.muapi import ModelInfo

    assert ModelInfo.model_validate(listed).endpoint == slug
