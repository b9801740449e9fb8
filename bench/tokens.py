"""tiktoken's ``o200k_base`` on a machine that cannot download its BPE file.

tiktoken (a bench-only dependency, installed at run time into ``bench/out/tokenizer/site``)
fetches ``o200k_base.tiktoken`` from OpenAI's blob store on first use, which this machine cannot
reach. The PyPI package ``quicktok-v1`` ships the same 199,998 ranks in its own binary format; the
wheel is downloaded (not installed), its vocabulary rewritten in tiktoken's format, checked against
the SHA-256 that tiktoken itself pins for the file, and placed in a tiktoken cache folder. tiktoken
then verifies the hash again when it loads the file, so the encoding is the genuine one. If any
step fails, token counts fall back to a labelled characters ÷ 4 estimate.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from bench.common import OUT

# As pinned in tiktoken_ext/openai_public.py (tiktoken 0.7 and later).
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_IN_WHEEL = "quicktok/data/o200k.vocab"
PIP_TIMEOUT_S = 300

HOME = OUT / "tokenizer"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=PIP_TIMEOUT_S)


def _tiktoken_format(vocab: bytes) -> bytes:
    """quicktok's ``.vocab`` (u32 count, then per token: u16 length, bytes, u32 rank) → tiktoken's."""
    (count,) = struct.unpack_from("<I", vocab, 0)
    offset = 4
    ranked: list[tuple[int, bytes]] = []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", vocab, offset)
        token = vocab[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", vocab, offset + 2 + length)
        offset += 6 + length
        ranked.append((rank, token))
    ranked.sort()
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in ranked)


def _ensure_cached_bpe(cache: Path) -> None:
    target = cache / hashlib.sha1(O200K_URL.encode()).hexdigest()
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == O200K_SHA256:
        return
    wheels = HOME / "wheels"
    if not any(wheels.glob("quicktok_v1-*.whl")):
        _pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels), "quicktok-v1")
    wheel = sorted(wheels.glob("quicktok_v1-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        data = _tiktoken_format(zf.read(VOCAB_IN_WHEEL))
    digest = hashlib.sha256(data).hexdigest()
    if digest != O200K_SHA256:
        raise RuntimeError(f"rebuilt o200k_base does not match tiktoken's pinned hash ({digest[:12]}…)")
    cache.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def counter() -> tuple[Callable[[str], int], str]:
    """(count tokens of a string, a label saying what was used)."""
    site = HOME / "site"
    try:
        if not (site / "tiktoken").is_dir():
            _pip("install", "--target", str(site), "tiktoken")
        if str(site) not in sys.path:
            sys.path.append(str(site))  # appended: the project's own packages keep precedence
        cache = HOME / "cache"
        _ensure_cached_bpe(cache)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc)[:160]}"
        return (lambda text: max(1, round(len(text) / 4))), f"APPROXIMATION, characters ÷ 4 ({reason})"
    version = getattr(tiktoken, "__version__", "?")
    label = (
        f"tiktoken {version} `o200k_base`, BPE file rebuilt offline from the `quicktok-v1` wheel "
        "and verified against tiktoken's pinned SHA-256"
    )
    return (lambda text: len(encoding.encode(text, disallowed_special=()))), label
