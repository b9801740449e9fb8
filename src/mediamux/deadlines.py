"""The time a tool call has left, for every request made on its behalf.

A caller's ``wait_s`` is a promise about when the call answers. Per-read timeouts cannot keep it
(a body that trickles one byte every few seconds never trips them), so the remaining budget is
set here once and every request, retry loop and download made inside it is bounded by it as a
whole. Real time, on purpose: this bounds network I/O, which no injected clock can speed up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("mediamux_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Bound everything inside to ``seconds`` from now (or less, if an outer bound is sooner)."""
    end = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """Work that must finish whatever the caller's budget (recording a paid submission's answer)."""
    token = _deadline.set(None)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current bound, never negative; None when nothing bounds this call."""
    end = _deadline.get()
    return None if end is None else max(0.0, end - time.monotonic())
