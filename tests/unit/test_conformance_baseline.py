"""The conformance suite's expected failures may excuse only what mediamux cannot pass: checks that
call the suite's own fixture tools, prompts and resources (and, until it is wired, the tasks
fixture server's scenarios). Every entry carries its reason."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINES = sorted((ROOT / "tests" / "conformance").glob("expected-failures-*.yml"))
FIXTURE = re.compile(r"\btest_\w+|\btest://|\bjson_schema_2020_12_tool\b|tasks fixture server")
ENTRY = re.compile(r"^  - (?P<entry>[\w/.:-]+)(?:\s+#\s*(?P<reason>.+))?$")


def entries(path: Path) -> list[tuple[str, str]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("  - "):
            match = ENTRY.match(line)
            assert match, f"{path.name}: not a '<scenario>[:<check-id>] # reason' entry: {line!r}"
            found.append((match["entry"], match["reason"] or ""))
    return found


def test_there_is_one_baseline_per_requirement_set() -> None:
    assert [p.name for p in BASELINES] == [
        "expected-failures-2025-11-25.yml",
        "expected-failures-2026-07-28.yml",
    ]


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_every_expected_failure_names_the_fixture_it_needs(path: Path) -> None:
    listed = entries(path)

    assert listed, path
    for entry, reason in listed:
        assert FIXTURE.search(reason), f"{path.name}: {entry} gives no fixture as its reason: {reason!r}"
    names = [entry for entry, _ in listed]
    assert len(names) == len(set(names)), "an entry is listed twice"
    wholesale = {n for n in names if ":" not in n}
    assert not [n for n in names if n.split(":")[0] in wholesale and ":" in n], "a scenario listed both ways"
    # Whole scenarios may be excused only while their fixture server is wired separately.
    assert {n for n, reason in listed if ":" not in n} == {
        n for n, reason in listed if "tasks fixture server" in reason
    }


def test_ci_runs_the_suite_after_the_interoperability_tests() -> None:
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("bash ")]

    assert steps[-2:] == ["bash scripts/interop.sh", "bash scripts/conformance.sh"]
    assert (
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / "conformance.sh")], check=False).returncode == 0
    )
