"""MuAPI tools: generation on hundreds of image, video and audio models, account and keys."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mediamux.errors import InputError
from mediamux.jobs.models import JobResult
from mediamux.jobs.muapi import GenerateArgs, MuapiGeneration, local_inputs
from mediamux.providers.cost import Cost
from mediamux.providers.errors import NotFound, ProviderError
from mediamux.providers.muapi import ENDPOINT_RE, ApiKeyFields, MuapiClient
from mediamux.providers.status import normalize_status
from mediamux.tools.base import (
    NewJob,
    Toolset,
    WaitS,
    file_stamp,
    job_result,
    model_result,
    progress_of,
    provider_client,
    services,
    upload_path,
    write_key_file,
)
from mediamux.tools.pages import Column, Cursor, fit, moment, next_offset, offset_of, span
from mediamux.tools.schemas import opaque

toolset = Toolset(
    id="muapi",
    title="MuAPI",
    description="image, video and audio generation on hundreds of models",
    mark=("M8 0l2 6 6 2-6 2-2 6-2-6-6-2 6-2z", "#7c3aed"),  # a spark: generation
)

MAX_PARAMS_BYTES = 256 * 1024
MAX_PAGE = 200  # items a page may hold at most; the text block usually fits fewer
# Long enough that an agent's few tries at a model name read the catalog once; short enough that a
# model MuAPI adds meanwhile is suggested soon.
MODEL_CATALOG_TTL_S = 300.0

Endpoint = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=ENDPOINT_RE.pattern),
    opaque("Model endpoint, e.g. 'flux-dev-image' (muapi_list_models lists them)"),
]


def client_of(ctx: Context) -> MuapiClient:
    return provider_client(ctx, "muapi", MuapiClient)


async def _model_slugs(ctx: Context) -> set[str]:
    async def load() -> set[str]:
        models = await client_of(ctx).list_models()
        return {slug for m in models for slug in (m.endpoint, m.name) if slug}

    return await services(ctx).memoized("muapi_model_slugs", load, ttl_s=MODEL_CATALOG_TTL_S)


async def _suggest_models(ctx: Context, endpoint: str, exc: NotFound) -> None:
    """Add the catalog's closest slugs to a 404 for a model the catalog does not list.

    Read only here, after a 404: a call with a known model never pays for the catalog. The
    suggestion is a courtesy: if the catalog cannot be read, the 404 is reported as it is.
    """
    try:
        slugs = await _model_slugs(ctx)
    except ProviderError:
        return
    if endpoint in slugs:
        return
    closest = difflib.get_close_matches(endpoint, sorted(slugs), n=3, cutoff=0.6)
    if closest:
        exc.message = f"{exc.message}; closest models: {', '.join(closest)}"


@toolset.tool(title="Generate with a MuAPI model", read_only=False, open_world=True)
async def muapi_generate(
    endpoint: Endpoint,
    params: Annotated[
        dict[str, Any],
        Field(
            description='Model inputs per muapi_get_model, e.g. {"prompt": "a red fox"}; URL inputs '
            "(image_url, video_url, audio_url, images_list …) also take local file paths"
        ),
    ],
    ctx: Context,
    wait_s: WaitS = 45,
    webhook_url: Annotated[
        str | None,
        Field(pattern=r"^https://\S+$", max_length=2048),
        opaque("https URL MuAPI POSTs the result to"),
    ] = None,
    new_job: NewJob = False,
    save_outputs: Annotated[
        bool, Field(description="Save outputs in the output folder (URLs expire)")
    ] = True,
) -> Annotated[CallToolResult, JobResult[MuapiGeneration]]:
    """Runs a MuAPI image, video or audio model; returns output URLs, saved files and the charge. Paid per
    request, about $0.003 for a fast image to several dollars for a long video (muapi_get_model shows
    prices); images take seconds, videos minutes."""
    svc = services(ctx)
    client = client_of(ctx)
    endpoint = client.check_endpoint(endpoint)
    if len(json.dumps(params, default=str)) > MAX_PARAMS_BYTES:
        raise InputError(
            f"larger than {MAX_PARAMS_BYTES // 1024} KiB",
            arguments=("params",),
            advice="pass large inputs as files or URLs",
        )
    params = dict(params)
    fingerprints: dict[str, str] = {}
    for key, index, raw in local_inputs(params):
        path = upload_path(ctx, raw, argument=f"params.{key}" + (f".{index}" if index is not None else ""))
        fingerprints[str(path)] = file_stamp(path)
        if index is None:
            params[key] = str(path)
        else:
            params[key] = [*params[key][:index], str(path), *params[key][index + 1 :]]
    args = GenerateArgs(
        endpoint=endpoint, params=params, webhook_url=webhook_url or None, input_files=fingerprints or None
    )
    try:
        view = await svc.engine.run(
            "muapi",
            "generate",
            args,
            options={"save_outputs": save_outputs},
            new_job=new_job,
            wait_s=wait_s,
            progress=progress_of(ctx),
        )
    except NotFound as exc:
        await _suggest_models(ctx, endpoint, exc)
        raise
    return job_result(view, title=f"MuAPI {endpoint}")


class PredictionView(BaseModel):
    request_id: str
    status: str = Field(description="queued | running | completed | failed | cancelled, or the raw word")
    provider_status: str | None = None
    outputs: list[str] = Field(default_factory=list)
    error: str | None = None
    has_nsfw_contents: list[bool] | None = None
    cost: Cost = Field(default_factory=Cost)
    job_id: str | None = Field(None, description="The mediamux job that submitted it, if this server did")


@toolset.tool(title="Get a MuAPI result", read_only=True)
async def muapi_get_result(
    request_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"), opaque()],
    ctx: Context,
) -> Annotated[CallToolResult, PredictionView]:
    """Reads a MuAPI prediction by request_id: status, output URLs, error and cost. Free, instant."""
    client = client_of(ctx)
    p = await client.get_result(request_id)
    job = services(ctx).journal.find_by_provider_id("muapi", request_id)
    view = PredictionView(
        request_id=request_id,
        status=normalize_status(p.status),
        provider_status=p.status,
        outputs=p.output_urls,
        error=client.scrub(p.error_message) if p.error_message else None,
        has_nsfw_contents=p.has_nsfw_contents,
        cost=p.cost,
        job_id=job.job_id if job else None,
    )
    return model_result(view, f"MuAPI {request_id}: {view.status} · {len(view.outputs)} output(s)")


class UploadedFile(BaseModel):
    url: str = Field(description="Hosted URL to pass as image_url / video_url / audio_url")
    filename: str
    size_bytes: int


@toolset.tool(title="Upload a file to MuAPI", read_only=False, open_world=True)
async def muapi_upload_file(
    path: Annotated[str, Field(min_length=1, max_length=4096), opaque()],
    ctx: Context,
) -> Annotated[CallToolResult, UploadedFile]:
    """Uploads a local image, video or audio file to MuAPI; returns a hosted URL for model inputs
    (muapi_generate takes local paths too). Free with a positive balance; time grows with file size."""
    svc = services(ctx)
    client = client_of(ctx)
    resolved = upload_path(ctx, path)
    report = progress_of(ctx)

    async def on_bytes(sent: int, total: int) -> None:
        await report(sent, total, f"MuAPI: uploading {resolved.name} ({sent}/{total} bytes)")

    url = await client.upload_file(resolved, svc.files.allowed_dirs, on_progress=on_bytes)
    view = UploadedFile(url=url, filename=resolved.name, size_bytes=resolved.stat().st_size)
    return model_result(view, f"MuAPI: uploaded {resolved.name} → {url}")


class BalanceView(BaseModel):
    balance_usd: float
    currency: str
    email: str | None = None


@toolset.tool(title="MuAPI balance", read_only=True)
async def muapi_get_balance(ctx: Context) -> Annotated[CallToolResult, BalanceView]:
    """Reads the MuAPI balance in US dollars. Free, instant."""
    balance, _ = await client_of(ctx).balance()
    view = BalanceView(balance_usd=balance.balance, currency=balance.currency, email=balance.email)
    return model_result(view, f"MuAPI balance: ${view.balance_usd:.2f} {view.currency.upper()}")


class TopupView(BaseModel):
    checkout_url: str = Field(
        description="Stripe checkout page; nothing is charged until the user pays there"
    )
    amount_usd: float | None
    currency: str | None


@toolset.tool(title="Top up MuAPI credits", read_only=False, destructive=True, open_world=True)
async def muapi_topup(
    amount: Annotated[int, Field(ge=1, le=10_000, description="Whole US dollars to add")],
    ctx: Context,
) -> Annotated[CallToolResult, TopupView]:
    """Starts a MuAPI credit purchase and returns a Stripe checkout URL for the user. Spends real money
    only when the user pays there; this call charges nothing."""
    checkout = await client_of(ctx).topup(amount)
    view = TopupView(
        checkout_url=checkout.checkout_url, amount_usd=checkout.amount, currency=checkout.currency
    )
    return model_result(view, f"MuAPI top-up of ${amount}: open {view.checkout_url} to pay")


class KeyView(ApiKeyFields):
    """Only the documented fields reach the model, whatever else a listing carries."""


class KeyList(BaseModel):
    keys: list[KeyView]
    total: int | None = Field(None, description="Keys on the account")
    next_cursor: str | None = None


KEY_COLUMNS = (
    Column("id", 40),
    Column("name", 32),
    Column("active", 6),
    Column("test", 5),
    Column("last used (UTC)", 19),
)


@toolset.tool(title="List MuAPI keys", read_only=True)
async def muapi_list_keys(ctx: Context, cursor: Cursor = None) -> Annotated[CallToolResult, KeyList]:
    """Lists the account's MuAPI API keys (ids, names, activity; never the key values). Free."""
    start = offset_of("muapi_keys", cursor)
    keys = [KeyView.model_validate(k.model_dump()) for k in await client_of(ctx).list_keys()]
    window = keys[start : start + MAX_PAGE]
    shown = fit(
        head=lambda n: f"MuAPI: {len(keys)} key(s)" + span(start, n, len(keys)),
        columns=KEY_COLUMNS,
        rows=[(k.id, k.name, k.is_active, k.is_test, moment(k.last_used_at)) for k in window],
        next_cursor=next_offset("muapi_keys", start, len(keys)),
    )
    view = KeyList(keys=window[: shown.count], total=len(keys), next_cursor=shown.next_cursor)
    return shown.result(view)


class CreatedKeyView(BaseModel):
    id: int | str
    name: str | None
    is_test: bool | None
    key_file: str = Field(description="File (readable only by you) holding the new key; it is shown once")
    key_hint: str = Field(description="Last characters of the key, to recognise it")


@toolset.tool(title="Create a MuAPI key", read_only=False, open_world=True)
async def muapi_create_key(
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w .-]+$")],
    ctx: Context,
    is_test: Annotated[
        bool, Field(description="A sandbox key: jobs complete at once with mock outputs and cost nothing")
    ] = False,
) -> Annotated[CallToolResult, CreatedKeyView]:
    """Creates a MuAPI API key and writes it to a private file (its path is in the result), never into the
    conversation. Free."""
    svc = services(ctx)
    created = await client_of(ctx).create_key(name, is_test)
    path = write_key_file(svc.settings.home, "muapi", created.api_key)
    view = CreatedKeyView(
        id=created.id,
        name=created.name,
        is_test=created.is_test,
        key_file=str(path),
        key_hint="…" + created.api_key[-4:] if len(created.api_key) > 8 else "…",
    )
    return model_result(view, f"MuAPI: created key {view.id} ({view.name}); value saved to {path}")


class DeletedKey(BaseModel):
    id: int
    message: str


@toolset.tool(title="Delete a MuAPI key", read_only=False, destructive=True, idempotent=True)
async def muapi_delete_key(
    key_id: Annotated[int, Field(ge=1, description="Key id from muapi_list_keys")],
    ctx: Context,
) -> Annotated[CallToolResult, DeletedKey]:
    """Deletes a MuAPI API key; whatever uses it stops working. Free; cannot be undone."""
    message = await client_of(ctx).delete_key(key_id)
    return model_result(DeletedKey(id=key_id, message=message), f"MuAPI: key {key_id} deleted")


class ModelSummary(BaseModel):
    name: str
    endpoint: str | None = None
    category: str | None = None
    price: Any = Field(None, description="Price as MuAPI lists it")


class ModelList(BaseModel):
    models: list[ModelSummary]
    total: int = Field(description="Models matching before the limit")
    next_cursor: str | None = None


MODEL_COLUMNS = (Column("endpoint", 80), Column("category", 20), Column("price", 20))


def _price(cost: Any) -> Any:
    """MuAPI's ``{"usd": 0.025, "unit": "image"}`` as ``$0.025/image``; anything else as it came."""
    if isinstance(cost, dict) and isinstance(cost.get("usd"), int | float):
        unit = str(cost.get("unit") or "").removeprefix("per_")
        return f"${cost['usd']:g}" + (f"/{unit}" if unit else "")
    return cost


@toolset.tool(title="List MuAPI models", read_only=True)
async def muapi_list_models(
    ctx: Context,
    category: Annotated[
        str | None,
        Field(max_length=64, description="e.g. 'Text to Image', 'Image to Video', 'Text to Audio'"),
    ] = None,
    query: Annotated[str | None, Field(max_length=100, description="Substring to match in the name")] = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, ModelList]:
    """Lists MuAPI models with their endpoint, category and price, optionally filtered. Free."""
    start = offset_of("muapi_models", cursor)
    models = await client_of(ctx).list_models(category=category)
    if query:
        needle = query.lower()
        models = [m for m in models if needle in m.name.lower() or needle in (m.description or "").lower()]
    window = [
        ModelSummary(name=m.name, endpoint=m.endpoint or m.name, category=m.category, price=m.cost)
        for m in models[start : start + limit]
    ]
    total = len(models)
    shown = fit(
        head=lambda n: f"MuAPI: {total} model(s)" + span(start, n, total),
        columns=MODEL_COLUMNS,
        rows=[(m.endpoint, m.category, _price(m.price)) for m in window],
        next_cursor=next_offset("muapi_models", start, total),
    )
    return shown.result(ModelList(models=window[: shown.count], total=total, next_cursor=shown.next_cursor))


class ModelDetail(BaseModel):
    name: str
    endpoint: str
    category: str | None = None
    description: str | None = None
    price: Any = None
    input_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the params muapi_generate takes"
    )


@toolset.tool(title="Describe a MuAPI model", read_only=True)
async def muapi_get_model(name: Endpoint, ctx: Context) -> Annotated[CallToolResult, ModelDetail]:
    """Describes a MuAPI model: its endpoint, price and the JSON Schema of the params muapi_generate takes
    for it. Free."""
    client = client_of(ctx)
    endpoint = client.check_endpoint(name)
    try:
        m = await client.get_model(endpoint)
    except NotFound as exc:
        await _suggest_models(ctx, endpoint, exc)
        raise
    view = ModelDetail(
        name=m.name,
        endpoint=m.endpoint or m.name,
        category=m.category,
        description=m.description,
        price=m.cost,
        input_schema=m.input_schema,
    )
    return model_result(view, f"MuAPI {view.name}: {view.category or 'model'} · price {view.price}")
