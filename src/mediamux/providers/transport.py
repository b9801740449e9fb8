"""The one HTTP transport every provider client uses.

It owns everything that must be done the same way for all four providers: the auth header,
timeouts, the retry policy, redirect handling, response size caps and the mapping of failures
to :mod:`mediamux.providers.errors`. Retries live here and nowhere else.

Each request declares how it may be retried:

* ``Retry.ALWAYS`` — idempotent reads: retried on connection errors, timeouts, 429 and 5xx,
  with jittered exponential backoff, honouring ``Retry-After`` up to a cap, bounded in attempts
  and in total time.
* ``Retry.IF_NOT_SENT`` — paid submissions and other writes: retried only when the request
  provably never reached the provider (the connection could not be opened). Any answer,
  including a 5xx, or a connection lost after sending, means it may have been acted upon.
* ``Retry.NEVER``.
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import random
import re
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2
from pydantic import SecretStr

from mediamux import deadlines
from mediamux.clock import Clock, SystemClock
from mediamux.errors import FIX_ARGUMENTS
from mediamux.providers.errors import (
    MissingCredentials,
    NotFound,
    OutOfTime,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeout,
    RateLimited,
    status_error_type,
)
from mediamux.providers.masking import SecretMask
from mediamux.urls import origin

logger = logging.getLogger("mediamux.transport")

MAX_JSON_BYTES = 16 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


# An idle pooled connection is dropped well before a server would close it (5 s is common, uvicorn's
# default among them): a paid POST sent on a connection the server is closing at that moment fails
# with a read error and must be recorded as "may have been sent" (uncertain), never retried.
KEEPALIVE_S = 2.0


class Retry(enum.Enum):
    ALWAYS = "always"
    IF_NOT_SENT = "if_not_sent"
    NEVER = "never"


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_total_s: float = 60.0
    retry_after_cap_s: float = 60.0


@dataclass
class ProviderResponse:
    status: int
    headers: httpx2.Headers
    content: bytes
    url_path: str

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            return _NOT_JSON

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


_NOT_JSON = object()

# A factory, so a request with a streamed body can be re-created for a retry that is allowed
# (connect failure) without re-reading a consumed stream.
BodyFactory = Callable[[], tuple[Mapping[str, str], AsyncIterator[bytes]]]


@dataclass
class ProviderHints:
    """Per-provider advice appended to error messages, keyed by error class; for a 404, keyed by
    operation (where the valid ids are listed)."""

    title: str
    key_env: str
    advice: dict[str, str] = field(default_factory=dict)
    not_found: dict[str, str] = field(default_factory=dict)


DEFAULT_ADVICE = {
    "auth": "check {key_env}: the provider rejected the key",
    "insufficient_credits": "top up the account, or use a sandbox/test key",
    "not_found": "check the id or name",
    "invalid_input": FIX_ARGUMENTS,
    "rate_limited": "wait and call again",
    "provider_error": "the provider had a problem; try again later",
    "timeout": "the provider did not answer in time; try again later",
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d{1,10}(\.\d+)?", value):
        return float(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return None  # negative or absurdly large: fall back to backoff
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


class Transport:
    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        hints: ProviderHints,
        auth_header: str | None = None,
        api_key: SecretStr | None = None,
        auth_scheme: str = "",
        client: httpx2.AsyncClient | None = None,
        timeout: httpx2.Timeout | None = None,
        retry: RetryConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        user_agent: str = "mediamux",
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.hints = hints
        self._auth_header = auth_header
        self._api_key = api_key
        self._auth_scheme = auth_scheme
        self._owns_client = client is None
        self._client = client or httpx2.AsyncClient(
            timeout=timeout or httpx2.Timeout(30.0, connect=10.0, write=120.0),
            limits=httpx2.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_S
            ),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": user_agent},
        )
        self.retry = retry or RetryConfig()
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._origin = origin(httpx2.URL(self.base_url))
        self._mask = SecretMask([api_key.get_secret_value()] if api_key is not None else [])

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def client(self) -> httpx2.AsyncClient:
        return self._client

    @property
    def has_key(self) -> bool:
        return self._api_key is not None and bool(self._api_key.get_secret_value())

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- public API ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        retry: Retry,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        body: BodyFactory | None = None,
        authenticated: bool = True,
        max_bytes: int = MAX_JSON_BYTES,
        ok_statuses: tuple[int, ...] = (),
        read_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        external: bool = False,
    ) -> ProviderResponse:
        """Send one logical request (possibly several attempts) and return the successful answer.

        ``headers`` are sent besides the auth header (Mixpeek's ``X-Namespace``). ``external`` marks an
        absolute URL the provider handed out for a write elsewhere (a presigned upload to storage): it
        is sent there without the key; redirects from it are still never followed to a third host.

        Raises:
            ProviderError: a subclass per failure; ``maybe_sent`` is set when a non-idempotent
                request may have been acted upon.
        """
        if authenticated and not self.has_key:
            raise MissingCredentials(
                f"{self.hints.title} {operation}: no API key is configured; set {self.hints.key_env} "
                "(or run with --sandbox to try the emulator)",
                provider=self.provider,
                operation=operation,
            )
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        budget = deadlines.remaining()
        # Whether the request may have reached the provider, should the budget end it mid-attempt.
        maybe_sent = False
        if budget is not None and budget <= 0:
            raise self._out_of_time(operation, retry, maybe_sent)
        # One bound around everything, retries, backoff and the body included: per-read timeouts
        # cannot stop a body that trickles a byte every few seconds, and the caller's wait_s is a
        # promise about the whole call. Without a budget (None) the scope never fires.
        with anyio.move_on_after(budget):
            deadline = self.clock.monotonic() + self.retry.max_total_s
            attempt = 0
            while True:
                attempt += 1
                maybe_sent = retry is not Retry.ALWAYS
                try:
                    response = await self._send_following_redirects(
                        method,
                        url,
                        operation=operation,
                        json_body=json_body,
                        params=params,
                        body=body,
                        authenticated=authenticated,
                        max_bytes=max_bytes,
                        read_timeout=read_timeout,
                        headers=headers,
                        external=external,
                    )
                except ProviderConnectionError as exc:
                    maybe_sent = maybe_sent and exc.maybe_sent
                    retryable = retry is Retry.ALWAYS or (retry is Retry.IF_NOT_SENT and not exc.maybe_sent)
                    delay = self._backoff(attempt)
                    if not retryable or not self._may_retry(attempt, delay, deadline):
                        raise
                    logger.info(
                        "%s %s: %s; retrying in %.1fs (attempt %d)",
                        self.provider,
                        operation,
                        type(exc).__name__,
                        delay,
                        attempt,
                    )
                    await self.clock.sleep(delay)
                    continue

                if response.status < 400 or response.status in ok_statuses:
                    return response

                error = self.status_error(response, operation)
                if retry is Retry.ALWAYS and (response.status == 429 or response.status >= 500):
                    hinted = error.retry_after_s
                    if hinted is not None and hinted > self.retry.retry_after_cap_s:
                        raise error  # the caller decides; sleeping an hour inside a tool call helps nobody
                    # "0" or a past date would mean hammering the provider: treat it as no hint.
                    delay = hinted if hinted is not None and hinted > 0 else self._backoff(attempt)
                    if self._may_retry(attempt, delay, deadline):
                        logger.info(
                            "%s %s: HTTP %d; retrying in %.1fs (attempt %d)",
                            self.provider,
                            operation,
                            response.status,
                            delay,
                            attempt,
                        )
                        await self.clock.sleep(delay)
                        continue
                raise error
        raise self._out_of_time(operation, retry, maybe_sent)

    async def get_json(
        self,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        response = await self.request(
            "GET", path, operation=operation, retry=Retry.ALWAYS, params=params, headers=headers
        )
        return self.parse_json(response, operation)

    def parse_json(self, response: ProviderResponse, operation: str) -> Any:
        data = response.json()
        if data is _NOT_JSON:
            raise ProviderResponseError(
                f"{self.hints.title} {operation}: the provider answered HTTP {response.status} with "
                f"{_describe_body(response.content)} instead of JSON; " + DEFAULT_ADVICE["provider_error"],
                provider=self.provider,
                operation=operation,
                status=response.status,
            )
        return data

    def malformed(self, operation: str, what: str) -> ProviderResponseError:
        return ProviderResponseError(
            f"{self.hints.title} {operation}: unexpected answer ({self.scrub(what)}); "
            + DEFAULT_ADVICE["provider_error"],
            provider=self.provider,
            operation=operation,
        )

    def scrub(self, text: str, limit: int = 300) -> str:
        """Provider text made safe to show: control/invisible chars removed, whitespace collapsed,
        the key masked in every form a provider might echo it in (see ``masking``), length capped."""
        text = " ".join(_CONTROL.sub("", text).split())
        text = self._mask.mask(text[: self._mask.window(limit)])
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def reveals_key(self, text: str) -> bool:
        """Whether provider text holds the API key in any form ``scrub`` masks."""
        return self._mask.reveals(text)

    def checked_id(self, value: str, what: str, operation: str) -> str:
        """An id the provider handed back for work it accepted, unless it carries the API key.

        Such an id can be neither shown (it would give the model the key) nor masked (a masked id
        polls nothing), so the submission fails as one whose answer cannot be used: it did reach
        the provider, and may have been acted upon.
        """
        if self.reveals_key(value):
            logger.warning(
                "%s %s: the provider's %s contains the API key; refused", self.provider, operation, what
            )
            raise ProviderResponseError(
                f"{self.hints.title} {operation}: the provider's {what} contains the API key, so it is "
                "withheld; the request may have been acted upon — check the provider's dashboard before "
                "sending it again, and consider replacing the key",
                provider=self.provider,
                operation=operation,
                maybe_sent=True,
            )
        return value

    # -- internals -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.retry.max_delay_s, self.retry.base_delay_s * (2 ** (attempt - 1)))
        return ceiling * (0.5 + self._rng.random() / 2)

    def _may_retry(self, attempt: int, delay: float, deadline: float) -> bool:
        budget = deadlines.remaining()
        # A retry the call's budget cannot wait for would only swap the provider's own answer, which
        # says what went wrong, for "out of time", which does not.
        if budget is not None and delay >= budget:
            return False
        return attempt < self.retry.max_attempts and self.clock.monotonic() + delay <= deadline

    def _out_of_time(self, operation: str, retry: Retry, maybe_sent: bool) -> OutOfTime:
        what = "the call's time budget ran out before the provider finished answering"
        if retry is Retry.ALWAYS:
            advice = "nothing is lost: the job can be resumed (jobs_wait) or the request made again"
        elif maybe_sent:
            advice = "the request may have reached the provider; check before sending it again"
        else:
            what = "the call's time budget ran out before the request could be sent"
            advice = "nothing was sent, so nothing is lost; call again with a larger wait_s"
        error = self._failure(OutOfTime, operation, what, advice, maybe_sent=maybe_sent)
        assert isinstance(error, OutOfTime)
        return error

    def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if authenticated and self._auth_header and self._api_key is not None:
            value = self._api_key.get_secret_value()
            headers[self._auth_header] = f"{self._auth_scheme} {value}".strip()
        return headers

    async def _send_following_redirects(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        json_body: Any,
        params: Mapping[str, Any] | None,
        body: BodyFactory | None,
        authenticated: bool,
        max_bytes: int,
        read_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        external: bool = False,
    ) -> ProviderResponse:
        current = httpx2.URL(url)
        # A synchronous render can legitimately take minutes; everything else keeps the default.
        timeout = httpx2.Timeout(read_timeout, connect=10.0) if read_timeout else None
        if params:
            current = current.copy_merge_params({k: v for k, v in params.items() if v is not None})
        # Redirects are followed within the provider's own origin only, never to another one, for
        # any method. Vetting the target the way output downloads are vetted (no loopback, private
        # or link-local address, https only) was the alternative, and it would still be wrong here:
        # the key is never sent to another origin, so whatever answers there cannot be the
        # provider's authenticated answer, only a stranger's text passed off as it (a poll once
        # showed an internal service's body to the model). None of the four APIs documents a
        # redirect to another host, and media on a CDN is fetched by the downloader, with its own
        # checks. The provider's own origin needs no address rule: the operator configured it, and
        # in sandbox mode it is plain http on loopback.
        original_method = method
        for hop in range(4):
            same_origin = origin(current) == self._origin
            # A presigned write (``external``) goes to the storage host it names, and only there.
            if not same_origin and (hop > 0 or (original_method not in ("GET", "HEAD") and not external)):
                logger.warning(
                    "%s %s: refused a redirect to %s (only %s is followed)",
                    self.provider,
                    operation,
                    origin(current),
                    self._origin,
                )
                raise ProviderResponseError(
                    f"{self.hints.title} {operation}: the provider redirected the request to another host; "
                    "refusing to follow it (only redirects within the provider's own address are followed). "
                    "Check the base URL, or try again later",
                    provider=self.provider,
                    operation=operation,
                    # Judged on the method the caller asked for: a POST turned into a GET by a
                    # 302/303 had still reached the provider.
                    maybe_sent=hop > 0 and original_method not in ("GET", "HEAD"),
                )
            sent_headers = {**(headers or {}), **self._headers(authenticated and same_origin)}
            content: AsyncIterator[bytes] | None = None
            if body is not None:
                extra, content = body()
                sent_headers.update(extra)
            request = self._client.build_request(
                method,
                current,
                headers=sent_headers,
                json=json_body if body is None and json_body is not None else None,
                content=content,
                timeout=timeout or httpx2.USE_CLIENT_DEFAULT,
            )
            response = await self._send(request, operation=operation, max_bytes=max_bytes)
            if response.status in (301, 302, 303, 307, 308) and "location" in response.headers:
                current = current.join(response.headers["location"])
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, json_body, body = "GET", None, None
                continue
            return response
        raise ProviderResponseError(
            f"{self.hints.title} {operation}: too many redirects",
            provider=self.provider,
            operation=operation,
        )

    def _failure(
        self,
        kind: type[ProviderError],
        operation: str,
        what: str,
        advice: str,
        *,
        maybe_sent: bool,
        status: int | None = None,
    ) -> ProviderError:
        summary = f"{self.hints.title} {operation}: {what}"
        return kind(
            f"{summary}; {advice}",
            provider=self.provider,
            operation=operation,
            status=status,
            maybe_sent=maybe_sent,
            summary=summary,
        )

    async def _send(self, request: httpx2.Request, *, operation: str, max_bytes: int) -> ProviderResponse:
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.ConnectError as exc:
            if _is_tls_failure(exc):
                # Not transient: retrying a certificate problem only delays the same answer.
                raise self._failure(
                    ProviderError,
                    operation,
                    f"TLS verification of {request.url.host} failed",
                    "check the system clock, a proxy intercepting TLS, or the base URL",
                    maybe_sent=False,
                ) from None
            raise self._failure(
                ProviderConnectionError,
                operation,
                f"could not connect to {request.url.host} ({type(exc).__name__})",
                "check the network or the base URL",
                maybe_sent=False,
            ) from None
        except (httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            # The request never left this machine: safe to retry even a paid submission.
            raise self._failure(
                ProviderConnectionError,
                operation,
                f"could not connect to {request.url.host} ({type(exc).__name__})",
                "check the network or the base URL",
                maybe_sent=False,
            ) from None
        except httpx2.TimeoutException as exc:
            raise self._failure(
                ProviderTimeout,
                operation,
                f"no answer from the provider in time ({type(exc).__name__})",
                DEFAULT_ADVICE["timeout"],
                maybe_sent=True,
            ) from None
        except httpx2.TransportError as exc:
            raise self._failure(
                ProviderConnectionError,
                operation,
                f"the connection broke ({type(exc).__name__})",
                DEFAULT_ADVICE["provider_error"],
                maybe_sent=True,
            ) from None
        try:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise self._too_large(operation, response.status_code, max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise self._too_large(operation, response.status_code, max_bytes)
                chunks.append(chunk)
        except httpx2.DecodingError:
            raise self._failure(
                ProviderResponseError,
                operation,
                "the provider sent a body that could not be decoded",
                DEFAULT_ADVICE["provider_error"],
                maybe_sent=True,
                status=response.status_code,
            ) from None
        except httpx2.TimeoutException:
            raise self._failure(
                ProviderTimeout,
                operation,
                "the provider stopped sending mid-answer",
                DEFAULT_ADVICE["timeout"],
                maybe_sent=True,
            ) from None
        except httpx2.TransportError as exc:
            raise self._failure(
                ProviderConnectionError,
                operation,
                f"the connection broke mid-answer ({type(exc).__name__})",
                DEFAULT_ADVICE["provider_error"],
                maybe_sent=True,
            ) from None
        finally:
            await response.aclose()
        logger.debug("%s %s %s -> %d", self.provider, request.method, request.url.path, response.status_code)
        return ProviderResponse(response.status_code, response.headers, b"".join(chunks), request.url.path)

    def _too_large(self, operation: str, status: int, max_bytes: int) -> ProviderError:
        limit = f"{max_bytes // (1024 * 1024)} MiB" if max_bytes >= 1024 * 1024 else f"{max_bytes} bytes"
        return self._failure(
            ProviderResponseError,
            operation,
            f"the answer is larger than the {limit} limit for this request",
            DEFAULT_ADVICE["provider_error"],
            maybe_sent=True,
            status=status,
        )

    def status_error(self, response: ProviderResponse, operation: str) -> ProviderError:
        status = response.status
        kind = status_error_type(status)
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.now())
        if retry_after is None:
            retry_after = _body_retry_after(response)
        detail = self.scrub(_detail_of(response))
        what = _WHAT.get(status) or ("internal error" if status >= 500 else "request refused")
        advice = (
            (self.hints.not_found.get(operation) if kind is NotFound else None)
            or self.hints.advice.get(kind.error_class)
            or DEFAULT_ADVICE.get(kind.error_class, "")
        )
        advice = advice.format(key_env=self.hints.key_env)
        if kind is RateLimited and retry_after is not None and retry_after > 0:
            advice = f"retry after {retry_after:.0f} s"
        message = f"{self.hints.title} {operation}: {what} ({status})"
        if detail:
            message += f": {detail}"
        if advice:
            message += f"; {advice}"
        return kind(
            message,
            provider=self.provider,
            operation=operation,
            status=status,
            retry_after_s=retry_after,
            maybe_sent=status >= 500,
        )


_WHAT = {
    400: "invalid request",
    401: "authentication failed",
    402: "not enough credits",
    403: "access denied",
    404: "not found",
    409: "conflict",
    413: "payload too large",
    422: "invalid input",
    429: "rate limited",
}


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe_body(content: bytes) -> str:
    head = content[:200].lstrip().lower()
    if not head:
        return "an empty body"
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        return "an HTML page"
    return f"{len(content)} bytes of non-JSON text"


def _detail_of(response: ProviderResponse) -> str:
    """The provider's own words about an error, from whichever of the documented body shapes it used."""
    data = response.json()
    if data is _NOT_JSON:
        return "" if not response.content.strip() or response.content.lstrip()[:1] == b"<" else response.text
    if isinstance(data, dict):
        for key in ("detail", "error", "Error", "message", "msg"):
            value = data.get(key)
            if value:
                return _flatten_detail(value)
        return ""
    return _flatten_detail(data) if isinstance(data, list) else str(data)


def _flatten_detail(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for item in value[:5]:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(value, dict):
        text = str(value.get("message") or value.get("detail") or value)
        details = value.get("details")
        fields = details.get("validation_errors") if isinstance(details, dict) else None
        if isinstance(fields, list) and fields:
            # {"error": {"message", "details": {"validation_errors": [...]}}} (Mixpeek v1): the
            # field that was refused is what the caller needs to fix.
            text += " (" + _flatten_detail([_field_error(item) for item in fields]) + ")"
        return text
    return str(value)


def _field_error(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    where = item.get("loc") if item.get("loc") is not None else item.get("field") or item.get("path")
    loc = where if isinstance(where, list) else [where] if where else []
    return {"loc": loc, "msg": item.get("msg") or item.get("message") or "invalid"}


def _body_retry_after(response: ProviderResponse) -> float | None:
    """The wait an error body advises, for providers that send it there rather than in Retry-After:
    ``error.details.retry_after_seconds`` (Mixpeek v1) or its older ``detail.error.details`` nesting."""
    data = response.json()
    if not isinstance(data, dict):
        return None
    for envelope in (data, data.get("detail")):
        error = envelope.get("error") if isinstance(envelope, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        value = details.get("retry_after_seconds") if isinstance(details, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 10**9:
            return float(value)
    return None
