"""MuAPI client: submit-then-poll generation across hundreds of models, with per-request cost.

Contract: ``shared/providers/muapi-api.txt`` and NOTES §4. Models are tolerant readers: unknown
fields are kept, and the documented variants (``request_id`` or ``id``; ``url``, ``file_url`` or
``output`` for uploads; bare lists or wrapped lists of models) are all accepted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator

from mediamux.files import multipart_file_upload
from mediamux.providers._util import Tolerant, number, path_segment, read_each
from mediamux.providers.cost import Cost, reported_amount
from mediamux.providers.errors import InvalidRequest, ProviderStatusError
from mediamux.providers.status import normalize_status
from mediamux.providers.transport import ProviderResponse, Retry, Transport

ENDPOINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")

_NOT_EXPOSED = "mediamux does not expose it"
# MuAPI serves its own account and API under the same prefix as the models, so an "endpoint" that
# names one of them would call it with the caller's params: "keys" created an API key, and
# "account/topup" would open a checkout. No model is named like these (first path segment,
# compared case-insensitively), and each that matters has a tool of its own, named here.
RESERVED_ENDPOINTS: Final[dict[str, tuple[str, str]]] = {
    "keys": ("API-key management", "muapi_list_keys, muapi_create_key or muapi_delete_key"),
    "account": ("account", "muapi_get_balance or muapi_topup"),
    "balance": ("account balance", "muapi_get_balance"),
    "billing": ("billing", "muapi_get_balance or muapi_topup"),
    "topup": ("top-up", "muapi_topup"),
    "payments": ("payments", "muapi_topup"),
    "upload_file": ("file upload", "muapi_upload_file"),
    "upload": ("file upload", "muapi_upload_file"),
    "uploads": ("file upload", "muapi_upload_file"),
    "get_upload_url": ("file upload", "muapi_upload_file"),
    "predictions": ("result", "muapi_get_result, or jobs_wait for a job started here"),
    "prediction": ("result", "muapi_get_result, or jobs_wait for a job started here"),
    "result": ("result", "muapi_get_result, or jobs_wait for a job started here"),
    "results": ("result", "muapi_get_result, or jobs_wait for a job started here"),
    "models": ("model catalogue", "muapi_list_models or muapi_get_model"),
    "auth": ("sign-in", _NOT_EXPOSED),
    "workflow": ("workflow", _NOT_EXPOSED),
    "workflows": ("workflow", _NOT_EXPOSED),
    "creative-agent": ("Design Agent", _NOT_EXPOSED),
    "jobs": ("Design Agent", _NOT_EXPOSED),
    "webhooks": ("webhook", _NOT_EXPOSED),
    "mcp": ("hosted MCP", _NOT_EXPOSED),
}


class Submission(Tolerant):
    request_id: str
    status: str | None = None
    outputs: list[Any] = Field(default_factory=list)
    cost: Cost = Field(default_factory=Cost)

    @field_validator("outputs", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("status", mode="before")
    @classmethod
    def _status_text(cls, v: Any) -> Any:
        return None if v is None else str(v)


class Prediction(Tolerant):
    id: str | None = None
    status: str = "unknown"
    outputs: list[Any] = Field(default_factory=list)

    @field_validator("outputs", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("status", "id", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return None if v is None else str(v)

    error: Any = None
    has_nsfw_contents: list[bool] | None = None
    created_at: str | None = None
    executionTime: Any = None
    cost: Cost = Field(default_factory=Cost)

    @property
    def output_urls(self) -> list[str]:
        urls: list[str] = []
        for item in self.outputs:
            if isinstance(item, str):
                urls.append(item)
            elif isinstance(item, dict):
                url = item.get("url") or item.get("uri")
                if isinstance(url, str):
                    urls.append(url)
        return urls

    @property
    def error_message(self) -> str | None:
        if self.error in (None, ""):
            return None
        if isinstance(self.error, dict):
            return str(self.error.get("message") or self.error.get("detail") or self.error)
        return str(self.error)


class Balance(Tolerant):
    balance: float
    currency: str = "usd"
    email: str | None = None

    @field_validator("balance", mode="before")
    @classmethod
    def _usable(cls, v: Any) -> Any:
        # Refused, not read as "no balance": a model told "$inf" or "$NaN" would act on it.
        if reported_amount(v, "balance", "MuAPI", signed=True) is None:
            raise ValueError("not a usable amount")
        return v


class TopupCheckout(Tolerant):
    checkout_url: str
    amount: float | None = None
    currency: str | None = None


class ApiKeyFields(BaseModel):
    """What a key listing says about a key; never the key itself."""

    id: int | str
    name: str | None = None
    is_active: bool | None = None
    is_test: bool | None = None
    created_at: str | None = None
    last_used_at: str | None = None


class ApiKeyInfo(ApiKeyFields, Tolerant):
    pass


class CreatedKey(BaseModel):
    id: int | str
    name: str | None = None
    api_key: str = Field(repr=False)
    is_test: bool | None = None


class ModelInfo(Tolerant):
    name: str
    # The slug to call, which need not be the model's name; listed as endpoint or endpoint_url.
    endpoint: str | None = Field(None, validation_alias=AliasChoices("endpoint", "endpoint_url"))
    category: str | None = None
    family: str | None = None
    description: str | None = None
    cost: Any = None
    input_schema: dict[str, Any] | None = None

    @field_validator("endpoint", mode="before")
    @classmethod
    def _slug(cls, value: Any) -> Any:
        # endpoint_url may be the whole URL ("https://api.muapi.ai/api/v1/flux-dev-image").
        if isinstance(value, str) and "/api/v1/" in value:
            return value.split("/api/v1/", 1)[1].strip("/")
        return value


_COST_HEADERS = {
    "usd": "X-MuAPI-Cost-USD",
    "credits": "X-MuAPI-Cost-Credits",
    "bonus_credits": "X-MuAPI-Cost-Bonus-Credits",
}
_COST_FIELDS = {"usd": "amount_usd", "credits": "amount_credits", "bonus_credits": "bonus_credits_used"}


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def cost_from(response: ProviderResponse, body: Any) -> Cost:
    """Merge the ``cost`` object and the ``X-MuAPI-Cost-*`` / ``X-Account-Balance`` headers.

    Each figure is read on its own: one unusable value (refused and logged by ``reported_amount``)
    leaves the others standing.
    """
    h = response.headers
    header_refunded = h.get("x-muapi-cost-refunded")
    from_headers = Cost(
        **{key: reported_amount(h.get(name), name, "MuAPI") for key, name in _COST_HEADERS.items()},
        refunded=_flag(header_refunded) if header_refunded else None,
        balance_usd=reported_amount(h.get("x-account-balance"), "X-Account-Balance", "MuAPI", signed=True),
    )
    raw = body.get("cost") if isinstance(body, dict) else None
    from_body = None
    if isinstance(raw, dict):
        from_body = Cost(
            **{
                key: reported_amount(raw.get(name), f"cost.{name}", "MuAPI")
                for key, name in _COST_FIELDS.items()
            },
            refunded=_flag(raw.get("refunded")),
        )
    cost = from_headers if from_body is None else from_headers.merged_with(from_body)
    has_headers = any(v is not None for v in (from_headers.usd, from_headers.credits, from_headers.refunded))
    if from_body is not None and has_headers:
        cost.source = "body+headers"
    elif from_body is not None:
        cost.source = "body"
    elif not cost.is_empty:
        cost.source = "headers"
    return cost


class MuapiClient:
    provider = "muapi"

    def __init__(self, transport: Transport) -> None:
        self.t = transport

    @property
    def origin(self) -> str:
        """Where this provider serves from: its own output URLs are trusted for downloads."""
        return self.t.origin

    def scrub(self, text: str, limit: int = 300) -> str:
        """Provider text made safe to relay: no key in any form, cut to ``limit`` characters."""
        return self.t.scrub(text, limit)

    @staticmethod
    def check_endpoint(endpoint: str, operation: str = "generate") -> str:
        endpoint = endpoint.strip().strip("/")
        if not ENDPOINT_RE.fullmatch(endpoint) or ".." in endpoint:
            raise InvalidRequest(
                f"MuAPI {operation}: {endpoint!r} is not a model endpoint slug (letters, digits, '.', '_', '-', "
                "'/' between parts, e.g. 'flux-dev-image'); use muapi_list_models to find one",
                provider="muapi",
                operation=operation,
            )
        reserved = RESERVED_ENDPOINTS.get(endpoint.split("/", 1)[0].lower())
        if reserved is not None:
            what, instead = reserved
            advice = instead if instead == _NOT_EXPOSED else f"use {instead} instead"
            raise InvalidRequest(
                f"MuAPI {operation}: {endpoint!r} is not a model endpoint but MuAPI's own {what} API; "
                f"{advice} (muapi_list_models lists the models)",
                provider="muapi",
                operation=operation,
            )
        return endpoint

    async def submit(
        self, endpoint: str, params: dict[str, Any], *, webhook_url: str | None = None
    ) -> Submission:
        endpoint = self.check_endpoint(endpoint)
        body = dict(params)
        response = await self.t.request(
            "POST",
            endpoint,
            operation="generate",
            retry=Retry.IF_NOT_SENT,
            json_body=body,
            params={"webhook": webhook_url} if webhook_url else None,
        )
        data = self.t.parse_json(response, "generate")
        if not isinstance(data, dict):
            raise self.t.malformed("generate", "expected an object with request_id")
        request_id = data.get("request_id") or data.get("id")
        if not isinstance(request_id, (str, int)) or request_id == "":
            error = self.t.malformed("generate", "no request_id in the answer")
            error.maybe_sent = True
            raise error
        request_id = self.t.checked_id(str(request_id), "request_id", "generate")
        return Submission.model_validate(
            {**data, "request_id": request_id, "cost": cost_from(response, data)}
        )

    async def get_result(self, request_id: str) -> Prediction:
        # Dotted: MuAPI hands this id back to be polled with, and documents no format for it.
        segment = path_segment(
            request_id, "request_id", title="MuAPI", provider="muapi", operation="get_result", dotted=True
        )
        # Some deployments answer 400 while a job is still running (NOTES §4.3): read the body first.
        response = await self.t.request(
            "GET",
            f"predictions/{segment}/result",
            operation="get_result",
            retry=Retry.ALWAYS,
            ok_statuses=(400,),
        )
        data = self.t.parse_json(response, "get_result") if response.status != 400 else response.json()
        if response.status == 400:
            status = normalize_status(data.get("status")) if isinstance(data, dict) else ""
            if status not in ("queued", "running", "completed", "failed", "cancelled"):
                raise self.t.status_error(response, "get_result")
        if not isinstance(data, dict):
            raise self.t.malformed("get_result", "expected an object")
        try:
            return Prediction.model_validate({**data, "cost": cost_from(response, data)})
        except ValidationError as exc:
            raise self.t.malformed("get_result", f"{exc.error_count()} invalid field(s)") from None

    async def upload_file(
        self,
        path: Path,
        allowed: Sequence[Path],
        *,
        on_progress: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> str:
        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(path, allowed, on_progress=on_progress)
            return upload.headers, upload.stream

        response = await self.t.request(
            "POST",
            "upload_file",
            operation="upload_file",
            retry=Retry.IF_NOT_SENT,
            body=body,
        )
        data = self.t.parse_json(response, "upload_file")
        url = None
        if isinstance(data, dict):
            url = data.get("url") or data.get("file_url") or data.get("output")
        if not isinstance(url, str) or not url:
            raise self.t.malformed("upload_file", "no url in the answer")
        return url

    async def balance(self) -> tuple[Balance, Cost]:
        response = await self.t.request("GET", "account/balance", operation="get_balance", retry=Retry.ALWAYS)
        data = self.t.parse_json(response, "get_balance")
        try:
            return Balance.model_validate(data), cost_from(response, data)
        except ValidationError:
            raise self.t.malformed("get_balance", "no usable balance in the answer") from None

    async def topup(self, amount: int) -> TopupCheckout:
        response = await self.t.request(
            "POST",
            "account/topup",
            operation="topup",
            retry=Retry.IF_NOT_SENT,
            json_body={"amount": amount, "currency": "usd"},
        )
        data = self.t.parse_json(response, "topup")
        try:
            return TopupCheckout.model_validate(data)
        except ValidationError:
            raise self.t.malformed("topup", "no checkout_url in the answer") from None

    async def list_keys(self) -> list[ApiKeyInfo]:
        data = await self.t.get_json("keys", operation="list_keys")
        items = data.get("keys", data.get("items", [])) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise self.t.malformed("list_keys", "expected a list")
        # Never keep a raw key that a listing might include.
        keys = [
            {k: v for k, v in i.items() if k not in ("api_key", "key")} for i in items if isinstance(i, dict)
        ]
        return read_each(ApiKeyInfo, keys, self.t, "list_keys", "key")

    async def create_key(self, name: str, is_test: bool) -> CreatedKey:
        response = await self.t.request(
            "POST",
            "keys",
            operation="create_key",
            retry=Retry.IF_NOT_SENT,
            json_body={"name": name, "is_test": is_test},
        )
        data = self.t.parse_json(response, "create_key")
        try:
            return CreatedKey.model_validate({"is_test": is_test, **data})
        except ValidationError:
            raise self.t.malformed("create_key", "no api_key in the answer") from None

    async def delete_key(self, key_id: int) -> str:
        response = await self.t.request(
            "DELETE",
            f"keys/{int(key_id)}",
            operation="delete_key",
            retry=Retry.ALWAYS,
        )
        data = self.t.parse_json(response, "delete_key") if response.content.strip() else {}
        return str(data.get("message", "deleted")) if isinstance(data, dict) else "deleted"

    async def list_models(self, category: str | None = None, family: str | None = None) -> list[ModelInfo]:
        data = await self.t.get_json(
            "models", operation="list_models", params={"category": category, "family": family}
        )
        items = (
            data.get("models", data.get("items", data.get("data", []))) if isinstance(data, dict) else data
        )
        if not isinstance(items, list):
            raise self.t.malformed("list_models", "expected a list of models")
        named = [item for item in items if isinstance(item, dict) and item.get("name")]
        return read_each(ModelInfo, named, self.t, "list_models", "model")

    async def estimate_cost(self, endpoint: str, params: dict[str, Any]) -> float | None:
        """The price MuAPI quotes for these inputs before running them, where the model offers a quote.

        Free and advisory. The answer's shape is not documented (NOTES #29), so the dollar figure is
        read from the names it has been seen under; a model without a quote (404) gives None.
        """
        path = f"models/{self.check_endpoint(endpoint, 'estimate_cost')}/estimate-cost"
        response = await self.t.request(
            "POST", path, operation="estimate_cost", retry=Retry.ALWAYS, json_body=params, ok_statuses=(404,)
        )
        if response.status == 404:
            return None
        data = self.t.parse_json(response, "estimate_cost")
        if isinstance(data, dict):
            for key in ("estimated_cost_usd", "cost_usd", "usd", "estimated_cost", "cost", "price"):
                value = number(data.get(key))
                if value is not None and value >= 0:
                    return value
        return None

    async def get_model(self, name: str) -> ModelInfo:
        data = await self.t.get_json(
            f"models/{self.check_endpoint(name, 'get_model')}", operation="get_model"
        )
        try:
            return ModelInfo.model_validate(data)
        except ValidationError:
            raise self.t.malformed("get_model", "no model in the answer") from None


__all__ = [
    "ApiKeyInfo",
    "Balance",
    "CreatedKey",
    "ModelInfo",
    "MuapiClient",
    "Prediction",
    "ProviderStatusError",
    "Submission",
    "TopupCheckout",
]
