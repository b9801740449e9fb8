"""One error root: every class mediamux raises on purpose reaches the model with its error class."""

from __future__ import annotations

import pytest
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

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

    result = await guarded(tool, source="MuAPI")()

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


@pytest.mark.unit
def test_an_input_error_names_its_arguments_and_says_what_to_do() -> None:
    plain = InputError("must be after start (9 s), got 5 s", arguments=("end",))
    assert plain.message == "end: must be after start (9 s), got 5 s; fix the arguments and call again"
    assert plain.arguments == ("end",)

    advised = InputError(
        "unknown Muzaic tag id(s) [999]", arguments=("tags",), advice="muzaic_list_tags lists the valid ids"
    )
    assert advised.message == "tags: unknown Muzaic tag id(s) [999]; muzaic_list_tags lists the valid ids"

    pair = InputError("give exactly one of them", arguments=("time", "image_path"))
    assert pair.message.startswith("time, image_path: give exactly one of them; ")


@pytest.mark.unit
async def test_the_guard_reports_the_arguments_an_input_error_names() -> None:
    async def tool() -> None:
        raise InputError("at most 10 tags", arguments=("tags",))

    result = await guarded(tool, source="Muzaic")()

    assert result.meta[ERROR_META_KEY]["arguments"] == ["tags"]
    [block] = result.content
    assert isinstance(block, TextContent)
    assert block.text == "[invalid_input] tags: at most 10 tags; fix the arguments and call again"


class Answer(BaseModel):
    duration: float


@pytest.mark.unit
async def test_an_unreadable_answer_inside_a_tool_is_a_provider_error_not_the_callers_mistake() -> None:
    # Tool bodies validate the caller's input in their signatures (refused before they run) or raise
    # InputError: a ValidationError that reaches the guard came from reading an answer.
    async def tool() -> None:
        Answer.model_validate({"duration": "long"})

    result = await guarded(tool, source="muse.ai")()

    assert isinstance(result, CallToolResult) and result.is_error
    meta = result.meta[ERROR_META_KEY]
    assert meta["class"] == "provider_error"
    assert "arguments" not in meta
    assert meta["message"].startswith("muse.ai: an answer could not be read (duration: ")
    assert meta["message"].endswith("; the provider had a problem; try again later")
    for wrong in ("invalid arguments", "pydantic", "fix the arguments"):
        assert wrong not in meta["message"]
