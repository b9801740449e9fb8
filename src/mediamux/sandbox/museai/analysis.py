"""Media analysis for the muse.ai emulator: what a file is and what it "says", computed from its bytes.

Pure functions (no emulator state), so the tests can predict the emulator's answers with them. The rules
(pitch → word, silence threshold, colour names, hash-derived boxes) are the GUESSES listed in the package
docstring.
"""

from __future__ import annotations

import colorsys
import hashlib
import itertools
import math
import operator
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mediamux.sandbox.media import (
    PNG_SIGNATURE,
    mp4_duration,
    png_decode,
    wav_from_samples,
    wav_header,
    wav_samples,
)

SPEECH_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")
MUSIC_PITCH_HZ = 1000.0
FRAME_SECONDS = 0.02
SILENCE_RMS = 655.0  # 2% of 16-bit full scale (about -34 dBFS)
MERGE_GAP_SECONDS = 0.1
SOUND_KINDS = ("speech", "music", "silence", "laughter", "applause")
COLOR_NAMES = (
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)
COLOR_SAMPLES = 40_000
OBJECT_LABELS = ("person", "bicycle", "car", "dog", "cat", "chair", "cup", "laptop", "book", "bottle")
TEXT_WORDS = ("hello", "world", "exit", "open", "sale", "muse", "stop", "news", "live", "menu")
ANALYSIS_MAX_BYTES = 64 * 1024 * 1024
SIZE_BYTES_PER_SECOND = 125_000
DEFAULT_FRAME = (1280, 720)

_SIDECAR = re.compile(r"transcript:\s*(.+)", re.IGNORECASE | re.DOTALL)
WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class MediaProbe:
    kind: str  # "wav" | "png" | "mp4" | "other"
    duration: float
    width: int
    height: int


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    label: str  # "speech" | "music"
    word: str  # "" for music


def probe_media(data: bytes | None, size: int, head: bytes) -> MediaProbe:
    """Kind, duration and frame size of a file (`data` is None when it was too large to keep in memory)."""
    fallback = round(max(1.0, size / SIZE_BYTES_PER_SECOND), 2)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        try:
            info = wav_header(data if data is not None else head, file_size=size)
        except ValueError:
            return MediaProbe("other", fallback, *DEFAULT_FRAME)
        return MediaProbe("wav", round(info.duration_s, 3), 0, 0)
    if head.startswith(PNG_SIGNATURE) and len(head) >= 24:
        width = int.from_bytes(head[16:20], "big")
        height = int.from_bytes(head[20:24], "big")
        return MediaProbe("png", 0.0, width, height)
    if head[4:8] == b"ftyp" and data is not None:
        duration = mp4_duration(data)
        if duration is not None:
            return MediaProbe("mp4", round(duration, 3), *DEFAULT_FRAME)
    return MediaProbe("other", fallback, *DEFAULT_FRAME)


def pitch_word(pitch_hz: float) -> str:
    return SPEECH_WORDS[int(pitch_hz // 100) % len(SPEECH_WORDS)]


def wav_segments(samples: Sequence[int], sample_rate: int) -> list[Segment]:
    """Voiced stretches of a mono 16-bit signal, labelled speech (< 1000 Hz, with a word) or music."""
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    gap = int(sample_rate * MERGE_GAP_SECONDS)
    n = len(samples)
    runs: list[list[int]] = []
    for i in range(0, n, frame):
        chunk = samples[i : i + frame]
        rms = math.sqrt(sum(map(operator.mul, chunk, chunk)) / len(chunk))
        if rms < SILENCE_RMS:
            continue
        end = min(n, i + frame)
        if runs and i - runs[-1][1] < gap:
            runs[-1][1] = end
        else:
            runs.append([i, end])
    segments: list[Segment] = []
    for start, end in runs:
        part = samples[start:end]
        crossings = sum(1 for a, b in itertools.pairwise(part) if (a < 0) != (b < 0))
        pitch = crossings / 2 / ((end - start) / sample_rate)
        label = "speech" if pitch < MUSIC_PITCH_HZ else "music"
        segments.append(
            Segment(
                round(start / sample_rate, 2),
                round(end / sample_rate, 2),
                label,
                pitch_word(pitch) if label == "speech" else "",
            )
        )
    return segments


def _pseudo_segments(sha256_hex: str, duration: float) -> list[Segment]:
    if duration <= 0:
        return []
    digest = bytes.fromhex(sha256_hex[:64])
    n = max(1, min(12, int(duration // 2)))
    slot = duration / n
    return [
        Segment(
            round(k * slot + 0.1 * slot, 2),
            round(k * slot + 0.9 * slot, 2),
            "speech",
            SPEECH_WORDS[digest[k] % len(SPEECH_WORDS)],
        )
        for k in range(n)
    ]


def analyse_audio(data: bytes | None, probe: MediaProbe, sha256_hex: str) -> list[Segment]:
    """Speech/music segments of a file: real for a WAV, deterministic from the hash otherwise."""
    if probe.kind == "wav" and data is not None:
        try:
            rate, samples = wav_samples(data)
        except ValueError:
            pass
        else:
            return wav_segments(samples, rate)
    return _pseudo_segments(sha256_hex, probe.duration)


def sidecar_words(title: str, description: str) -> list[str] | None:
    for text in (title, description):
        match = _SIDECAR.search(text)
        if match:
            return WORD.findall(match.group(1))
    return None


def spread_words(words: Sequence[str], duration: float) -> list[Segment]:
    if not words:
        return []
    total = duration if duration > 0 else float(len(words))
    slot = total / len(words)
    return [
        Segment(round(i * slot, 2), round((i + 1) * slot, 2), "speech", word) for i, word in enumerate(words)
    ]


def sounds_map(segments: Sequence[Segment], duration: float) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {kind: [] for kind in SOUND_KINDS}
    cursor = 0.0
    for seg in sorted(segments, key=lambda s: s.start):
        if seg.start > cursor:
            out["silence"].append([round(cursor, 2), seg.start])
        out[seg.label].append([seg.start, seg.end])
        cursor = max(cursor, seg.end)
    end = round(duration, 2)
    if end > cursor:
        out["silence"].append([round(cursor, 2), end])
    return out


def align_words(phrase: str, segments: Sequence[Segment], duration: float) -> list[list[Any]]:
    words = WORD.findall(phrase)
    if not words:
        return []
    if segments:
        lo, hi = min(s.start for s in segments), max(s.end for s in segments)
    elif duration > 0:
        lo, hi = 0.0, duration
    else:
        lo, hi = 0.0, 0.3 * len(words)
    weights = [len(w) for w in words]
    total = sum(weights)
    out: list[list[Any]] = []
    acc = 0
    for word, weight in zip(words, weights, strict=True):
        start = round(lo + (hi - lo) * acc / total, 2)
        acc += weight
        out.append([start, round(lo + (hi - lo) * acc / total, 2), word])
    return out


def classify_color(r: int, g: int, b: int) -> str:
    """The nearest of the eleven documented colour names, by simple HSV rules."""
    hue, sat, val = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    hue *= 360
    if val < 0.2:
        return "black"
    if sat < 0.15:
        return "white" if val > 0.85 else "grey"
    if hue < 15 or hue >= 345:
        return "pink" if sat < 0.5 and val > 0.7 else "red"
    if hue < 45:
        return "brown" if val < 0.65 else "orange"
    if hue < 70:
        return "brown" if val < 0.5 else "yellow"
    if hue < 170:
        return "green"
    if hue < 260:
        return "blue"
    if hue < 310:
        return "purple"
    return "pink"


def color_proportions(data: bytes) -> dict[str, float]:
    """Share of opaque pixels per colour name of a PNG (sampled on a grid for big images)."""
    image = png_decode(data)
    step = max(1, math.ceil(math.sqrt(image.width * image.height / COLOR_SAMPLES)))
    counts = dict.fromkeys(COLOR_NAMES, 0)
    total = 0
    for y in range(0, image.height, step):
        for x in range(0, image.width, step):
            r, g, b, a = image.rgba(x, y)
            if a < 128:
                continue
            counts[classify_color(r, g, b)] += 1
            total += 1
    return {name: round(count / total, 3) if total else 0.0 for name, count in counts.items()}


def _box(rng: random.Random, q: float = 0.5) -> dict[str, float]:
    w = round(rng.uniform(0.08, 0.35), 3)
    h = round(rng.uniform(0.08, 0.35), 3)
    return {
        "x": round(rng.uniform(0.0, 1.0 - w), 3),
        "y": round(rng.uniform(0.0, 1.0 - h), 3),
        "w": w,
        "h": h,
        "q": q,
    }


def face_clusters(sha256_hex: str, duration: float) -> dict[str, dict[str, dict[str, float]]]:
    """cluster id (32 hex) → face id (64 hex) → {s, e, x, y, w, h, q}; a function of the file's hash."""
    rng = random.Random(f"faces:{sha256_hex}")
    clusters: dict[str, dict[str, dict[str, float]]] = {}
    for i in range(rng.randint(1, 2)):
        cluster = hashlib.sha256(f"{sha256_hex}:cluster:{i}".encode()).hexdigest()[:32]
        faces: dict[str, dict[str, float]] = {}
        for j in range(rng.randint(1, 2)):
            face = hashlib.sha256(f"{sha256_hex}:face:{i}:{j}".encode()).hexdigest()
            if duration > 0:
                s = round(rng.uniform(0.0, duration * 0.7), 2)
                e = round(min(duration, s + rng.uniform(0.5, max(0.5, duration * 0.3))), 2)
            else:
                s = e = 0.0
            faces[face] = {"s": s, "e": e, **_box(rng, rng.choice((0.5, 1.0)))}
        clusters[cluster] = faces
    return clusters


def labelled_boxes(
    kind: str, sha256_hex: str, vocabulary: Sequence[str]
) -> dict[str, list[dict[str, float]]]:
    rng = random.Random(f"{kind}:{sha256_hex}")
    labels = rng.sample(list(vocabulary), k=rng.randint(1, 3))
    return {
        label: [_box(rng) for _ in range(rng.randint(1, 2 if kind == "objects" else 1))] for label in labels
    }


def cut_wav(data: bytes, start: float, end: float) -> bytes:
    rate, samples = wav_samples(data)
    return wav_from_samples(samples[int(start * rate) : int(end * rate)], rate)
