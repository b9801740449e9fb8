"""Provider job status words → ours: queued, running, completed, failed, cancelled, expired.

One table for every provider, because they share their vocabulary (MuAPI's ``processing``,
Mixpeek's ``PROCESSING``); a provider whose word means something else for it passes an override
(muse.ai's ``pending`` is a job being worked on, MuAPI's a job waiting in line). Words are matched
without regard to case or surrounding spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

STATUS_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "queued": "queued",
        "pending": "queued",
        "initializing": "queued",
        "processing": "running",
        "running": "running",
        "starting": "running",
        "in_progress": "running",
        "downloading": "running",
        # Mixpeek v1: a DRAFT batch waits to be submitted, an INTERRUPTED task is retried by the service,
        # and FINALIZING is what its own UI calls COMPLETED-but-documents-not-yet-queryable (which
        # mediamux reports as the provider status until they are).
        "draft": "queued",
        "interrupted": "running",
        "finalizing": "running",
        "completed": "completed",
        "done": "completed",
        "failed": "failed",
        "error": "failed",
        # Mixpeek v0 documents neither spelling; they are what its DELETE plausibly leads to, and
        # reading them as terminal stops a poll loop that would otherwise run on.
        "cancelled": "cancelled",
        "canceled": "cancelled",
    }
)

# Words that mean "not finished yet, and we know it": any other word on an unfinished job is one
# no table knows, which the job engine reports by name.
IN_PROGRESS_WORDS: Final = frozenset(
    word for word, ours in STATUS_WORDS.items() if ours in ("queued", "running")
)


def normalize_status(raw: str | None, overrides: Mapping[str, str] | None = None) -> str:
    """A provider's status word → ours. An unknown word comes back as sent (trimmed): the engine keeps
    waiting on it and reports it by name. No word at all is "unknown"."""
    word = (raw or "").strip()
    key = word.lower()
    return (overrides or {}).get(key) or STATUS_WORDS.get(key) or word or "unknown"
