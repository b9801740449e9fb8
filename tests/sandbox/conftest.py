"""Shared by the emulator tests: a hand-driven clock the emulators read through their ``now``, and a check
that a state folder is private."""

from __future__ import annotations

import stat
from pathlib import Path

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


def assert_private(state: Path) -> None:
    """Every folder of an emulator's state is 0700 and every file 0600: they hold keys and the user's media."""
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
