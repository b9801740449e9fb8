"""Shared by the emulator tests: a hand-driven clock the emulators read through their ``now``."""

from __future__ import annotations

import pytest


class FakeNow:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def now() -> FakeNow:
    return FakeNow()
