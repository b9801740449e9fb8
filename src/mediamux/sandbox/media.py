"""Tiny but real media files, generated in pure Python.

The emulators hand out output URLs that a client may download, sniff or pass on to another tool, so the
bytes behind them must be genuine files of the advertised type rather than placeholders: a PNG that image
libraries decode, a WAV that audio tools open, and an MP4 that at least carries the right box structure.
Everything is derived deterministically from a seed string so the same job always serves the same bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Literal

MediaKind = Literal["image", "audio", "video"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WAV_MAX_SECONDS = 3.0
WAV_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class MediaFile:
    data: bytes
    content_type: str
    extension: str


def seed_digest(seed: str) -> bytes:
    return hashlib.sha256(seed.encode("utf-8")).digest()


def color_for(seed: str) -> tuple[int, int, int]:
    d = seed_digest(seed)
    return d[0], d[1], d[2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bytes(width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A solid-colour 8-bit RGB PNG."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # Each scanline is prefixed with filter type 0 (None), which every decoder must support.
    row = b"\x00" + bytes(rgb) * width
    idat = zlib.compress(row * height, 9)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def wav_bytes(duration_s: float, frequency_hz: float = 440.0, sample_rate: int = WAV_SAMPLE_RATE) -> bytes:
    """16-bit mono PCM sine tone; the duration is capped so a "60 s song" stays a few KB."""
    duration_s = max(0.1, min(float(duration_s), WAV_MAX_SECONDS))
    n = int(duration_s * sample_rate)
    step = 2.0 * math.pi * frequency_hz / sample_rate
    samples = array("h", (int(12_000 * math.sin(step * i)) for i in range(n)))
    if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
        samples.byteswap()
    pcm = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4_bytes(seed: str, duration_s: float = 5.0) -> bytes:
    """An ISO-BMFF skeleton: ftyp + moov/mvhd + mdat.

    It will not play (there are no tracks), but it sniffs as MP4 (`ftyp` at offset 4), parses as a box
    tree, and reports a duration — enough for clients that validate or forward the file.
    """
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    timescale = 1000
    matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">IIIII", 0, 0, 0, timescale, int(duration_s * timescale))
        + struct.pack(">IH", 0x00010000, 0x0100)
        + b"\x00" * 10
        + matrix
        + b"\x00" * 24
        + struct.pack(">I", 1),
    )
    moov = _box(b"moov", mvhd)
    payload = seed_digest(seed) * 64
    return ftyp + moov + _box(b"mdat", payload)


def media_for(kind: MediaKind, seed: str, *, duration_s: float | None = None) -> MediaFile:
    if kind == "image":
        return MediaFile(png_bytes(64, 64, color_for(seed)), "image/png", "png")
    if kind == "audio":
        # Spread tones over roughly two octaves so different prompts are audibly different.
        freq = 220.0 + (seed_digest(seed)[3] / 255.0) * 660.0
        return MediaFile(wav_bytes(duration_s if duration_s is not None else 2.0, freq), "audio/wav", "wav")
    return MediaFile(mp4_bytes(seed, duration_s if duration_s is not None else 5.0), "video/mp4", "mp4")


EXTENSIONS: dict[MediaKind, str] = {"image": "png", "audio": "wav", "video": "mp4"}
