"""The catalog a host receives: each tool as ``tools/list`` shows it, and the server's instructions.

Hosts put every tool's name, description and input schema in front of the model on every turn,
or (Claude Code, Cursor, VS Code, the OpenAI Responses API) show only names and the server's
instructions until the model searches. So the catalog is built here, once, from the registered
functions: schemas compacted (``mediamux.tools.schemas``), descriptions as one paragraph, what
every job tool shares said once in the instructions, a title and an icon on every tool, and a
fixed order. Nothing here changes what a call accepts or returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mcp.server.mcpserver.tools import Tool
from mcp_types import Icon

from mediamux.tools.schemas import compact_input_schema, compact_output_schema

# The server's icon and instructions are read before its first answer, without the toolsets' models.
if TYPE_CHECKING:
    from mediamux.tools.base import ToolSpec

# Claude Code reads this key in a tool's _meta and keeps that tool's definition loaded while it
# defers the rest behind tool search. No other host documents a server-side key for this: the
# Anthropic and OpenAI APIs take ``defer_loading`` from whoever builds the request, not from us.
ALWAYS_LOAD_META_KEY = "anthropic/alwaysLoad"
# The tools a model needs in any session that started a job, whatever it was: picking it up again
# after a timeout or a restart, reading it, and finding it.
ALWAYS_LOAD = frozenset({"jobs_wait", "jobs_get", "jobs_list"})

# Tools whose result schema is advertised. Every tool returns structuredContent and the same data
# as JSON in its text block; a schema only helps a host that maps fields without reading them
# (code-executing agents, workflow builders). The job envelope is the contract such a host chains
# on (job_id → jobs_wait, status, cost, error), and the jobs toolset states it for every provider;
# each provider's own results vary by operation and model, and their schemas would be two thirds of
# the catalog, for no host that puts them in front of a model.
OUTPUT_SCHEMA_TOOLSETS = frozenset({"jobs"})
# Characters of folder paths named in the instructions; further folders are counted, not named.
MAX_FOLDER_CHARS = 120

# The server's own mark (three lanes, one server); each toolset carries its own (Toolset.mark), and
# one without gets a plain disc. 16x16 single-path SVGs: small enough that an icon on every tool
# costs less than a sentence, drawn without text, fonts or scripts.
SERVER_MARK = ("M1 2h14v3H1zm0 4.5h14v3H1zM1 11h14v3H1z", "#64748b")
PLAIN_MARK = ("M8 1a7 7 0 1 0 0 14A7 7 0 0 0 8 1z", "#64748b")


def _data_uri(path: str, colour: str) -> str:
    svg = f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><path d='{path}' fill='{colour}'/></svg>"
    # Only what RFC 3986 forbids in a URI is escaped; quotes are single, so none needs escaping.
    for char, escaped in (("%", "%25"), ("<", "%3C"), (">", "%3E"), ("#", "%23"), (" ", "%20")):
        svg = svg.replace(char, escaped)
    return "data:image/svg+xml," + svg


def icon(mark: tuple[str, str] = SERVER_MARK) -> Icon:
    """An icon from a mark (an SVG path and its colour); the server's by default."""
    path, colour = mark
    return Icon(src=_data_uri(path, colour))


def one_paragraph(text: str | None) -> str:
    """A docstring as the single line a host shows: no indentation, no line breaks."""
    return " ".join(inspect.cleandoc(text or "").split())


MetaOf: TypeAlias = Callable[[Callable[..., Any]], dict[str, Any] | None]


def build_tool(spec: ToolSpec, extra_meta: MetaOf | None = None) -> Tool:
    """The SDK's tool for ``spec``, with the advertised parts rewritten (validation is untouched).
    ``extra_meta(fn)``: more ``_meta`` for it (the job viewer's link, for instance)."""
    meta: dict[str, Any] = {ALWAYS_LOAD_META_KEY: True} if spec.name in ALWAYS_LOAD else {}
    meta.update((extra_meta(spec.fn) if extra_meta is not None else None) or {})
    tool = Tool.from_function(
        spec.fn,
        name=spec.name,
        title=spec.title,
        description=one_paragraph(spec.fn.__doc__),
        annotations=spec.annotations,
        icons=[icon(spec.mark or PLAIN_MARK)],
        meta=meta or None,
    )
    tool.parameters = compact_input_schema(tool.parameters)
    schema = tool.fn_metadata.output_schema
    # Read live by the SDK (FuncMetadata); with none advertised, results are passed through as built.
    tool.fn_metadata.output_schema = (
        compact_output_schema(schema)
        if schema is not None and spec.toolset in OUTPUT_SCHEMA_TOOLSETS
        else None
    )
    return tool


def build_tools(specs: Iterable[ToolSpec], extra_meta: MetaOf | None = None) -> list[Tool]:
    """Tools in name order: the same list, byte for byte, whatever order the toolsets were named in."""
    return [build_tool(spec, extra_meta) for spec in sorted(specs, key=lambda s: s.name)]


def instructions(
    toolsets: Sequence[tuple[str, str]],
    *,
    folders: Sequence[Path],
    output_dir: Path,
    dedup_window_s: float,
    read_only: bool,
) -> str:
    """What every tool shares, said once: which toolset does what, where files may be read, and how
    a long job is picked up again. ``toolsets`` is (id, what it does) for each enabled toolset;
    ``folders`` are the allowed folders, the first of which relative paths start from."""
    lines = ["Tools by prefix:"]
    lines += [f"- {toolset_id}_*: {what}" for toolset_id, what in toolsets]
    readable = [f for f in folders if f != output_dir]
    if readable:
        # Every path costs tokens on every turn: name folders up to a length, then count the rest.
        shown = [str(readable[0])]
        for folder in readable[1:]:
            if sum(len(s) + 2 for s in shown) + len(str(folder)) > MAX_FOLDER_CHARS:
                break
            shown.append(str(folder))
        rest = len(readable) - len(shown)
        more = f" or {rest} more folders" if rest else ""
        lines.append(
            f"Files: paths must be inside {', '.join(shown)}{more} (relative to the first) or the output "
            f"folder {output_dir}."
        )
    else:
        lines.append(f"Files: paths must be inside the output folder {output_dir}.")
    lines.append(
        "Past wait_s seconds (0–600, default 45) a job tool returns "
        "status 'running' and a job_id; jobs_wait resumes it, even after a restart, "
        "without paying again. Lists page: pass next_cursor back as cursor."
    )
    if read_only:
        lines.append("Read-only: tools that spend, create or delete are not offered.")
    else:
        lines.append(
            f"Paid tools report their cost; an identical paid call within {dedup_window_s:g} s "
            "reuses the earlier job unless new_job is true."
        )
    return "\n".join(lines)
