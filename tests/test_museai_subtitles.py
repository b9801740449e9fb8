"""The auto-subtitles workflow on its own: WebVTT cues from word timings, and no MCP below the tools."""

from __future__ import annotations

import subprocess
import sys

from mediamux.jobs.museai_subtitles import build_vtt
from mediamux.providers.museai import AlignedWord


def words(*spec: tuple[float, float, str]) -> list[AlignedWord]:
    return [AlignedWord(start=s, end=e, word=w) for s, e, w in spec]


def test_a_pause_starts_a_new_cue_and_times_are_webvtt_timestamps() -> None:
    vtt, count = build_vtt(words((0.0, 0.4, "echo"), (0.5, 1.0, "charlie"), (2.5, 3.0, "delta")))

    assert count == 2
    assert vtt == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:01.000\necho charlie\n\n"
        "2\n00:00:02.500 --> 00:00:03.000\ndelta\n"
    )


def test_long_cues_are_split_by_word_count_and_by_span_and_blank_words_dropped() -> None:
    many = words(*[(i * 0.1, i * 0.1 + 0.05, f"w{i}") for i in range(10)], (1.0, 1.05, "  "))
    _, by_count = build_vtt(many, max_words=4)
    _, by_span = build_vtt(words((0.0, 0.5, "a"), (0.6, 4.2, "b")), max_span_s=4.0)

    assert by_count == 3  # 4 + 4 + 2 words; the blank one is no word at all
    assert by_span == 2


def test_hours_are_written_out() -> None:
    vtt, _ = build_vtt(words((3723.004, 3723.5, "late")))

    assert "01:02:03.004 --> 01:02:03.500" in vtt


def test_no_layer_below_the_tools_imports_mcp() -> None:
    code = (
        "import sys, mediamux.errors, mediamux.files, mediamux.jobs.museai_subtitles, mediamux.jobs.engine\n"
        "import mediamux.providers.museai, mediamux.providers.muapi, mediamux.providers.mixpeek\n"
        "import mediamux.providers.muzaic, mediamux.providers.transport\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)

    assert out.stdout.strip() == "[]"
