"""Provider job status words → ours, one table for every provider, and the engine agrees on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediamux.clock import FakeClock
from mediamux.jobs.engine import JobEngine
from mediamux.jobs.journal import Journal
from mediamux.jobs.models import JobRecord
from mediamux.providers.museai import STATUS_OVERRIDES
from mediamux.providers.status import IN_PROGRESS_WORDS, normalize_status

PROVIDER_WORDS = {
    # MuAPI (NOTES §4)
    "queued": "queued",
    "pending": "queued",
    "processing": "running",
    "starting": "running",
    "in_progress": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    # Mixpeek v0 (NOTES §3.5), upper-case on the wire
    "INITIALIZING": "queued",
    "DOWNLOADING": "running",
    "PROCESSING": "running",
    "DONE": "completed",
    "FAILED": "failed",
    "CANCELED": "cancelled",
    # muse.ai
    "done": "completed",
    "error": "failed",
}


@pytest.mark.parametrize(("word", "ours"), PROVIDER_WORDS.items())
def test_every_provider_word_maps_to_our_status(word: str, ours: str) -> None:
    assert normalize_status(word) == ours
    assert normalize_status(f"  {word.swapcase()} ") == ours


def test_muse_ai_pending_is_a_job_being_worked_on() -> None:
    assert normalize_status("pending", STATUS_OVERRIDES) == "running"
    assert normalize_status("done", STATUS_OVERRIDES) == "completed"


def test_an_unknown_word_comes_back_as_sent_and_none_is_unknown() -> None:
    assert normalize_status(" WARMING ") == "WARMING"
    assert normalize_status("") == normalize_status(None) == "unknown"


@pytest.mark.parametrize("word", [*sorted(IN_PROGRESS_WORDS), "WARMING_UP"])
def test_the_engine_calls_exactly_the_other_words_unrecognised(word: str, tmp_path: Path) -> None:
    # The engine keeps its own copy of the in-progress words; this pins it to IN_PROGRESS_WORDS.
    journal = Journal(tmp_path / "journal.sqlite")
    engine = JobEngine(journal, clock=FakeClock())
    record = JobRecord(
        job_id="job_x",
        provider="muapi",
        operation="generate",
        dedup_key="k",
        args={},
        status="running",
        provider_status=word,
        session_id="s",
        submitted_ts=0.0,
        updated_ts=0.0,
    )
    try:
        note = engine.view(record).note or ""
    finally:
        journal.close()

    assert ("unrecognised provider status" in note) is (word.lower() not in IN_PROGRESS_WORDS)
