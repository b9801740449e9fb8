"""Finding a secret in provider text in the forms a provider might echo it, not only verbatim.

A provider that quotes a request back (an error that repeats the headers, a debug field, an id
built from the caller's credentials) may change the key on the way: upper-case it, space it out,
put it in base64 (as in a Basic auth header) or in hex. Each of those reached the model when only
the exact key was masked.

Matching is on the key's letters and digits, in order, in any case, with up to three other
characters between any two of them; its base64 (standard and URL-safe, at each of the three byte
alignments a surrounding text can give it) and hex spellings are matched the same way. A key too
short for that to be safe (fewer than ``MIN_LOOSE_CHARS`` letters and digits) is matched verbatim
only: loose matching of a short string would mask ordinary words.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final

MASK: Final = "[redacted]"
MIN_LOOSE_CHARS: Final = 12
# Between two characters of a spelling: a space, a dash, a line break, a quote... at most three.
_GAP: Final = "[^0-9A-Za-z]{0,3}"


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 characters that depend on ``secret`` alone, wherever it starts in the encoded data."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode("ascii")
        # Characters mixing bits of the neighbours (or padding) differ from text to text: left out.
        first = -(-offset * 8 // 6)
        last = (offset + len(secret)) * 8 // 6
        cores.append(encoded[first:last])
    return cores


def _loose(spelling: str) -> tuple[str, int] | None:
    """The pattern for ``spelling`` with gaps, and the longest text it can match."""
    skeleton = [c for c in spelling if c.isascii() and c.isalnum()]
    if len(skeleton) < MIN_LOOSE_CHARS:
        return None
    return _GAP.join(re.escape(c) for c in skeleton), len(skeleton) * 4 - 3


class SecretMask:
    """Masks every configured secret, in every spelling above, in provider text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        patterns: set[str] = set()
        self._longest = 0
        for secret in secrets:
            if not secret:
                continue
            patterns.add(re.escape(secret))
            self._longest = max(self._longest, len(secret))
            raw = secret.encode("utf-8")
            spellings = [secret, raw.hex()]
            for core in _base64_cores(raw):
                # URL-safe base64 differs only in '+' and '/', which the loose match skips anyway.
                spellings.append(core)
            for spelling in spellings:
                loose = _loose(spelling)
                if loose is not None:
                    patterns.add(loose[0])
                    self._longest = max(self._longest, loose[1])
        # Longest first, so a long spelling is masked whole rather than around a shorter match.
        ordered = sorted(patterns, key=len, reverse=True)
        self._pattern = re.compile("|".join(ordered), re.IGNORECASE) if ordered else None

    def __repr__(self) -> str:
        return "SecretMask(...)"

    def mask(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def window(self, shown: int) -> int:
        """How much of a text to mask when only its first ``shown`` characters will be shown.

        Masking a long body whole costs a second per 10 MB. Cutting it first is safe when the cut
        is this far out: a secret the cut splits starts past everything that can still shrink
        into view — at most ``shown // len(MASK) + 1`` masked secrets, each at most the longest
        match, plus ``shown`` characters of other text.
        """
        return shown + (shown // len(MASK) + 1) * max(self._longest, 1)

    def reveals(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any of the spellings masked."""
        return self._pattern is not None and self._pattern.search(text) is not None
