"""Token counts with OpenAI's ``o200k_base`` encoding, offline.

The ``quicktok-v1`` wheel (a test dependency) ships the o200k ranks in the package itself, so
counting needs no download; its ids are tiktoken's (``bench/tokens.py`` rebuilds tiktoken's own
file from the same wheel and checks it against tiktoken's pinned SHA-256). Counts are what a
tool definition costs a model, and are deterministic, so tests pin them.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

VISIBLE_KEYS = ("name", "description", "inputSchema")


@cache
def _encoding() -> Any:
    import quicktok

    return quicktok.get_encoding("o200k_base")


def count(text: str) -> int:
    return len(_encoding().encode_ordinary(text))


def compact(data: Any) -> str:
    """JSON as it is sent and counted: no spaces, non-ASCII kept."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def visible(tool: dict[str, Any]) -> dict[str, Any]:
    """What a host shows the model of one tool: its name, description and input schema."""
    return {key: tool[key] for key in VISIBLE_KEYS if key in tool}
