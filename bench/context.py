"""Context cost: tokens of the ``tools/list`` payload, mediamux against the providers' official MCP
servers, in full and model-visible (name, description, input schema).

Each official server is installed from PyPI into its own virtualenv under ``bench/out/venvs``
(kept between runs; delete it to reinstall) and listed over stdio by the SDK ``Client`` in
legacy mode. A server that does not answer as published is retried once with ``mcp<2`` pinned,
which its metadata allows; one that still does not answer is reported with its error. Their API
base URLs point at a closed loopback port, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench import tokens
from bench.common import (
    OUT,
    Config,
    Row,
    Section,
    clean_env,
    free_port,
    log_path,
    mcp_stdio,
    mediamux_cmd,
    mediamux_env,
)
from mediamux.config import toolset_ids
from mediamux.server.app import toolset as toolset_of

VENVS = OUT / "venvs"
INSTALL_TIMEOUT_S = 600.0
LIST_TIMEOUT_S = 60.0
TOP = 10
VISIBLE_KEYS = ("name", "description", "inputSchema")


@dataclass(frozen=True)
class Official:
    toolset: str
    package: str
    command: tuple[str, ...]  # the console script (in the venv's bin) and its arguments
    env: dict[str, str]  # "{closed}" is replaced by a loopback URL nobody listens on
    why: str = ""  # what reading the package shows, reported if it does not answer


OFFICIAL = (
    Official(
        "muapi",
        "muapi-cli",
        ("muapi", "mcp", "serve"),
        {"MUAPI_API_KEY": "bench-dummy-key", "MUAPI_BASE_URL": "{closed}/api/v1"},
    ),
    Official(
        "muzaic",
        "muzaic-mcp",
        ("muzaic-mcp",),
        {"MUZAIC_API_KEY": "bench-dummy-key", "MUZAIC_API_URL": "{closed}"},
    ),
    Official(
        "mixpeek",
        "mixpeek-mcp",
        ("mixpeek-mcp",),
        {
            "MIXPEEK_API_KEY": "bench-dummy-key",
            "MIXPEEK_API_BASE": "{closed}",
            "MIXPEEK_OPENAPI_URL": "{closed}/openapi.json",
        },
        why="its `server.py` builds every tool from `{MIXPEEK_API_BASE}/openapi.json`, fetched at start-up "
        "(no network here, so it points at a closed loopback port), its package does not depend on `mcp`, "
        "and it registers tools with `Server.tool(...)`, which the low-level `Server` of no `mcp` release has",
    ),
)
ATTEMPTS: tuple[tuple[str, ...], ...] = ((), ("mcp<2",))  # extra requirements per attempt


@dataclass
class Listing:
    name: str  # package and version
    tools: list[dict[str, Any]] = field(default_factory=list)
    instructions: str = ""
    error: str | None = None
    pin: str = ""  # what had to be pinned for it to start

    @property
    def label(self) -> str:
        return self.name + (f" (runs only with {self.pin} pinned)" if self.pin else "")


def _dump(tool: Any) -> dict[str, Any]:
    return dict(tool.model_dump(mode="json", by_alias=True, exclude_unset=True))


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _visible(tool: dict[str, Any]) -> dict[str, Any]:
    return {k: tool[k] for k in VISIBLE_KEYS if k in tool}


async def _list(
    cmd: list[str], env: dict[str, str], log: Path, mode: str
) -> tuple[list[dict[str, Any]], str]:
    """The tools a server lists, and its instructions (which hosts that defer tools show instead)."""
    with anyio.fail_after(LIST_TIMEOUT_S):
        async with mcp_stdio(cmd, env=env, log=log, mode=mode, request_timeout_s=LIST_TIMEOUT_S) as (
            client,
            _,
        ):
            tools = [_dump(t) for t in (await client.list_tools()).tools]
            return tools, client.instructions or ""


def _installed(venv: Path, package: str) -> str:
    """``package version`` as installed in ``venv`` (from its dist-info folder)."""
    name = package.replace("-", "_")
    found = sorted(venv.glob(f"lib/python*/site-packages/{name}-*.dist-info"))
    return f"{package} {found[-1].name[len(name) + 1 : -len('.dist-info')]}" if found else package


async def _install(venv: Path, requirements: list[str]) -> None:
    marker = venv / "bench-installed"
    if marker.exists():
        return
    with anyio.fail_after(INSTALL_TIMEOUT_S):
        if not (venv / "bin" / "python").exists():
            await anyio.run_process([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        # This interpreter's pip installs into the bare venv (`pip --python`): no ensurepip per venv.
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "-q", "install"]
        await anyio.run_process([*pip, "--disable-pip-version-check", *requirements])
    marker.touch()


def _last_error(log: Path) -> str:
    """The last error line the server wrote, cut to its first sentence."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    found = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "no output")
    return found.split(". ")[0][:200]


async def _official(spec: Official, cfg: Config) -> Listing:
    closed = f"http://127.0.0.1:{free_port()}"
    env = clean_env(
        HOME=str(cfg.work / "official-home"), **{k: v.format(closed=closed) for k, v in spec.env.items()}
    )
    errors: list[str] = []
    for extra in ATTEMPTS:
        log = log_path(f"context-{spec.package}")
        log.write_text("")
        requirements = [spec.package, *extra]
        venv = VENVS / "+".join(r.replace("<", "-lt-") for r in requirements)  # one venv per attempt
        try:
            await _install(venv, requirements)
        except Exception as exc:
            errors.append(f"`pip install {' '.join(requirements)}` failed: {str(exc)[:160]}")
            continue
        cmd = [str(venv / "bin" / spec.command[0]), *spec.command[1:]]
        try:
            listed, instructions = await _list(cmd, env, log, "legacy")
        except Exception as exc:
            errors.append(
                f"{' + '.join(requirements)}: no tools/list answer ({type(exc).__name__}: {_last_error(log)})"
            )
            continue
        pin = _installed(venv, "mcp") if extra else ""
        return Listing(
            _installed(venv, spec.package), listed, instructions, error="; ".join(errors) or None, pin=pin
        )
    return Listing(
        spec.package, [], error="; ".join(errors) + (f". Reading the package: {spec.why}" if spec.why else "")
    )


def _rows_for(name: str, ours: list[dict[str, Any]], theirs: Listing | None, count: Any) -> list[Row]:
    rows = []
    for kind, shape in (("full tools/list JSON", lambda t: t), ("model-visible", _visible)):
        value = float(sum(count(_compact(shape(t))) for t in ours))
        if theirs is None:
            baseline, label = None, "no official MCP server published (PyPI, npm)"
        elif not theirs.tools:
            baseline, label = None, f"{theirs.name}: did not answer tools/list (see notes)"
        else:
            baseline = float(sum(count(_compact(shape(t))) for t in theirs.tools))
            label = f"{theirs.name}, {len(theirs.tools)} tools" + (
                f" (needs {theirs.pin} pinned)" if theirs.pin else ""
            )
        rows.append(
            Row("Context", f"{name} toolset ({len(ours)} tools), {kind}", value, baseline, "tokens", label)
        )
    return rows


async def run(cfg: Config) -> Section:
    count, counter_label = tokens.counter()
    mine, instructions = await _list(
        mediamux_cmd("--sandbox"), mediamux_env(cfg.work / "context"), log_path("context-mediamux"), "auto"
    )
    owner = {spec.name: ts for ts in toolset_ids() for spec in toolset_of(ts).specs}
    official = {spec.toolset: await _official(spec, cfg) for spec in OFFICIAL}
    answered = [listing for listing in official.values() if listing.tools]

    def mean_visible(tools: list[dict[str, Any]]) -> float:
        return statistics.fmean(count(_compact(_visible(t))) for t in tools)

    official_mean = {ts: mean_visible(listing.tools) for ts, listing in official.items() if listing.tools}
    section = Section()
    for toolset in toolset_ids():
        ours = [t for t in mine if owner.get(t["name"]) == toolset]
        section.rows += _rows_for(toolset, ours, official.get(toolset), count)

    their_tools = [t for listing in answered for t in listing.tools]
    together = " + ".join(listing.name.split(" ")[0] for listing in answered) or "none answered"
    for kind, shape in (("full tools/list JSON", lambda t: t), ("model-visible", _visible)):
        value = float(count(_compact({"tools": [shape(t) for t in mine]})))
        baseline = float(count(_compact({"tools": [shape(t) for t in their_tools]}))) if their_tools else None
        section.rows.append(
            Row(
                "Context",
                f"all {len(mine)} tools, {kind}",
                value,
                baseline,
                "tokens",
                f"{together} together ({len(their_tools)} tools)",
            )
        )
    if their_tools:
        section.rows.append(
            Row(
                "Context",
                "mean per tool, model-visible",
                mean_visible(mine),
                mean_visible(their_tools),
                "tokens",
                f"mean tool of {together}",
            )
        )
    section.rows.append(
        Row(
            "Context",
            "server instructions (what deferring hosts show before any tool)",
            float(count(instructions)),
            float(sum(count(listing.instructions) for listing in answered)) if answered else None,
            "tokens",
            f"{together} together",
        )
    )
    ranked = sorted(mine, key=lambda t: count(_compact(_visible(t))), reverse=True)[:TOP]
    overall = mean_visible(their_tools) if their_tools else None
    for tool in ranked:
        toolset = owner.get(tool["name"], "?")
        baseline = official_mean.get(toolset)
        if baseline is not None:
            label = f"mean tool of {official[toolset].name.split(' ')[0]}"
        else:
            baseline, label = overall, f"mean tool of {together} (no official {toolset} server answered)"
        section.rows.append(
            Row(
                "Context, top 10",
                f"`{tool['name']}` model-visible (full: {count(_compact(tool)):,})",
                float(count(_compact(_visible(tool)))),
                baseline,
                "tokens",
                label,
            )
        )
    section.notes.append(
        f"Context: tokens by {counter_label}. Each tool is serialized as compact JSON exactly as the SDK "
        "client parsed it from the wire (fields the server did not send are left out); 'full' is the whole "
        "tool object (title, output schema, annotations, _meta …), 'model-visible' is name + description + "
        "inputSchema. Toolset rows sum the tools; 'all tools' rows encode the whole `{\"tools\": [...]}` "
        "payload. mediamux is listed with `--sandbox` (every toolset enabled); the official servers in "
        "legacy mode (2025-11-25 handshake)."
    )
    for toolset, listing in official.items():
        if listing.error:
            section.notes.append(f"Context, official {toolset} server `{listing.label}`: {listing.error}")
    return section
