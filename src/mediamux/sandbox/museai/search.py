"""The muse.ai search language (documented prefixes, quoted phrases, AND of terms) and matching a video.

Only speech, title, description and sounds are indexed by the emulator; the other documented prefixes
(faces, text, objects, actions) parse but match nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mediamux.sandbox.museai.analysis import WORD, Segment, sounds_map
from mediamux.sandbox.museai.state import Video

_TERM = re.compile(r'(?:([A-Za-z]+):)?(?:"([^"]*)"|(\S+))')
_MODALITIES = {
    "s": "speech",
    "speech": "speech",
    "n": "title",
    "name": "title",
    "title": "title",
    "d": "description",
    "description": "description",
    "z": "sounds",
    "sound": "sounds",
    "sounds": "sounds",
    "f": "faces",
    "face": "faces",
    "faces": "faces",
    "person": "faces",
    "t": "text",
    "text": "text",
    "o": "objects",
    "object": "objects",
    "objects": "objects",
    "a": "actions",
    "action": "actions",
    "actions": "actions",
}


@dataclass
class Term:
    modality: str | None
    phrase: list[str]


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def phrase_hits(sequence: Sequence[str], phrase: Sequence[str]) -> list[int]:
    k = len(phrase)
    return [i for i in range(len(sequence) - k + 1) if list(sequence[i : i + k]) == list(phrase)]


def parse_query(q: str) -> list[Term]:
    terms: list[Term] = []
    for match in _TERM.finditer(q):
        prefix, quoted, bare = match.group(1), match.group(2), match.group(3)
        modality = _MODALITIES.get(prefix.lower()) if prefix else None
        text = quoted if quoted is not None else bare
        if prefix and modality is None:
            text = f"{prefix}:{text}"  # not a modality (e.g. a time like 12:30): plain text
        phrase = words(text)
        if phrase:
            terms.append(Term(modality, phrase))
    return terms


async def match_times(
    video: Video, terms: list[Term], segments_of: Callable[[Video], Awaitable[list[Segment]]]
) -> list[float] | None:
    """The times at which `video` matches every term (sorted), or None when a term does not match."""
    found: set[float] = set()
    segments: list[Segment] | None = None
    for term in terms:
        term_times: set[float] = set()
        matched = False
        modalities = [term.modality] if term.modality else ["title", "description", "speech"]
        for modality in modalities:
            if modality in ("title", "description"):
                text = video.title if modality == "title" else video.description
                if phrase_hits(words(text), term.phrase):
                    matched = True
                    term_times.add(0.0)
            elif modality == "speech":
                if segments is None:
                    segments = await segments_of(video)
                spoken = [s for s in segments if s.label == "speech"]
                starts = phrase_hits([s.word.lower() for s in spoken], term.phrase)
                if starts:
                    matched = True
                    term_times.update(spoken[i].start for i in starts)
            elif modality == "sounds" and len(term.phrase) == 1:
                if segments is None:
                    segments = await segments_of(video)
                ranges = sounds_map(segments, video.duration).get(term.phrase[0], [])
                if ranges:
                    matched = True
                    term_times.update(r[0] for r in ranges)
        if not matched:
            return None
        found |= term_times
    return sorted(found)
