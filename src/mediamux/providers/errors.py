"""Errors raised by provider clients: the provider branch of :mod:`mediamux.errors`.

    ProviderError                     every failure talking to a provider
    ├── MissingCredentials            no key configured                      class "auth"
    ├── ProviderStatusError           the provider answered with an error status
    │   ├── AuthFailed                401 / 403                              class "auth"
    │   ├── InsufficientCredits       402                                    class "insufficient_credits"
    │   ├── NotFound                  404                                    class "not_found"
    │   ├── InvalidRequest            400 / 409 / 413 / 422                  class "invalid_input"
    │   ├── RateLimited               429 (``retry_after_s`` when known)     class "rate_limited"
    │   └── ServerError               5xx                                    class "provider_error"
    ├── ProviderConnectionError       could not connect / connection lost    class "provider_error"
    │   └── ProviderTimeout           no answer in time                      class "timeout"
    │       └── OutOfTime             the tool call's time budget ran out    class "timeout"
    ├── ProviderResponseError         an answer we cannot read (not JSON, wrong shape, too large)
    └── (``maybe_sent``)              set on any of the above when a non-idempotent request may have
                                      reached the provider: the caller must not re-send it blindly

Messages name the provider, the operation, what happened and what to do. They never contain a
URL query string, a header value or a key: bodies quoted from the provider are cut short and
scrubbed of every secret the transport holds.
"""

from __future__ import annotations

from typing import ClassVar

from mediamux.errors import MediamuxError


class ProviderError(MediamuxError):
    error_class: ClassVar[str] = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        operation: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        maybe_sent: bool = False,
        summary: str | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        # What happened, without the advice; callers that know better advice replace it.
        self.summary = summary or message
        self.provider = provider
        self.operation = operation
        self.status = status
        self.maybe_sent = maybe_sent

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class MissingCredentials(ProviderError):
    error_class = "auth"


class ProviderStatusError(ProviderError):
    pass


class AuthFailed(ProviderStatusError):
    error_class = "auth"


class InsufficientCredits(ProviderStatusError):
    error_class = "insufficient_credits"


class NotFound(ProviderStatusError):
    error_class = "not_found"


class InvalidRequest(ProviderStatusError):
    error_class = "invalid_input"


class RateLimited(ProviderStatusError):
    error_class = "rate_limited"


class ServerError(ProviderStatusError):
    error_class = "provider_error"


class ProviderConnectionError(ProviderError):
    error_class = "provider_error"


class ProviderTimeout(ProviderConnectionError):
    error_class = "timeout"


class OutOfTime(ProviderTimeout):
    """The call's time budget (``mediamux.deadlines``) ran out before the request finished.

    The provider is not at fault; the caller chose to stop waiting. A poll can simply be made again
    later, which is how a job outlives its ``wait_s``.
    """


class ProviderResponseError(ProviderError):
    error_class = "provider_error"


STATUS_ERRORS: dict[int, type[ProviderStatusError]] = {
    400: InvalidRequest,
    401: AuthFailed,
    402: InsufficientCredits,
    403: AuthFailed,
    404: NotFound,
    409: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def status_error_type(status: int) -> type[ProviderStatusError]:
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    return ServerError if status >= 500 else InvalidRequest
