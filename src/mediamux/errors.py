"""The one root of every error mediamux raises on purpose.

    MediamuxError                        error_class, message, retry_after_s
    ├── InputError                       arguments that pass the schema but cannot work   "invalid_input"
    ├── files.FileAccessError            a local path or saved output that may not be read "invalid_input"
    │   └── files.PathNotAllowed
    ├── files.DownloadError              a provider output could not be fetched or saved  "provider_error"
    ├── providers.errors.ProviderError   every failure talking to a provider (its own tree, see there)
    └── jobs.engine.JobsError            budget, unknown job, provider not configured

Each layer raises its own branch; the tool guard catches the root once and reports
``error_class`` to the model, so a new subclass can never again reach the model as a bare
"Error executing tool" (which is what became of DownloadError before this root existed).

``error_class`` is a word from the vocabulary published in every job result's schema
(``auth | insufficient_credits | rate_limited | invalid_input | not_found | provider_error |
timeout | budget``): a subclass picks one of those rather than inventing a word no client knows.

This module imports nothing of MCP, so every layer below the tools may raise these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

# What every error about the caller's arguments ends with, unless it knows a better next step.
FIX_ARGUMENTS = "fix the arguments and call again"


class MediamuxError(Exception):
    # What an error that names no class of its own is reported as; every subclass in the tree sets one.
    error_class: ClassVar[str] = "provider_error"
    # The tool arguments at fault, when the error is about some (reported as _meta "arguments").
    arguments: tuple[str, ...] = ()

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        # ``message`` may be rewritten after raising (the engine replaces advice); str() follows it.
        return self.message


class InputError(MediamuxError):
    """Arguments that pass the schema but cannot work; raised before any upstream call.

    Told in the shape of a schema violation: ``argument: what is wrong; what to do``.
    """

    error_class = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        arguments: Sequence[str] = (),
        advice: str = FIX_ARGUMENTS,
        retry_after_s: float | None = None,
    ) -> None:
        text = f"{', '.join(arguments)}: {message}" if arguments else message
        super().__init__(f"{text}; {advice}" if advice else text, retry_after_s=retry_after_s)
        # Top-level names for _meta ("regions" for "regions.2.tags"); the message keeps the path.
        self.arguments = tuple(dict.fromkeys(a.split(".")[0] for a in arguments))
