"""Tiny but real media files, generated in pure Python.

The emulators hand out output URLs that a client may download, sniff or pass on to another tool, so the
bytes behind them must be genuine files of the advertised type rather than placeholders: a PNG that image
libraries decode, a WAV that audio tools open, and an MP4 that at least carries the right box structure.
Everything is derived deterministically from a seed string so the same job always serves the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
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


@functools.lru_cache(maxsize=16)
def png_bytes(width: int = 64, height: int = 64, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A solid-colour 8-bit RGB PNG."""
    # Cached: an output asked for at 2048×2048 takes tens of milliseconds to compress, and clients fetch
    # the same output more than once (a retried download, a second tool reading it).
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


def media_for(
    kind: MediaKind, seed: str, *, duration_s: float | None = None, size: tuple[int, int] = (64, 64)
) -> MediaFile:
    if kind == "image":
        return MediaFile(png_bytes(size[0], size[1], color_for(seed)), "image/png", "png")
    if kind == "audio":
        # Spread tones over roughly two octaves so different prompts are audibly different.
        freq = 220.0 + (seed_digest(seed)[3] / 255.0) * 660.0
        return MediaFile(wav_bytes(duration_s if duration_s is not None else 2.0, freq), "audio/wav", "wav")
    return MediaFile(mp4_bytes(seed, duration_s if duration_s is not None else 5.0), "video/mp4", "mp4")


EXTENSIONS: dict[MediaKind, str] = {"image": "png", "audio": "wav", "video": "mp4"}


# ---------------------------------------------------------------------------------------------------------
# Full-length 8-bit WAVs (added for the Muzaic emulator): the header's duration is the requested one.
# ---------------------------------------------------------------------------------------------------------

WAV_U8_MAX_RATE = 8_000
WAV_U8_MIN_RATE = 800
WAV_U8_BYTE_BUDGET = 1_000_000
WAV_U8_SILENCE = 128
# A minor pentatonic scale (A2..A4); notes are transposed down by octaves to stay below a quarter of the
# sample rate, so low-rate files never alias.
_PENTATONIC_HZ = (110.0, 130.81, 146.83, 164.81, 196.0, 220.0, 261.63, 293.66, 329.63, 392.0, 440.0)


def wav_u8_rate_for(
    duration_s: float,
    *,
    byte_budget: int = WAV_U8_BYTE_BUDGET,
    max_rate: int = WAV_U8_MAX_RATE,
    min_rate: int = WAV_U8_MIN_RATE,
) -> int:
    """The sample rate at which `duration_s` of 8-bit mono audio fits `byte_budget` (clamped)."""
    if duration_s <= 0:
        return max_rate
    return max(min_rate, min(max_rate, int(byte_budget / duration_s)))


def melody_pcm_u8(
    seed: str, n_samples: int, sample_rate: int, *, note_s: float = 0.5, amplitude: float = 0.5
) -> bytes:
    """Unsigned 8-bit mono PCM: a deterministic pentatonic melody, one note every `note_s` seconds.

    Each note is one precomputed period repeated, so minutes of audio cost milliseconds to build.
    """
    if n_samples <= 0:
        return b""
    note_samples = max(1, int(note_s * sample_rate))
    amp = max(0.0, min(1.0, amplitude)) * 127.0
    out = bytearray()
    digest = seed_digest(seed)
    index = 0
    periods: dict[float, bytes] = {}
    while len(out) < n_samples:
        if index and index % len(digest) == 0:
            digest = seed_digest(f"{seed}#{index}")
        freq = _PENTATONIC_HZ[digest[index % len(digest)] % len(_PENTATONIC_HZ)]
        while freq > sample_rate / 4:
            freq /= 2
        period = periods.get(freq)
        if period is None:
            length = max(2, round(sample_rate / freq))
            period = bytes(
                int(WAV_U8_SILENCE + amp * math.sin(2.0 * math.pi * i / length)) for i in range(length)
            )
            periods[freq] = period
        count = min(note_samples, n_samples - len(out))
        out += (period * (count // len(period) + 1))[:count]
        index += 1
    return bytes(out)


def wav_u8_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """Wrap unsigned 8-bit mono PCM in a RIFF/WAVE container."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate, 1, 8)
    pad = b"\x00" if len(pcm) % 2 else b""  # RIFF chunks are word-aligned
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
        + pad
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    """(channels, sample rate, bits per sample, duration in seconds) of a PCM WAV; ValueError otherwise."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if kind == b"fmt ":
            _tag, channels, rate, _byte_rate, block_align, bits = struct.unpack(
                "<HHIIHH", data[pos + 8 : pos + 24]
            )
            fmt = (channels, rate, bits, block_align)
        elif kind == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            channels, rate, bits, block_align = fmt
            return channels, rate, bits, size / (rate * block_align)
        pos += 8 + size + (size % 2)
    raise ValueError("no data chunk")


# ---------------------------------------------------------------------------------------------------------
# Reading media back, and a few more generators (used by emulators that analyse what clients upload).
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    bits_per_sample: int
    audio_format: int  # 1 = integer PCM, 3 = IEEE float (WAVE_FORMAT_EXTENSIBLE is resolved to these)
    data_offset: int
    data_size: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * (self.bits_per_sample // 8)

    @property
    def frames(self) -> int:
        return self.data_size // self.frame_bytes

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def wav_header(data: bytes, *, file_size: int | None = None) -> WavInfo:
    """Parse a RIFF/WAVE header; ValueError unless it is integer PCM (8–32 bit) or 32/64-bit float.

    `data` may be only the head of a file whose full length is `file_size`; the data chunk's size is
    clamped to what the file really holds (streaming writers leave it at 0xFFFFFFFF).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    total = len(data) if file_size is None else file_size
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if kind == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise ValueError("truncated fmt chunk")
            audio_format, channels, rate, _byte_rate, _align, bits = struct.unpack(
                "<HHIIHH", data[body : body + 16]
            )
            if audio_format == 0xFFFE and size >= 26 and body + 26 <= len(data):
                audio_format = struct.unpack("<H", data[body + 24 : body + 26])[0]
            fmt = (audio_format, channels, rate, bits)
        elif kind == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            audio_format, channels, rate, bits = fmt
            valid = (audio_format == 1 and bits in (8, 16, 24, 32)) or (
                audio_format == 3 and bits in (32, 64)
            )
            if not valid or channels < 1 or rate < 1:
                raise ValueError(f"unsupported WAV encoding (format {audio_format}, {bits} bits)")
            return WavInfo(rate, channels, bits, audio_format, body, max(0, min(size, total - body)))
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def wav_samples(data: bytes) -> tuple[int, array[int]]:
    """(sample rate, mono samples on the 16-bit scale) of a whole WAV file; channels are averaged."""
    info = wav_header(data)
    raw = data[info.data_offset : info.data_offset + info.data_size]
    raw = raw[: len(raw) - len(raw) % info.frame_bytes]
    width = info.bits_per_sample // 8
    samples: array[int]
    if info.audio_format == 3:
        floats = array("f" if width == 4 else "d", raw)
        if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
            floats.byteswap()
        samples = array("h", (max(-32768, min(32767, int(x * 32767))) for x in floats))
    elif width == 2:
        samples = array("h", raw)
        if sys.byteorder == "big":  # pragma: no cover
            samples.byteswap()
    elif width == 1:
        samples = array("h", ((b - 128) << 8 for b in raw))
    else:
        # 24/32-bit: keep the two most significant bytes of each little-endian sample.
        samples = array(
            "h",
            (
                int.from_bytes(raw[i + width - 2 : i + width], "little", signed=True)
                for i in range(0, len(raw), width)
            ),
        )
    if info.channels > 1:
        ch = info.channels
        samples = array("h", (sum(samples[i : i + ch]) // ch for i in range(0, len(samples), ch)))
    return info.sample_rate, samples


def wav_from_samples(samples: Sequence[int], sample_rate: int = WAV_SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV holding exactly `samples` (no duration cap)."""
    pcm_samples = array("h", samples)
    if sys.byteorder == "big":  # pragma: no cover
        pcm_samples.byteswap()
    pcm = pcm_samples.tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_sequence_bytes(
    parts: Sequence[tuple[float, float | None]], sample_rate: int = WAV_SAMPLE_RATE, amplitude: int = 12_000
) -> bytes:
    """A WAV of consecutive (seconds, frequency) parts; a frequency of None is digital silence."""
    samples = array("h")
    for seconds, frequency in parts:
        n = round(seconds * sample_rate)
        if frequency is None:
            samples.extend(array("h", bytes(2 * n)))
            continue
        step = 2.0 * math.pi * frequency / sample_rate
        samples.extend(array("h", (int(amplitude * math.sin(step * i)) for i in range(n))))
    return wav_from_samples(samples, sample_rate)


@dataclass(frozen=True)
class PngImage:
    width: int
    height: int
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    rows: tuple[bytes, ...]  # unfiltered scanlines

    def rgba(self, x: int, y: int) -> tuple[int, int, int, int]:
        row = self.rows[y]
        i = x * self.channels
        if self.channels == 1:
            return row[i], row[i], row[i], 255
        if self.channels == 2:
            return row[i], row[i], row[i], row[i + 1]
        if self.channels == 3:
            return row[i], row[i + 1], row[i + 2], 255
        return row[i], row[i + 1], row[i + 2], row[i + 3]


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
PNG_MAX_PIXELS = 40_000_000


def png_decode(data: bytes) -> PngImage:
    """Decode an 8-bit, non-interlaced grey/RGB/RGBA PNG (every filter type); ValueError otherwise."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    header: tuple[int, ...] | None = None
    idat: list[bytes] = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        if len(payload) < length:
            raise ValueError("truncated PNG chunk")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload[:13])
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
    if header is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    width, height, depth, colour_type, compression, filtering, interlace = header
    if depth != 8 or colour_type not in _PNG_CHANNELS or compression or filtering or interlace:
        raise ValueError("only 8-bit non-interlaced grey/RGB/RGBA PNGs are supported")
    if width < 1 or height < 1 or width * height > PNG_MAX_PIXELS:
        raise ValueError("PNG dimensions out of range")
    channels = _PNG_CHANNELS[colour_type]
    stride = width * channels
    expected = height * (stride + 1)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected)
    except zlib.error as exc:
        raise ValueError(f"corrupt PNG data: {exc}") from exc
    if len(raw) < expected:
        raise ValueError("PNG image data is too short")
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = _png_unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, channels)
        rows.append(line)
        prev = line
    return PngImage(width, height, channels, tuple(rows))


def _png_unfilter(kind: int, line: bytearray, prev: bytes, bpp: int) -> bytes:
    n = len(line)
    if kind == 0:
        pass
    elif kind == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
    elif kind == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + predictor) & 0xFF
    else:
        raise ValueError(f"unknown PNG filter type {kind}")
    return bytes(line)


def png_stripes_bytes(width: int, height: int, colors: Sequence[tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG of equal vertical stripes, one per colour (the last takes any remainder)."""
    if not colors:
        raise ValueError("at least one colour is needed")
    stripe = max(1, width // len(colors))
    row = b"\x00" + b"".join(bytes(colors[min(x // stripe, len(colors) - 1)]) for x in range(width))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def mp4_duration(data: bytes) -> float | None:
    """Duration from an ISO-BMFF file's `moov/mvhd` box, or None when there is none."""

    def boxes(start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if size == 1:
                if pos + 16 > end:
                    return
                size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
                header = 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                return
            yield kind, pos + header, pos + size
            pos += size

    for kind, start, end in boxes(0, len(data)):
        if kind != b"moov":
            continue
        for inner, body, body_end in boxes(start, end):
            if inner != b"mvhd" or body_end - body < 20:
                continue
            if data[body] == 1:
                if body_end - body < 32:
                    return None
                timescale, duration = struct.unpack(">IQ", data[body + 20 : body + 32])
            else:
                timescale, duration = struct.unpack(">II", data[body + 12 : body + 20])
            return duration / timescale if timescale else None
    return None
