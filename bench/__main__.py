"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print the table, write it to
``bench/out/results.md``."""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import anyio

from bench import cold_start, concurrency, context, journal_cost, latency, replicas, results, upload
from bench.common import LOGS, OUT, Config, Row, Section, fmt

BENCHMARKS: dict[str, Callable[[Config], Awaitable[Section]]] = {
    "cold_start": cold_start.run,
    "latency": latency.run,
    "context": context.run,
    "results": results.run,
    "upload": upload.run,
    "concurrency": concurrency.run,
    "journal": journal_cost.run,
    "replicas": replicas.run,
}

# Every benchmark is bounded as a whole too (seconds, by quick), on top of its own per-wait bounds.
BENCH_TIMEOUT_S = {False: 1200.0, True: 120.0}


def _command(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(cmd)}: {exc})"
    return done.stdout.rstrip()


def machine(load_before: str) -> list[str]:
    """What the run ran on, for the report."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    commit = _command("git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD")
    return [
        "## Machine",
        "",
        f"- CPU: {model}; `nproc` = {_command('nproc')}",
        f"- Python {platform.python_version()} ({sys.implementation.name}), Linux {platform.release()}, "
        f"mcp {version('mcp')}, httpx2 {version('httpx2')}, mediamux {version('mediamux')} at commit {commit}",
        f"- Load average when the run started: {load_before}",
        "",
        "```",
        "$ free -h",
        _command("free", "-h"),
        "```",
        "",
    ]


def render(sections: dict[str, Section], cfg: Config, elapsed_s: float, load_before: str) -> str:
    lines = [
        f"# mediamux benchmarks ({'quick' if cfg.quick else 'full'} run)",
        "",
        f"{datetime.now(UTC).isoformat(timespec='seconds')} · Python {platform.python_version()} · "
        f"{elapsed_s:.0f} s in all. Every row compares two things measured in the same run; "
        "the ratio is mediamux ÷ baseline (lower is better unless the row says otherwise).",
        "",
        "| Benchmark | Measure | mediamux | Baseline | Baseline is | Δ | Ratio |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for section in sections.values():
        for row in section.rows:
            lines.append(_line(row))
    lines += ["", "## Notes", ""]
    for section in sections.values():
        lines += [f"- {note}" for note in section.notes]
    lines += ["", *machine(load_before)]
    return "\n".join(lines) + "\n"


def _line(row: Row) -> str:
    value = fmt(row.value, row.unit) if row.value is not None else (row.note or "—")
    baseline = fmt(row.baseline, row.unit)
    delta = (
        fmt(row.value - row.baseline, row.unit)
        if row.value is not None and row.baseline is not None and row.unit not in ("MiB/s",)
        else "—"
    )
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
    cells = [row.bench, row.metric, value, baseline, row.baseline_is, delta, ratio]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


async def main_async(cfg: Config, names: list[str]) -> dict[str, Section]:
    sections: dict[str, Section] = {}
    for name in names:
        started = time.perf_counter()
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        try:
            with anyio.fail_after(BENCH_TIMEOUT_S[cfg.quick]):
                sections[name] = await BENCHMARKS[name](cfg)
        except Exception as exc:
            traceback.print_exc()
            failed = Row(name, "benchmark failed", None, None, "", "", f"failed: {type(exc).__name__}: {exc}")
            sections[name] = Section([failed], [f"{name} failed: {exc!r} (traceback on stderr)"])
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations (< 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)  # server logs of this run only
    work = tempfile.mkdtemp(prefix="run-", dir=OUT)
    cfg = Config.make(args.quick, Path(work))
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.perf_counter()
    try:
        sections = anyio.run(main_async, cfg, args.only or list(BENCHMARKS))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = render(sections, cfg, time.perf_counter() - started, load_before)
    (OUT / "results.md").write_text(table)
    print(table)
    print(f"written to {OUT / 'results.md'}", file=sys.stderr)
    failed = [name for name, s in sections.items() if any(r.metric == "benchmark failed" for r in s.rows)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
