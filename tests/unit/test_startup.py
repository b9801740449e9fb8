"""The tool catalog a stdio server answers its first ``tools/list`` from: what its key is a function
of, so that a catalog kept under other code, libraries or settings is never served, and the file it is
kept in (``mediamux.server.startup``). ``tests/test_startup.py`` runs the servers."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mediamux import registry
from mediamux.config import Settings
from mediamux.server import startup

SECRET = "sk-unit-startup-0123456789abcdef"


def _settings(tmp_path: Path, **env: Any) -> Settings:
    return Settings(MEDIAMUX_HOME=str(tmp_path / "home"), MEDIAMUX_ALLOWED_DIRS=str(tmp_path), **env)


def _key(tmp_path: Path, **env: Any) -> str:
    key = startup.catalog_key(_settings(tmp_path, **env))
    assert key is not None
    return key


def _catalog(description: str = "Lists jobs.") -> startup.Catalog:
    tool = {"name": "jobs_list", "description": description, "inputSchema": {"type": "object"}}
    return startup.Catalog(
        tools=[tool], toolsets={"jobs_list": "jobs"}, job_tools=[], descriptions={"jobs": "jobs"}
    )


# -- the key ----------------------------------------------------------------------------------------

# (settings, the same with one change): each change alters which tools are registered, what they
# say, or the instructions served with them.
CHANGES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "read-only": ({}, {"MEDIAMUX_READ_ONLY": "1"}),
    "toolsets": ({}, {"MEDIAMUX_TOOLSETS": "muapi,jobs"}),
    "a key enables its toolset": ({}, {"MUAPI_API_KEY": SECRET}),
    "sandbox": ({}, {"MEDIAMUX_SANDBOX": "1"}),
    "mixpeek api version": (
        {"MIXPEEK_API_KEY": SECRET},
        {"MIXPEEK_API_KEY": SECRET, "MIXPEEK_API_VERSION": "v0"},
    ),
    "duplicate window": ({}, {"MEDIAMUX_DEDUP_WINDOW_S": "30"}),
    "output folder": ({}, {"MEDIAMUX_OUTPUT_DIR": "/tmp/mediamux-unit-elsewhere"}),
}


@pytest.mark.parametrize(("base", "changed"), list(CHANGES.values()), ids=list(CHANGES))
def test_every_setting_that_shapes_the_tool_list_changes_the_key(
    tmp_path: Path, base: dict[str, str], changed: dict[str, str]
) -> None:
    assert _key(tmp_path, **changed) != _key(tmp_path, **base)


def test_the_same_settings_give_the_same_key(tmp_path: Path) -> None:
    assert _key(tmp_path, MEDIAMUX_TOOLSETS="all") == _key(tmp_path, MEDIAMUX_TOOLSETS="all")


def test_a_secret_reaches_the_key_only_as_set_or_unset(tmp_path: Path) -> None:
    other = SECRET.replace("0123", "9876")
    assert _key(tmp_path, MUAPI_API_KEY=SECRET) == _key(tmp_path, MUAPI_API_KEY=other)
    basis = startup.key_basis(
        _settings(tmp_path, MUAPI_API_KEY=SECRET, MEDIAMUX_HTTP_TOKEN=SECRET, MEDIAMUX_STATE_KEYS=SECRET * 2)
    )
    assert SECRET not in json.dumps(basis, default=str)


def test_the_key_follows_the_interpreter_and_the_installed_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _key(tmp_path)
    stamps = startup._library_stamps()
    installed = [
        name for stamp in stamps if isinstance(stamp, list) for name in stamp if isinstance(name, str)
    ]
    assert any(name.startswith("mcp-") and name.endswith(".dist-info") for name in installed)
    assert any(name.startswith("pydantic-") and name.endswith(".dist-info") for name in installed)
    monkeypatch.setattr(startup, "_library_stamps", lambda: [*stamps, "mcp-9.9.9.dist-info"])
    upgraded = _key(tmp_path)
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    assert len({before, upgraded, _key(tmp_path)}) == 3


def test_the_code_digest_sees_an_edit_that_keeps_size_and_time_stamps(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "tools").mkdir(parents=True)
    module = package / "tools" / "muapi.py"
    module.write_text("DESCRIPTION = 'Generates an image.'\n")
    os.utime(module, ns=(1_000_000_000, 1_000_000_000))
    before = startup._code_digest(package)
    module.write_text("DESCRIPTION = 'Generates a video.'\n")  # same length
    os.utime(module, ns=(1_000_000_000, 1_000_000_000))
    edited = startup._code_digest(package)
    (package / "tools" / "extra.py").write_text("")
    added = startup._code_digest(package)
    (package / "tools" / "__pycache__").mkdir()
    (package / "tools" / "__pycache__" / "muapi.cpython-311.pyc").write_bytes(b"compiled")
    assert len({before, edited, added}) == 3
    assert startup._code_digest(package) == added  # bytecode is not code


def test_the_key_covers_this_package_s_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _key(tmp_path)
    package = Path(startup.__file__).resolve().parents[1]
    seen: list[Path] = []

    def digest(root: Path) -> str:
        seen.append(root)
        return "an edited package"

    monkeypatch.setattr(startup, "_code_digest", digest)
    assert _key(tmp_path) != before
    assert seen == [package] and (package / "tools" / "muapi.py").exists()


def test_a_provider_from_outside_the_package_means_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same provider, but not the registry's own object: as a plug-in, or a test's fake, registers.
    monkeypatch.setitem(registry.PROVIDERS, "muzaic", dataclasses.replace(registry.get("muzaic")))
    assert startup.catalog_key(_settings(tmp_path)) is None


# -- the file ---------------------------------------------------------------------------------------


def test_a_kept_catalog_reads_back_as_written_and_only_under_its_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key, other = "a" * 64, "b" * 64
    assert startup.load(settings, key) is None
    startup.save(settings, key, _catalog())
    assert startup.load(settings, key) == _catalog()
    assert startup.load(settings, other) is None
    # A file found under a key's name but written under another key is not that key's catalog.
    startup.catalog_path(settings, key).write_text(
        json.dumps({"key": other, **dataclasses.asdict(_catalog())})
    )
    assert startup.load(settings, key) is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"key": "a" * 64}),
        json.dumps(
            {
                "key": "a" * 64,
                "tools": [{"description": "a tool without a name"}],
                "toolsets": {},
                "job_tools": [],
                "descriptions": {},
            }
        ),
    ],
    ids=["not-json", "not-an-object", "missing-parts", "a-tool-this-sdk-cannot-read"],
)
def test_a_damaged_catalog_is_not_served(tmp_path: Path, content: str) -> None:
    settings = _settings(tmp_path)
    startup.save(settings, "a" * 64, _catalog())
    startup.catalog_path(settings, "a" * 64).write_text(content)
    assert startup.load(settings, "a" * 64) is None


def test_saving_replaces_the_file_whole_and_keeps_a_few_other_configurations(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for i in range(startup.KEEP + 4):
        startup.save(settings, f"{i:02d}".ljust(64, "a"), _catalog(f"version {i}"))
    startup.save(settings, "00".ljust(64, "a"), _catalog("replaced"))
    kept = sorted(p.name for p in startup.cache_dir(settings).iterdir())
    assert len(kept) == startup.KEEP + 1 and all(name.endswith(".json") for name in kept)  # no temp files
    loaded = startup.load(settings, "00".ljust(64, "a"))
    assert loaded is not None and loaded.tools[0]["description"] == "replaced"
    assert oct(startup.cache_dir(settings).stat().st_mode & 0o777) == "0o700"


def test_a_home_where_nothing_can_be_written_costs_only_the_catalog(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / startup.CACHE_DIR).write_text("a file where the cache folder would go")
    startup.save(_settings(tmp_path), "a" * 64, _catalog())  # logged, not raised
    assert startup.load(_settings(tmp_path), "a" * 64) is None
