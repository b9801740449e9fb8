"""A stateful emulator of the MuAPI HTTP API (https://api.muapi.ai/api/v1), as a Starlette ASGI app.

Written from the provider documents (`muapi-api.txt` and NOTES §4), not from any client code, so a client
tested against it is tested against the documented contract rather than against its own assumptions.

Prompt triggers
---------------
Any string input of a submission (normally `prompt`) may contain one of these markers; the first one found
in this order decides the job's fate, which makes demos and tests deterministic:

- ``[fail]``   ends ``failed`` with an ``error`` message; the charge is refunded (wallet credited back,
               ``cost.refunded: true`` and ``X-MuAPI-Cost-Refunded: true`` on later polls).
- ``[cancel]`` ends ``cancelled`` (no refund: the documents only promise refunds for failed tasks).
- ``[stuck]``  stays ``processing`` forever.
- ``[weird]``  reports the undocumented status ``warming_up`` forever (after the queued phase).
- ``[nsfw]``   completes with ``has_nsfw_contents: [true, ...]``.

Sandbox (``is_test``) keys ignore triggers: the documents promise "successful mock responses immediately".

Lifecycle
---------
Time comes from the injected ``now()``. A job is ``queued`` for the first 15% of its duration, then
``processing``, then terminal. Durations: ``job_seconds`` if given, else 4 s (images), 6 s (audio),
10 s (video). Jobs are advanced lazily (on every request and on every webhook sweep), so a refund or a
webhook happens at the first observation after the deadline, never ahead of ``now()``; the webhook loop
(the app's lifespan) looks again as the next job with a webhook is due, so its POST goes out as it finishes.

Choices where the documents are silent (GUESSES)
-----------------------------------------------
- Credits: 1 credit = $0.001, rounded up (the doc's example, $0.0042 = 1 credit, implies no fixed ratio).
- Bonus pool: ``bonus_credits`` (default 0) pays first for Suno and Seedance models; the wallet pays the
  rest. ``amount_usd``/``amount_credits`` are the wallet part, ``bonus_credits_used`` the pool part.
- A refunded job keeps its original ``amount_usd`` with ``refunded: true`` (not a zeroed amount).
- A result poll's cost headers describe the job's cost; every other call reports 0.000000.
- ``Authorization: Bearer <key>`` is accepted as well as ``x-api-key`` (NOTES GUESS). Anonymous creation
  of sandbox keys (hinted by a publisher example) is NOT allowed: every ``/api/v1`` call needs a key.
- All keys share one account and wallet; any valid key may poll any job.
- ``executionTime`` and ``timings.inference`` are integer milliseconds, ``null`` until terminal.
- Webhook payloads carry no ``cost``; ``http://`` webhook URLs are accepted (the docs ask for HTTPS) so
  loopback receivers work. Each terminal job is delivered once, failures are logged and dropped.
- Sandbox keys produce zero cost, skip the balance check (also for uploads), answer ``completed`` with
  ``outputs`` already in the submit response, and return one example URL whatever ``num_images`` says.
- ``/account/topup`` returns a Stripe-like checkout URL and does NOT credit the wallet: payment happens in
  a browser. Tests change ``balance_usd`` directly.
- Inputs not in a model's schema are tolerated (the CLI and the per-model docs disagree on flux-dev's
  inputs); declared inputs are type-, enum- and range-checked in pydantic's 422 style.
- Upload limits (NOTES): 50 MB for video, 10 MB otherwise → 413. Uploads need a balance > 0 (NOTES) →
  402; the presigned flow has no such check.
- Faulted responses (see ``faults.py``) carry no cost headers: they model failures in front of the API.
- Output files are small real media: a solid-colour PNG (colour from the prompt hash) of the requested size,
  a WAV sine tone of the requested ``duration`` capped at 3 s (Suno outputs are WAV too), an MP4 box
  skeleton. Image size, first match wins: ``width``/``height`` given (a missing one takes its default, else
  the other); ``size`` as "W*H" or "WxH" (the per-model docs' form); ``image_size`` as a preset name
  (square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9, as on other gateways)
  or ``{"width", "height"}``; ``aspect_ratio`` with its long side 1024; the model's default
  ``width``/``height``; else 1024×1024. Sides above 2048 are scaled down together, keeping the shape.
- With a ``state_dir`` the account (wallet, bonus pool, keys, presigned grants), every job and every
  uploaded file outlive a restart (see ``store.py`` for the files and the rule for time); output URLs name
  the origin the job is polled through, so they follow the sandbox to its new port.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import math
import mimetypes
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mediamux.sandbox.common import Refusal, WebhookSender, base_name, public_origin
from mediamux.sandbox.fastapi_errors import detail, http_error, json_body, unprocessable
from mediamux.sandbox.faults import (
    ASGIApp,
    FaultMiddleware,
    FaultPlan,
    Message,
    Receive,
    RequestLog,
    Scope,
    Send,
)
from mediamux.sandbox.media import EXTENSIONS, MediaKind, media_for
from mediamux.sandbox.store import FILE_MODE, StateStore, Timeline, make_private_dirs

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CREDIT_USD = 0.001
QUEUED_FRACTION = 0.15
DEFAULT_JOB_SECONDS: dict[MediaKind, float] = {"image": 4.0, "audio": 6.0, "video": 10.0}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
TRIGGERS = ("fail", "cancel", "stuck", "weird", "nsfw")
# The webhook loop wakes when the next job with a webhook is due to finish, and at least this often
# (jobs advance on the injected clock, which tests move by hand); deliveries go out this many at once.
WEBHOOK_SWEEP_SECONDS = 0.5
WEBHOOK_MIN_NAP_SECONDS = 0.005
WEBHOOK_CONCURRENCY = 32
PRESIGN_TTL_SECONDS = 3600.0
ACCOUNT_ID = 1001
ACCOUNT_EMAIL = "sandbox@mediamux.local"
MB = 1024 * 1024

CostUnit = Literal["per_image", "per_video", "per_second", "per_request"]

# ---------------------------------------------------------------------------------------------------------
# Model catalog (NOTES §4.8). Prices are realistic but not authoritative; the schemas follow the CLI's inputs.
# ---------------------------------------------------------------------------------------------------------

_PROMPT: dict[str, Any] = {"type": "string", "description": "What to generate."}
_NUM_IMAGES: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}
_IMAGE_ASPECTS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"]
_VIDEO_ASPECTS = ["16:9", "9:16", "1:1"]
_URL: dict[str, Any] = {"type": "string", "format": "uri"}
_URL_LIST: dict[str, Any] = {"type": "array", "items": _URL, "minItems": 1, "maxItems": 9}


def _side(default: int = 1024) -> dict[str, Any]:
    return {"type": "integer", "minimum": 256, "maximum": 2048, "default": default}


def _aspect(default: str, choices: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": choices, "default": default}


def _durations(choices: list[int], default: int) -> dict[str, Any]:
    return {"type": "integer", "enum": choices, "default": default}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    category: str
    family: str
    description: str
    price_usd: float
    unit: CostUnit
    output: MediaKind
    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    bonus_pool: bool = False

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.output]

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": self.properties,
            "required": list(self.required),
            "additionalProperties": True,
        }

    def with_defaults(self, inputs: dict[str, Any]) -> dict[str, Any]:
        filled = {k: p["default"] for k, p in self.properties.items() if "default" in p}
        filled.update({k: v for k, v in inputs.items() if v is not None})
        return filled

    def price_for(self, inputs: dict[str, Any]) -> float:
        filled = self.with_defaults(inputs)
        if self.unit == "per_image":
            return round(self.price_usd * _as_count(filled.get("num_images"), 1), 6)
        if self.unit == "per_second":
            return round(self.price_usd * _as_float(filled.get("duration"), 5.0), 6)
        return self.price_usd

    def output_count(self, inputs: dict[str, Any]) -> int:
        if self.output != "image":
            return 1
        return max(1, min(4, _as_count(self.with_defaults(inputs).get("num_images"), 1)))


def _as_count(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _as_float(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _t2i_size(name: str, family: str, price: float, description: str) -> ModelSpec:
    props = {"prompt": _PROMPT, "num_images": _NUM_IMAGES, "width": _side(), "height": _side()}
    return ModelSpec(
        name, "Text to Image", family, description, price, "per_image", "image", props, ("prompt",)
    )


def _t2i_aspect(
    name: str, family: str, price: float, description: str, unit: CostUnit = "per_image"
) -> ModelSpec:
    props = {"prompt": _PROMPT, "num_images": _NUM_IMAGES, "aspect_ratio": _aspect("1:1", _IMAGE_ASPECTS)}
    return ModelSpec(name, "Text to Image", family, description, price, unit, "image", props, ("prompt",))


def _edit(name: str, family: str, price: float, description: str, *, list_input: bool) -> ModelSpec:
    image_key = "images_list" if list_input else "image_url"
    props = {
        "prompt": _PROMPT,
        image_key: _URL_LIST if list_input else _URL,
        "num_images": _NUM_IMAGES,
        "aspect_ratio": _aspect("1:1", _IMAGE_ASPECTS),
    }
    return ModelSpec(
        name, "Image to Image", family, description, price, "per_image", "image", props, ("prompt", image_key)
    )


def _video(
    name: str,
    family: str,
    price: float,
    description: str,
    *,
    unit: CostUnit = "per_video",
    durations: dict[str, Any] | None = None,
    image_input: Literal["image_url", "images_list"] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    bonus_pool: bool = False,
) -> ModelSpec:
    props: dict[str, dict[str, Any]] = {
        "prompt": _PROMPT,
        "duration": durations or _durations([5, 10], 5),
        "aspect_ratio": _aspect("16:9", _VIDEO_ASPECTS),
    }
    required: tuple[str, ...] = ("prompt",)
    category = "Text to Video"
    if image_input is not None:
        props[image_input] = _URL_LIST if image_input == "images_list" else _URL
        required = ("prompt", image_input)
        category = "Image to Video"
    props.update(extra or {})
    return ModelSpec(name, category, family, description, price, unit, "video", props, required, bonus_pool)


def _tool(
    name: str,
    category: str,
    description: str,
    price: float,
    inputs: dict[str, dict[str, Any]],
    *,
    output: MediaKind = "image",
    unit: CostUnit = "per_request",
    family: str = "ai-tools",
) -> ModelSpec:
    return ModelSpec(name, category, family, description, price, unit, output, inputs, tuple(inputs))


_CATALOG_LIST: list[ModelSpec] = [
    # Text → image, width/height family.
    _t2i_size("flux-schnell-image", "flux", 0.003, "FLUX.1 [schnell]: fast, cheap drafts."),
    _t2i_size("flux-dev-image", "flux", 0.025, "FLUX.1 [dev]: high quality text to image."),
    _t2i_size("flux-krea-dev", "flux", 0.025, "FLUX.1 Krea [dev]: photographic aesthetics."),
    _t2i_size("flux-2-pro", "flux", 0.03, "FLUX.2 [pro]."),
    _t2i_size("hidream_i1_fast_image", "hidream", 0.01, "HiDream I1 fast."),
    _t2i_size("sdxl-image", "stable-diffusion", 0.004, "Stable Diffusion XL."),
    _t2i_size("wan2.1-text-to-image", "wan", 0.02, "Wan 2.1 text to image."),
    # Text → image, aspect-ratio family.
    _t2i_aspect("nano-banana", "nano-banana", 0.039, "Google Gemini 2.5 Flash Image."),
    _t2i_aspect("nano-banana-pro", "nano-banana", 0.15, "Google Gemini 3 Pro Image."),
    _t2i_aspect("gpt4o-text-to-image", "gpt-image", 0.04, "OpenAI GPT-4o image generation."),
    _t2i_aspect("google-imagen4", "imagen", 0.04, "Google Imagen 4."),
    _t2i_aspect("midjourney-v7-text-to-image", "midjourney", 0.08, "Midjourney v7.", unit="per_request"),
    _t2i_aspect("bytedance-seedream-v4.5", "seedream", 0.03, "ByteDance Seedream 4.5."),
    _t2i_aspect("qwen-image", "qwen", 0.02, "Qwen-Image."),
    _t2i_aspect("flux-kontext-pro-t2i", "flux-kontext", 0.04, "FLUX.1 Kontext [pro] text to image."),
    # Image → image / edit.
    _edit("flux-kontext-pro-i2i", "flux-kontext", 0.04, "FLUX.1 Kontext [pro] image edit.", list_input=False),
    _edit("nano-banana-edit", "nano-banana", 0.039, "Gemini 2.5 Flash Image edit.", list_input=True),
    _edit("gpt-image-1.5-edit", "gpt-image", 0.05, "GPT Image 1.5 edit.", list_input=True),
    _edit("qwen-image-edit", "qwen", 0.03, "Qwen-Image edit.", list_input=False),
    _edit("bytedance-seedream-edit-v4", "seedream", 0.03, "Seedream 4 edit.", list_input=True),
    # Text → video.
    _video("veo3-text-to-video", "veo", 3.20, "Google Veo 3 with audio.", durations=_durations([8], 8)),
    _video("veo3-fast-text-to-video", "veo", 1.20, "Google Veo 3 Fast.", durations=_durations([8], 8)),
    _video("kling-v2.1-master-t2v", "kling", 1.40, "Kling 2.1 Master text to video."),
    _video(
        "seedance-pro-t2v",
        "seedance",
        0.12,
        "ByteDance Seedance 1.0 Pro.",
        unit="per_second",
        durations={"type": "integer", "minimum": 2, "maximum": 12, "default": 5},
        bonus_pool=True,
    ),
    _video("wan2.5-text-to-video", "wan", 0.10, "Wan 2.5 text to video.", unit="per_second"),
    _video(
        "openai-sora-2-text-to-video",
        "sora",
        0.10,
        "OpenAI Sora 2.",
        unit="per_second",
        durations=_durations([4, 8, 12], 4),
    ),
    # Image → video.
    _video("kling-v2.1-standard-i2v", "kling", 0.25, "Kling 2.1 Standard.", image_input="image_url"),
    _video("kling-v2.1-pro-i2v", "kling", 0.45, "Kling 2.1 Pro.", image_input="image_url"),
    _video(
        "veo3-image-to-video",
        "veo",
        3.20,
        "Google Veo 3 image to video.",
        image_input="image_url",
        durations=_durations([8], 8),
    ),
    _video(
        "seedance-2-image-to-video",
        "seedance",
        0.60,
        "ByteDance Seedance 2.0 image to video.",
        image_input="images_list",
        extra={
            "quality": {"type": "string", "enum": ["basic", "pro"], "default": "basic"},
            "remove_watermark": {"type": "boolean", "default": False},
        },
        bonus_pool=True,
    ),
    # Audio.
    ModelSpec(
        "suno-create-music",
        "Text to Audio",
        "suno",
        "Suno: a full song from a prompt.",
        0.10,
        "per_request",
        "audio",
        {
            "prompt": _PROMPT,
            "title": {"type": "string"},
            "tags": {"type": "string", "description": "Comma-separated styles."},
            "make_instrumental": {"type": "boolean", "default": False},
        },
        ("prompt",),
        bonus_pool=True,
    ),
    ModelSpec(
        "suno-extend-music",
        "Text to Audio",
        "suno",
        "Suno: continue an existing song.",
        0.10,
        "per_request",
        "audio",
        {"song_id": {"type": "string"}, "prompt": _PROMPT, "continue_at": {"type": "number", "minimum": 0}},
        ("song_id",),
        bonus_pool=True,
    ),
    ModelSpec(
        "mmaudio-v2/text-to-audio",
        "Text to Audio",
        "mmaudio",
        "MMAudio v2: sound effects from text.",
        0.001,
        "per_second",
        "audio",
        {"prompt": _PROMPT, "duration": {"type": "number", "minimum": 1, "maximum": 30, "default": 10}},
        ("prompt",),
    ),
    _tool(
        "mmaudio-v2/video-to-video",
        "Video to Video",
        "MMAudio v2: add a soundtrack to a video.",
        0.02,
        {"video_url": _URL, "prompt": _PROMPT},
        output="video",
        family="mmaudio",
    ),
    # Enhance.
    _tool("ai-image-upscale", "Image to Image", "Upscale an image.", 0.01, {"image_url": _URL}),
    _tool("ai-background-remover", "Image to Image", "Remove the background.", 0.005, {"image_url": _URL}),
    _tool(
        "ai-object-eraser",
        "Image to Image",
        "Erase the masked object.",
        0.01,
        {"image_url": _URL, "mask_image_url": _URL},
    ),
    _tool(
        "ai-image-face-swap",
        "Image to Image",
        "Swap a face from source into target.",
        0.02,
        {"source_url": _URL, "target_url": _URL},
    ),
    # Edit.
    _tool(
        "sync-lipsync",
        "Video to Video",
        "Sync lips in a video to an audio track.",
        0.50,
        {"video_url": _URL, "audio_url": _URL},
        output="video",
        family="sync",
    ),
    _tool(
        "video-effects",
        "Video to Video",
        "Apply a named effect to a video.",
        0.20,
        {"video_url": _URL, "effect": {"type": "string"}},
        output="video",
        family="effects",
    ),
]

CATALOG: dict[str, ModelSpec] = {m.name: m for m in _CATALOG_LIST}


# ---------------------------------------------------------------------------------------------------------
# Output image size (the rules are listed in the module docstring)
# ---------------------------------------------------------------------------------------------------------

IMAGE_DEFAULT_SIDE = 1024
# Real models go further, but every PNG is built in memory per request; this keeps the largest near 50 ms.
IMAGE_MAX_SIDE = 2048
IMAGE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
_SIZE_TEXT = re.compile(r"\s*(\d+)\s*[*xX×]\s*(\d+)\s*")
_RATIO_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*")


def _positive(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        return None
    return float(value)


def _pair(width: Any, height: Any) -> tuple[float, float] | None:
    w, h = _positive(width), _positive(height)
    if w is None and h is None:
        return None
    return (w or h or 0.0, h or w or 0.0)


def _from_text(value: Any) -> tuple[float, float] | None:
    match = _SIZE_TEXT.fullmatch(value) if isinstance(value, str) else None
    return _pair(match.group(1), match.group(2)) if match else None


def _from_preset(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):
        return _pair(value.get("width"), value.get("height"))
    if isinstance(value, str):
        preset = IMAGE_PRESETS.get(value.strip().lower())
        return (float(preset[0]), float(preset[1])) if preset else _from_text(value)
    return None


def _from_ratio(value: Any) -> tuple[float, float] | None:
    match = _RATIO_TEXT.fullmatch(value) if isinstance(value, str) else None
    ratio = _pair(match.group(1), match.group(2)) if match else None
    if ratio is None:  # "auto", "match_input_image", ...: the next rule decides
        return None
    w, h = ratio
    long_side = float(IMAGE_DEFAULT_SIDE)
    return (long_side, long_side * h / w) if w >= h else (long_side * w / h, long_side)


def image_size(model: ModelSpec, inputs: dict[str, Any]) -> tuple[int, int]:
    """The pixel size of `model`'s output images for these submitted inputs."""
    given = {k: v for k, v in inputs.items() if v is not None}
    filled = model.with_defaults(inputs)
    size = (
        (_pair(filled.get("width"), filled.get("height")) if "width" in given or "height" in given else None)
        or _from_text(given.get("size"))
        or _from_preset(given.get("image_size"))
        or _from_ratio(filled.get("aspect_ratio"))
        or _pair(filled.get("width"), filled.get("height"))
        or (float(IMAGE_DEFAULT_SIDE), float(IMAGE_DEFAULT_SIDE))
    )
    scale = min(1.0, IMAGE_MAX_SIDE / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


# ---------------------------------------------------------------------------------------------------------
# Validation in FastAPI/pydantic v2 style, so clients can be tested against realistic 422 bodies.
# ---------------------------------------------------------------------------------------------------------

ValidationError = dict[str, Any]


def _err(kind: str, loc: list[str | int], msg: str, value: Any) -> ValidationError:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _literal_msg(choices: list[Any]) -> str:
    shown = [repr(c) for c in choices]
    if len(shown) == 1:
        return f"Input should be {shown[0]}"
    return f"Input should be {', '.join(shown[:-1])} or {shown[-1]}"


def _check_value(prop: dict[str, Any], value: Any, loc: list[str | int]) -> list[ValidationError]:
    kind = prop.get("type")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string" and not isinstance(value, str):
        return [_err("string_type", loc, "Input should be a valid string", value)]
    if kind == "integer" and not (is_number and float(value).is_integer()):
        return [_err("int_type", loc, "Input should be a valid integer", value)]
    if kind == "number" and not is_number:
        return [_err("float_type", loc, "Input should be a valid number", value)]
    if kind == "boolean" and not isinstance(value, bool):
        return [_err("bool_type", loc, "Input should be a valid boolean", value)]
    if kind == "array":
        if not isinstance(value, list):
            return [_err("list_type", loc, "Input should be a valid list", value)]
        if "minItems" in prop and len(value) < prop["minItems"]:
            n = prop["minItems"]
            msg = f"List should have at least {n} item{'s' if n != 1 else ''} after validation, not {len(value)}"
            return [_err("too_short", loc, msg, value)]
        if "maxItems" in prop and len(value) > prop["maxItems"]:
            n = prop["maxItems"]
            msg = (
                f"List should have at most {n} item{'s' if n != 1 else ''} after validation, not {len(value)}"
            )
            return [_err("too_long", loc, msg, value)]
        errors: list[ValidationError] = []
        for i, item in enumerate(value):
            errors.extend(_check_value(prop.get("items", {}), item, [*loc, i]))
        return errors
    if "enum" in prop and value not in prop["enum"]:
        return [_err("literal_error", loc, _literal_msg(prop["enum"]), value)]
    if is_number and "minimum" in prop and value < prop["minimum"]:
        msg = f"Input should be greater than or equal to {prop['minimum']}"
        return [_err("greater_than_equal", loc, msg, value)]
    if is_number and "maximum" in prop and value > prop["maximum"]:
        return [
            _err("less_than_equal", loc, f"Input should be less than or equal to {prop['maximum']}", value)
        ]
    return []


def validate_inputs(model: ModelSpec, body: dict[str, Any]) -> list[ValidationError]:
    errors = [
        _err("missing", ["body", name], "Field required", body)
        for name in model.required
        if body.get(name) is None
    ]
    for name, value in body.items():
        prop = model.properties.get(name)
        if prop is not None and value is not None:
            errors.extend(_check_value(prop, value, ["body", name]))
    return errors


async def _json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    if not required and not (await request.body()).strip():
        return {}
    data = await json_body(request)
    if not isinstance(data, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise Refusal(unprocessable([_err("model_attributes_type", ["body"], msg, data)]))
    return data


# ---------------------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _credits(usd: float) -> int:
    # Round before ceil so 0.003 / 0.001 = 2.9999999999999996 still means 3 credits.
    return math.ceil(round(usd / CREDIT_USD, 6))


@dataclass
class Cost:
    amount_usd: float = 0.0
    amount_credits: int = 0
    bonus_credits_used: int = 0
    refunded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "amount_usd": self.amount_usd,
            "amount_credits": self.amount_credits,
            "bonus_credits_used": self.bonus_credits_used,
            "refunded": self.refunded,
        }


@dataclass
class ApiKey:
    id: int
    name: str
    secret: str
    is_test: bool
    created_at: str
    last_used_at: str | None = None
    is_active: bool = True

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_active": self.is_active,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


@dataclass
class Job:
    id: str
    model: ModelSpec
    inputs: dict[str, Any]
    origin: str
    created_mono: float
    created_at: str
    duration_s: float
    trigger: str | None
    cost: Cost
    is_test: bool
    webhook_url: str | None
    final_status: str | None = None
    webhook_sent: bool = False

    def status_at(self, t: float) -> str:
        if self.is_test:
            return "completed"
        elapsed = t - self.created_mono
        if elapsed < QUEUED_FRACTION * self.duration_s:
            return "queued"
        if self.trigger == "weird":
            return "warming_up"
        if self.trigger == "stuck" or elapsed < self.duration_s:
            return "processing"
        return {"fail": "failed", "cancel": "cancelled"}.get(self.trigger or "", "completed")

    def result_url(self, origin: str) -> str:
        return f"{origin}{API_PREFIX}/predictions/{self.id}/result"

    def outputs(self, status: str, origin: str) -> list[str]:
        # URLs name the origin the job is looked at through, not the one it was submitted to: after a
        # restart the sandbox listens on another port, and the old one would lead nowhere.
        if status != "completed":
            return []
        if self.is_test:
            return [f"{origin}/cdn/examples/{self.model.name}.{self.model.extension}"]
        ext = self.model.extension
        return [
            f"{origin}/cdn/outputs/{self.id}/{i}.{ext}" for i in range(self.model.output_count(self.inputs))
        ]

    def error(self, status: str) -> str | None:
        if status == "failed":
            return "Generation failed: the model could not process this input (sandbox trigger [fail])"
        return None

    def payload(self, status: str, origin: str) -> dict[str, Any]:
        outputs = self.outputs(status, origin)
        terminal = status in TERMINAL_STATUSES
        millis = int(self.duration_s * 1000) if terminal else None
        return {
            "id": self.id,
            "status": status,
            "outputs": outputs,
            "urls": {"get": self.result_url(origin)},
            "has_nsfw_contents": [self.trigger == "nsfw"] * len(outputs),
            "created_at": self.created_at,
            "error": self.error(status),
            "executionTime": millis,
            "timings": {"inference": millis},
        }

    def record(self, timeline: Timeline) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model.name,
            "inputs": self.inputs,
            "origin": self.origin,
            "created_wall": timeline.to_wall(self.created_mono),
            "created_at": self.created_at,
            "duration_s": self.duration_s,
            "trigger": self.trigger,
            "cost": self.cost.as_dict(),
            "is_test": self.is_test,
            "webhook_url": self.webhook_url,
            "final_status": self.final_status,
            "webhook_sent": self.webhook_sent,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any], timeline: Timeline) -> Job | None:
        model = CATALOG.get(data.get("model", ""))
        if model is None:  # a model this version no longer emulates: the job cannot be answered for
            return None
        return cls(
            id=data["id"],
            model=model,
            inputs=data["inputs"],
            origin=data["origin"],
            created_mono=timeline.from_wall(data["created_wall"]),
            created_at=data["created_at"],
            duration_s=data["duration_s"],
            trigger=data["trigger"],
            cost=Cost(**data["cost"]),
            is_test=data["is_test"],
            webhook_url=data["webhook_url"],
            final_status=data["final_status"],
            webhook_sent=data["webhook_sent"],
        )


@dataclass
class _RequestContext:
    """Shared between the API middleware and the route handlers through the ASGI scope."""

    key: ApiKey | None = None
    cost: Cost | None = None


_CTX = "mediamux.muapi"


def _ctx(request: Request) -> _RequestContext:
    ctx = request.scope.get(_CTX)
    # Routes are only reachable through _ApiGate, which always installs the context.
    if not isinstance(ctx, _RequestContext):  # pragma: no cover
        raise RuntimeError("request did not pass through the MuAPI middleware")
    return ctx


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, default: str = "upload.bin") -> str:
    base = base_name(name or "")
    cleaned = _SAFE_NAME.sub("_", base).strip("._")
    return cleaned[:120] or default


class MuapiEmulator(WebhookSender):
    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        job_seconds: float | None = None,
        initial_balance_usd: float = 25.0,
        master_key: str = "sandbox-muapi-key",
        webhook_client: httpx2.AsyncClient | None = None,
        state_dir: Path | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.now = now
        self.job_seconds = job_seconds
        # What a new account starts with; an account read back from `state_dir` keeps its own.
        self._balance_usd: float = initial_balance_usd
        self._bonus_credits: int = 0
        self.base_url: str = ""
        self.submissions = 0
        self.polls: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.webhooks_sent: list[dict[str, Any]] = []
        self.upload_limits: dict[str, int] = {"video": 50 * MB, "other": 10 * MB}
        self.faults = FaultPlan()
        self.webhook_client = webhook_client
        self._jobs: dict[str, Job] = {}
        self._keys: dict[int, ApiKey] = {}
        self._next_key_id = 1
        self._presigned: dict[str, tuple[str, float]] = {}
        self._next_object = 1
        self._signing_secret = secrets.token_bytes(32)
        self._timeline = Timeline(now, wall_clock)
        self._store = StateStore(state_dir, "mediamux-muapi-")
        self._root = self._store.files
        self._load(master_key)
        self.app: Starlette = self._build_app()

    # -- public helpers ----------------------------------------------------------------------------------

    @property
    def balance_usd(self) -> float:
        return self._balance_usd

    @balance_usd.setter
    def balance_usd(self, value: float) -> None:
        self._balance_usd = value
        self._save_account()

    @property
    def bonus_credits(self) -> int:
        return self._bonus_credits

    @bonus_credits.setter
    def bonus_credits(self, value: int) -> None:
        self._bonus_credits = value
        self._save_account()

    @property
    def jobs(self) -> dict[str, Job]:
        return self._jobs

    def job_status(self, request_id: str) -> str:
        return self._jobs[request_id].status_at(self.now())

    def close(self) -> None:
        """Remove uploaded files now rather than whenever the emulator is collected (a state folder stays)."""
        self._store.close()

    async def deliver_due_webhooks(self) -> int:
        self._advance_all()
        due = [j for j in self._jobs.values() if j.webhook_url and j.final_status and not j.webhook_sent]
        if not due:
            return 0
        # Mark first: the background sweep and a direct call may overlap, and each job is delivered once.
        for job in due:
            job.webhook_sent = True
            self._save_job(job)
        if self.webhook_client is not None:
            await self._post_webhooks(self.webhook_client, due)
        else:
            async with httpx2.AsyncClient(timeout=5.0) as client:
                await self._post_webhooks(client, due)
        return len(due)

    # -- state folder ------------------------------------------------------------------------------------

    def _load(self, master_key: str) -> None:
        account = self._store.load("account.json")
        if isinstance(account, dict):
            try:
                self._load_account(account)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("MuAPI sandbox account record is damaged; starting a new account: %r", exc)
        jobs: list[Job] = []
        for record in self._store.load_all("jobs"):
            try:
                job = Job.from_record(record, self._timeline)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("MuAPI sandbox job record is damaged and was skipped: %r", exc)
                continue
            if job is not None:
                jobs.append(job)
        for job in sorted(jobs, key=lambda j: j.created_mono):
            self._jobs[job.id] = job
        # The sandbox's own key comes back even if it was deleted: a state folder must never lock out the
        # server that owns it (a real account would be recovered through the dashboard instead).
        if not any(k.secret == master_key for k in self._keys.values()):
            self._add_key("master", master_key, is_test=False)
        self._save_account()
        # Half-received uploads of a process that was stopped mid-request.
        shutil.rmtree(self._root / "incoming", ignore_errors=True)

    def _load_account(self, account: dict[str, Any]) -> None:
        # Everything is read before anything is assigned, so a damaged record leaves a whole new account.
        keys = {int(k["id"]): ApiKey(**k) for k in account["keys"]}
        presigned = {
            key: (str(policy), self._timeline.from_wall(float(expires)))
            for key, (policy, expires) in account["presigned"].items()
        }
        secret = bytes.fromhex(account["signing_secret"])
        balance, bonus = float(account["balance_usd"]), int(account["bonus_credits"])
        next_key_id, next_object = int(account["next_key_id"]), int(account["next_object"])
        self._balance_usd, self._bonus_credits, self._signing_secret = balance, bonus, secret
        self._next_key_id, self._next_object = next_key_id, next_object
        self._keys, self._presigned = keys, presigned

    def _save_account(self) -> None:
        now = self.now()
        self._store.save(
            "account.json",
            {
                "balance_usd": self._balance_usd,
                "bonus_credits": self._bonus_credits,
                # last_used_at is written with the next change rather than on every authenticated request.
                "keys": [dataclasses.asdict(k) for k in self._keys.values()],
                "next_key_id": self._next_key_id,
                "next_object": self._next_object,
                "signing_secret": self._signing_secret.hex(),
                "presigned": {
                    key: [policy, self._timeline.to_wall(expires)]
                    for key, (policy, expires) in self._presigned.items()
                    if expires > now
                },
            },
        )

    def _save_job(self, job: Job) -> None:
        self._store.save(f"jobs/{job.id}.json", job.record(self._timeline))

    # -- internals ---------------------------------------------------------------------------------------

    def _add_key(self, name: str, secret: str, *, is_test: bool) -> ApiKey:
        key = ApiKey(self._next_key_id, name, secret, is_test, _iso(datetime.now(UTC)))
        self._keys[key.id] = key
        self._next_key_id += 1
        self._save_account()
        return key

    def _authenticate(self, headers: Headers) -> ApiKey | None:
        secret = headers.get("x-api-key")
        if not secret:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            secret = value.strip() if scheme.lower() == "bearer" else ""
        if not secret:
            return None
        for key in self._keys.values():
            if key.is_active and hmac.compare_digest(key.secret, secret):
                key.last_used_at = _iso(datetime.now(UTC))
                return key
        return None

    def _advance(self, job: Job) -> str:
        status = job.status_at(self.now())
        if status in TERMINAL_STATUSES and job.final_status is None:
            job.final_status = status
            if status == "failed" and not job.cost.refunded and not job.is_test:
                self._balance_usd = round(self._balance_usd + job.cost.amount_usd, 6)
                self._bonus_credits += job.cost.bonus_credits_used
                job.cost.refunded = True
                # Wallet before job: a process killed between the two writes refunds twice rather than
                # never, the error a customer would rather the service made.
                self._save_account()
            self._save_job(job)
        return status

    def _advance_all(self) -> None:
        for job in self._jobs.values():
            if job.final_status is None:
                self._advance(job)

    def _cost_headers(self, cost: Cost | None) -> list[tuple[bytes, bytes]]:
        cost = cost or Cost()
        headers = [
            (b"x-muapi-cost-usd", f"{cost.amount_usd:.6f}".encode()),
            (b"x-muapi-cost-credits", str(cost.amount_credits).encode()),
        ]
        if cost.bonus_credits_used:
            headers.append((b"x-muapi-cost-bonus-credits", str(cost.bonus_credits_used).encode()))
        if cost.refunded:
            headers.append((b"x-muapi-cost-refunded", b"true"))
        headers.append((b"x-account-balance", f"{self._balance_usd:.4f}".encode()))
        return headers

    async def _post_webhooks(self, client: httpx2.AsyncClient, jobs: list[Job]) -> None:
        # At once, as a service with many finishing jobs would: one slow receiver must not hold up the rest.
        limiter = anyio.CapacityLimiter(WEBHOOK_CONCURRENCY)

        async def post(job: Job) -> None:
            payload = job.payload(job.final_status or "completed", self.base_url or job.origin)
            if payload["error"] is None:
                del payload["error"]  # the documented payload has `error` only for failures
            self.webhooks_sent.append(payload)
            url = job.webhook_url or ""
            async with limiter:
                try:
                    await client.post(url, json=payload)
                except Exception as exc:  # a broken receiver must never take the emulator down
                    logger.warning("webhook delivery to %s failed: %r", url, exc)

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(post, job)

    def _next_webhook_in(self) -> float:
        """Seconds until the next job with an undelivered webhook finishes, at most the sweep period."""
        now = self.now()
        soonest = WEBHOOK_SWEEP_SECONDS
        for job in self._jobs.values():
            if not job.webhook_url or job.webhook_sent:
                continue
            if job.final_status is not None:
                return WEBHOOK_MIN_NAP_SECONDS
            if job.trigger not in ("stuck", "weird"):
                soonest = min(soonest, job.created_mono + job.duration_s - now)
        return max(WEBHOOK_MIN_NAP_SECONDS, soonest)

    def _build_app(self) -> Starlette:
        p = API_PREFIX
        routes = [
            Route("/openapi.json", self._openapi, methods=["GET"]),
            Route(f"{p}/predictions/{{request_id}}/result", self._result, methods=["GET"]),
            Route(f"{p}/upload_file", self._upload_file, methods=["POST"]),
            Route(f"{p}/get_upload_url", self._get_upload_url, methods=["GET"]),
            Route(f"{p}/account/balance", self._balance, methods=["GET"]),
            Route(f"{p}/account/topup", self._topup, methods=["POST"]),
            Route(f"{p}/keys", self._list_keys, methods=["GET"]),
            Route(f"{p}/keys", self._create_key, methods=["POST"]),
            Route(f"{p}/keys/{{key_id}}", self._delete_key, methods=["DELETE"]),
            Route(f"{p}/models", self._list_models, methods=["GET"]),
            Route(f"{p}/models/{{name:path}}/estimate-cost", self._estimate_cost, methods=["POST"]),
            Route(f"{p}/models/{{name:path}}", self._model_detail, methods=["GET"]),
            # Slugs may contain "/", so the submission route is a catch-all and must stay last.
            Route(f"{p}/{{endpoint:path}}", self._submit, methods=["POST"]),
            Route("/cdn/outputs/{request_id}/{filename}", self._serve_output, methods=["GET"]),
            Route("/cdn/examples/{path:path}", self._serve_example, methods=["GET"]),
            Route("/cdn/uploads/{digest}/{filename}", self._serve_upload, methods=["GET"]),
            Route("/cdn/presigned", self._presigned_post, methods=["POST"]),
            Route("/cdn/data/{path:path}", self._serve_object, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestLog, log=self.requests, on_request=self._advance_all),
                Middleware(FaultMiddleware, plan=self.faults),
                Middleware(_ApiGate, emulator=self),
            ],
            exception_handlers={HTTPException: http_error},
            lifespan=self._lifespan,
        )

    # -- API routes --------------------------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        ctx = _ctx(request)
        slug = request.path_params["endpoint"].strip("/")
        model = CATALOG.get(slug)
        if model is None:
            return detail(404, f"Model not found: {slug}")
        try:
            body = await _json_object(request)
        except Refusal as bad:
            return bad.response
        body_webhook = body.pop("webhook_url", None)
        webhook = request.query_params.get("webhook") or body_webhook
        errors = validate_inputs(model, body)
        if errors:
            return unprocessable(errors)
        is_test = bool(ctx.key and ctx.key.is_test)
        cost = Cost() if is_test else self._quote(model, body)
        if not is_test and cost.amount_usd > self._balance_usd + 1e-9:
            return detail(402, "Insufficient balance. Please top up your account.")
        if not is_test:
            self._balance_usd = round(self._balance_usd - cost.amount_usd, 6)
            self._bonus_credits -= cost.bonus_credits_used
        origin = public_origin(self.base_url, request)
        job = Job(
            id=str(uuid.uuid4()),
            model=model,
            inputs=body,
            origin=origin,
            created_mono=self.now(),
            created_at=_iso(datetime.now(UTC)),
            duration_s=self.job_seconds
            if self.job_seconds is not None
            else DEFAULT_JOB_SECONDS[model.output],
            trigger=None if is_test else _find_trigger(body),
            cost=cost,
            is_test=is_test,
            webhook_url=webhook if isinstance(webhook, str) and webhook else None,
        )
        self._jobs[job.id] = job
        # Job before wallet: a process killed between the two writes leaves a job that was not charged,
        # never a charge without its job (the fault this state folder exists to prevent).
        self._save_job(job)
        self._save_account()
        self.submissions += 1
        ctx.cost = cost
        status = self._advance(job)
        answer: dict[str, Any] = {"request_id": job.id, "status": status, "cost": cost.as_dict()}
        if status == "completed":
            answer["outputs"] = job.outputs(status, origin)
        return JSONResponse(answer)

    def _quote(self, model: ModelSpec, inputs: dict[str, Any]) -> Cost:
        price = model.price_for(inputs)
        bonus = min(self._bonus_credits, _credits(price)) if model.bonus_pool else 0
        charge = round(max(0.0, price - bonus * CREDIT_USD), 6)
        return Cost(amount_usd=charge, amount_credits=_credits(charge), bonus_credits_used=bonus)

    async def _result(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        self.polls[request_id] = self.polls.get(request_id, 0) + 1
        job = self._jobs.get(request_id)
        if job is None:
            return detail(404, "Prediction not found")
        status = self._advance(job)
        _ctx(request).cost = job.cost
        payload = job.payload(status, public_origin(self.base_url, request))
        return JSONResponse({**payload, "cost": job.cost.as_dict()})

    async def _upload_file(self, request: Request) -> Response:
        ctx = _ctx(request)
        if not (ctx.key and ctx.key.is_test) and self._balance_usd <= 0:
            return detail(402, "Insufficient balance. Uploads require a positive account balance.")
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return unprocessable([_err("missing", ["body", "file"], "Field required", None)])
            name = safe_filename(upload.filename)
            limit = self._upload_limit(name, upload.content_type)
            incoming = self._root / "incoming" / uuid.uuid4().hex
            digest = await _spool(upload, incoming, limit)
            if digest is None:
                return detail(413, f"File too large: the limit for this file type is {limit // MB} MB")
        target = self._root / "uploads" / digest[:16] / name
        await _move(incoming, target)
        return JSONResponse(
            {"url": f"{public_origin(self.base_url, request)}/cdn/uploads/{digest[:16]}/{name}"}
        )

    def _upload_limit(self, name: str, content_type: str | None) -> int:
        # Clients often send application/octet-stream, so the file name counts as much as the part's type.
        kinds = (content_type or "", mimetypes.guess_type(name)[0] or "")
        return self.upload_limits["video" if any(k.startswith("video/") for k in kinds) else "other"]

    async def _get_upload_url(self, request: Request) -> Response:
        filename = request.query_params.get("filename")
        if not filename:
            return unprocessable([_err("missing", ["query", "filename"], "Field required", None)])
        key = f"data/{ACCOUNT_ID}/{self._next_object}/{safe_filename(filename)}"
        self._next_object += 1
        expires = datetime.now(UTC) + timedelta(seconds=PRESIGN_TTL_SECONDS)
        policy_doc = {
            "expiration": _iso(expires),
            "conditions": [
                {"bucket": "muapi-sandbox"},
                {"key": key},
                ["content-length-range", 0, self.upload_limits["video"]],
            ],
        }
        policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
        self._presigned[key] = (policy, self.now() + PRESIGN_TTL_SECONDS)
        self._save_account()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        fields = {
            "key": key,
            "policy": policy,
            "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": f"SANDBOXKEY/{stamp[:8]}/us-east-1/s3/aws4_request",
            "x-amz-date": stamp,
            "x-amz-signature": self._sign(policy),
        }
        return JSONResponse(
            {"url": f"{public_origin(self.base_url, request)}/cdn/presigned", "fields": fields}
        )

    def _sign(self, policy: str) -> str:
        return hmac.new(self._signing_secret, policy.encode(), hashlib.sha256).hexdigest()

    async def _balance(self, request: Request) -> Response:
        return JSONResponse(
            {"balance": round(self._balance_usd, 6), "currency": "usd", "email": ACCOUNT_EMAIL}
        )

    async def _topup(self, request: Request) -> Response:
        try:
            body = await _json_object(request)
        except Refusal as bad:
            return bad.response
        amount = body.get("amount")
        errors: list[ValidationError] = []
        if amount is None:
            errors.append(_err("missing", ["body", "amount"], "Field required", body))
        else:
            errors.extend(_check_value({"type": "integer", "minimum": 1}, amount, ["body", "amount"]))
        currency = body.get("currency", "usd")
        if not isinstance(currency, str):
            errors.append(
                _err("string_type", ["body", "currency"], "Input should be a valid string", currency)
            )
        if errors:
            return unprocessable(errors)
        return JSONResponse(
            {
                "checkout_url": f"https://checkout.stripe.com/c/pay/cs_test_sandbox_{uuid.uuid4().hex}",
                "amount": _as_count(amount, 0),
                "currency": str(currency).lower(),
            }
        )

    async def _list_keys(self, request: Request) -> Response:
        return JSONResponse([k.public() for k in self._keys.values()])

    async def _create_key(self, request: Request) -> Response:
        try:
            body = await _json_object(request, required=False)
        except Refusal as bad:
            return bad.response
        name = body.get("name", "api-key")
        is_test = body.get("is_test", False)
        errors: list[ValidationError] = []
        if not isinstance(name, str):
            errors.append(_err("string_type", ["body", "name"], "Input should be a valid string", name))
        if not isinstance(is_test, bool):
            errors.append(_err("bool_type", ["body", "is_test"], "Input should be a valid boolean", is_test))
        if errors:
            return unprocessable(errors)
        key = self._add_key(
            str(name),
            f"mk_{'test' if is_test else 'live'}_{secrets.token_urlsafe(24)}",
            is_test=bool(is_test),
        )
        return JSONResponse({"id": key.id, "name": key.name, "api_key": key.secret, "is_test": key.is_test})

    async def _delete_key(self, request: Request) -> Response:
        raw = request.path_params["key_id"]
        try:
            key_id = int(raw)
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            return unprocessable([_err("int_parsing", ["path", "key_id"], msg, raw)])
        if self._keys.pop(key_id, None) is None:
            return detail(404, "Key not found")
        self._save_account()
        return JSONResponse({"message": "Key deleted"})

    async def _list_models(self, request: Request) -> Response:
        category = _norm(request.query_params.get("category"))
        family = _norm(request.query_params.get("family"))
        models = [
            m
            for m in _CATALOG_LIST
            if (not category or _norm(m.category) == category) and (not family or _norm(m.family) == family)
        ]
        return JSONResponse([_model_summary(m) for m in models])

    async def _model_detail(self, request: Request) -> Response:
        model = CATALOG.get(request.path_params["name"])
        if model is None:
            return detail(404, f"Model not found: {request.path_params['name']}")
        origin = public_origin(self.base_url, request)
        return JSONResponse(
            {
                **_model_summary(model),
                "input_schema": model.input_schema(),
                "example_output": f"{origin}/cdn/examples/{model.name}.{model.extension}",
            }
        )

    async def _estimate_cost(self, request: Request) -> Response:
        model = CATALOG.get(request.path_params["name"])
        if model is None:
            return detail(404, f"Model not found: {request.path_params['name']}")
        try:
            body = await _json_object(request, required=False)
        except Refusal as bad:
            return bad.response
        # An estimate is advisory, so it prices whatever it is given (defaults fill the gaps) rather than
        # rejecting an incomplete body; the bonus pool is ignored because it may be gone by submit time.
        price = model.price_for(body)
        return JSONResponse({"estimated_cost_usd": price, "estimated_credits": _credits(price)})

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi_document())

    def _openapi_document(self) -> dict[str, Any]:
        def op(
            summary: str, *, body: dict[str, Any] | None = None, multipart: bool = False
        ) -> dict[str, Any]:
            operation: dict[str, Any] = {
                "summary": summary,
                "responses": {
                    "200": {"description": "OK"},
                    "401": {"description": "Invalid or missing API key"},
                },
            }
            if body is not None:
                media = "multipart/form-data" if multipart else "application/json"
                operation["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
            return operation

        p = API_PREFIX
        paths: dict[str, Any] = {
            f"{p}/predictions/{{request_id}}/result": {"get": op("Poll a prediction")},
            f"{p}/upload_file": {
                "post": op(
                    "Upload a media file",
                    body={"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
                    multipart=True,
                )
            },
            f"{p}/get_upload_url": {"get": op("Presigned upload URL")},
            f"{p}/account/balance": {"get": op("Wallet balance")},
            f"{p}/account/topup": {
                "post": op(
                    "Start a top-up checkout",
                    body={
                        "type": "object",
                        "properties": {
                            "amount": {"type": "integer", "minimum": 1},
                            "currency": {"type": "string"},
                        },
                        "required": ["amount"],
                    },
                )
            },
            f"{p}/keys": {
                "get": op("List API keys"),
                "post": op(
                    "Create an API key",
                    body={
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "is_test": {"type": "boolean"}},
                    },
                ),
            },
            f"{p}/keys/{{key_id}}": {"delete": op("Delete an API key")},
            f"{p}/models": {"get": op("List models")},
            f"{p}/models/{{name}}": {"get": op("Model detail")},
            f"{p}/models/{{name}}/estimate-cost": {
                "post": op("Estimate the cost of a run", body={"type": "object"})
            },
        }
        for model in _CATALOG_LIST:
            paths[f"{p}/{model.name}"] = {"post": op(model.description, body=model.input_schema())}
        return {
            "openapi": "3.1.0",
            "info": {"title": "MuAPI (mediamux sandbox)", "version": "1.0.0"},
            "servers": [{"url": self.base_url or "/"}],
            "components": {
                "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
            },
            "security": [{"ApiKey": []}],
            "paths": paths,
        }

    # -- CDN routes --------------------------------------------------------------------------------------

    async def _serve_output(self, request: Request) -> Response:
        job = self._jobs.get(request.path_params["request_id"])
        stem, _, ext = request.path_params["filename"].partition(".")
        if job is None or not stem.isdigit() or ext != job.model.extension:
            return detail(404, "Not Found")
        status = self._advance(job)
        if status != "completed" or job.is_test or int(stem) >= job.model.output_count(job.inputs):
            return detail(404, "Not Found")
        prompt = str(job.inputs.get("prompt", job.id))
        seed = prompt if stem == "0" else f"{prompt}#{stem}"
        duration = job.inputs.get("duration")
        media = await anyio.to_thread.run_sync(
            functools.partial(
                media_for,
                job.model.output,
                seed,
                duration_s=_as_float(duration, 2.0) if duration is not None else None,
                size=image_size(job.model, job.inputs),
            )
        )
        return Response(media.data, media_type=media.content_type)

    async def _serve_example(self, request: Request) -> Response:
        slug, _, ext = request.path_params["path"].rpartition(".")
        model = CATALOG.get(slug)
        if model is None or ext != model.extension:
            return detail(404, "Not Found")
        media = await anyio.to_thread.run_sync(
            functools.partial(media_for, model.output, model.name, size=image_size(model, {}))
        )
        return Response(media.data, media_type=media.content_type)

    async def _serve_upload(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        name = request.path_params["filename"]
        if not re.fullmatch(r"[0-9a-f]{16}", digest) or safe_filename(name) != name:
            return detail(404, "Not Found")
        return self._file(self._root / "uploads" / digest / name, name)

    async def _presigned_post(self, request: Request) -> Response:
        async with request.form(max_files=1) as form:
            raw_key = form.get("key")
            key = raw_key if isinstance(raw_key, str) else ""
            policy = form.get("policy")
            signature = form.get("x-amz-signature")
            issued = self._presigned.get(key)
            if (
                issued is None
                or not isinstance(policy, str)
                or not isinstance(signature, str)
                or policy != issued[0]
                or not hmac.compare_digest(signature, self._sign(policy))
            ):
                return _s3_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed")
            if self.now() > issued[1]:
                return _s3_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _s3_error(400, "InvalidArgument", "POST requires exactly one file upload per request.")
            incoming = self._root / "incoming" / uuid.uuid4().hex
            if await _spool(upload, incoming, self.upload_limits["video"]) is None:
                return _s3_error(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
        target = self._root / "objects" / key
        await _move(incoming, target)
        return Response(status_code=204)

    async def _serve_object(self, request: Request) -> Response:
        rel = request.path_params["path"]
        parts = rel.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return detail(404, "Not Found")
        return self._file(self._root / "objects" / "data" / rel, parts[-1])

    def _file(self, path: Path, name: str) -> Response:
        if not path.is_file():
            return detail(404, "Not Found")
        return FileResponse(path, media_type=mimetypes.guess_type(name)[0] or "application/octet-stream")


# ---------------------------------------------------------------------------------------------------------
# Middleware and small helpers
# ---------------------------------------------------------------------------------------------------------


class _ApiGate:
    """Authentication and cost headers for every `/api/v1/*` response, errors included."""

    def __init__(self, app: ASGIApp, emulator: MuapiEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        ctx = _RequestContext(key=self.emulator._authenticate(Headers(scope=scope)))
        scope[_CTX] = ctx

        async def send_with_cost(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *self.emulator._cost_headers(ctx.cost)]
                message = {**message, "headers": headers}
            await send(message)

        if ctx.key is None:
            await detail(401, "Invalid or missing API key")(scope, receive, send_with_cost)
            return
        await self.app(scope, receive, send_with_cost)


def _s3_error(status_code: int, code: str, message: str) -> Response:
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(xml, status_code=status_code, media_type="application/xml")


async def _spool(upload: UploadFile, target: Path, limit: int) -> str | None:
    """Copy an upload to disk in chunks, hashing as it goes; None (and no file) if it exceeds `limit`."""
    make_private_dirs(target.parent)
    digest = hashlib.sha256()
    size = 0
    async with await anyio.open_file(target, "wb") as out:
        while chunk := await upload.read(256 * 1024):
            size += len(chunk)
            if size > limit:
                break
            digest.update(chunk)
            await out.write(chunk)
    if size > limit:
        await anyio.Path(target).unlink(missing_ok=True)
        return None
    await anyio.Path(target).chmod(FILE_MODE)
    return digest.hexdigest()


async def _move(source: Path, target: Path) -> None:
    make_private_dirs(target.parent)
    await anyio.Path(source).replace(target)


def _find_trigger(inputs: MutableMapping[str, Any]) -> str | None:
    text = " ".join(v for v in inputs.values() if isinstance(v, str)).lower()
    for trigger in TRIGGERS:
        if f"[{trigger}]" in text:
            return trigger
    return None


def _norm(value: str | None) -> str:
    return re.sub(r"[\s_-]+", " ", value or "").strip().lower()


def _model_summary(model: ModelSpec) -> dict[str, Any]:
    return {
        "name": model.name,
        "endpoint": model.name,
        "category": model.category,
        "family": model.family,
        "description": model.description,
        "cost": {"usd": model.price_usd, "unit": model.unit},
    }


__all__ = [
    "CATALOG",
    "Cost",
    "Job",
    "ModelSpec",
    "MuapiEmulator",
    "image_size",
    "safe_filename",
    "validate_inputs",
]
