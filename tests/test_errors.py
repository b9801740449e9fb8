"""One error root: every class mediamux raises on purpose reaches the model with its error class."""

from __future__ import annotations

import pytest
from mcp_types import CallToolResult, TextContent

from mediamux.errors import InputError, MediamuxError
from mediamux.files import DownloadError, FileAccessError, PathNotAllowed
from mediamux.jobs.engine import BudgetExceeded, JobNotFound, JobsError, ProviderUnavailable
from mediamux.jobs.models import JobError
from mediamux.providers.errors import ProviderError, RateLimited
from mediamux.tools.base import ERROR_META_KEY, guarded


def subclasses(cls: type[MediamuxError]) -> list[type[MediamuxError]]:
    found: list[type[MediamuxError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


EVERY_ERROR = [MediamuxError, *subclasses(MediamuxError)]
# The classes clients are told to expect, from the schema every job result publishes.
VOCABULARY = set(str(JobError.model_fields["error_class"].description).split(" | "))


def instance(cls: type[MediamuxError]) -> MediamuxError:
    if issubclass(cls, ProviderError):
        return cls("MuAPI generate: it went wrong", provider="muapi", operation="generate", retry_after_s=7.0)
    if issubclass(cls, DownloadError):
        return cls("cdn.example.com", "the server answered HTTP 503")
    return cls("it went wrong", retry_after_s=7.0)


def test_the_walk_sees_every_layer() -> None:
    expected = {
        InputError,
        FileAccessError,
        PathNotAllowed,
        DownloadError,
        ProviderError,
        RateLimited,
        JobsError,
        BudgetExceeded,
        JobNotFound,
        ProviderUnavailable,
    }
    # __subclasses__ only knows classes whose modules are loaded: the imports above load each layer's.
    assert expected <= set(EVERY_ERROR)


@pytest.mark.parametrize("cls", EVERY_ERROR, ids=lambda cls: cls.__name__)
async def test_every_error_becomes_an_is_error_result_with_its_class(cls: type[MediamuxError]) -> None:
    exc = instance(cls)

    async def tool() -> None:
        raise exc

    result = await guarded(tool)()

    assert isinstance(result, CallToolResult) and result.is_error
    assert cls.error_class in VOCABULARY
    assert result.meta is not None
    meta = result.meta[ERROR_META_KEY]
    assert meta["class"] == cls.error_class
    assert meta["message"] == exc.message == str(exc)
    assert meta.get("retry_after_s") == exc.retry_after_s
    [block] = result.content
    assert isinstance(block, TextContent) and block.text == f"[{cls.error_class}] {exc.message}"


def test_download_errors_and_file_errors_keep_their_classes() -> None:
    assert DownloadError("cdn.example.com", "too big", refused=True).error_class == "provider_error"
    assert PathNotAllowed("outside").error_class == "invalid_input"
    assert InputError("bad").error_class == "invalid_input"
