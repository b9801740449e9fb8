"""Which tools one request sees: the connection's profile.

The process registers the toolsets its settings enable (MEDIAMUX_TOOLSETS, or every provider with a
key) and, under MEDIAMUX_READ_ONLY, only the tools that neither spend, create nor delete. Over HTTP a
connection can narrow that further, the way the GitHub MCP server does:

* by its URL: ``/mcp/muapi+jobs`` (toolsets joined by ``+``; ``all`` for every one), with
  ``/readonly`` after it or alone (``/mcp/readonly``);
* by headers: ``X-MCP-Toolsets: muapi,jobs`` and ``X-MCP-Readonly: true`` (empty, false, f, no, n, 0
  and off mean false, anything else true).

Every selection only narrows: a path and a header that both name toolsets give the toolsets in both,
and a read-only flag anywhere makes the connection read-only. The HTTP layer
(``mediamux.server.http``) reads the request, checks the names and puts the profile in a context
variable for the request; the server asks :func:`hidden` for each tool in ``tools/list`` and before
``tools/call``. Stdio and in-process clients have no profile: they see every registered tool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from mediamux.config import toolset_ids

MCP_PATH: Final = "/mcp"
ALL: Final = "all"
READONLY_SEGMENT: Final = "readonly"
TOOLSETS_HEADER: Final = "x-mcp-toolsets"
READONLY_HEADER: Final = "x-mcp-readonly"
# Words that switch a header flag off, as the GitHub MCP server reads X-MCP-Readonly.
FALSE_WORDS: Final = frozenset({"", "false", "f", "no", "n", "0", "off"})
MAX_NAMES = 16  # more names than toolsets exist is a mistake, not a profile


@dataclass(frozen=True)
class Profile:
    """``toolsets`` None: every toolset the process enables. Toolsets are kept in the catalog's order,
    so two spellings of one selection (``muapi+jobs``, ``jobs+muapi``) are the same profile."""

    toolsets: tuple[str, ...] | None = None
    read_only: bool = False

    def path(self, base: str) -> str:
        """The URL that opens this profile, e.g. ``/mcp/muapi+jobs/readonly``."""
        parts = [base]
        if self.toolsets is not None:
            parts.append("+".join(self.toolsets))
        if self.read_only:
            parts.append(READONLY_SEGMENT)
        return "/".join(parts)

    def describe(self) -> str:
        chosen = "every toolset" if self.toolsets is None else "toolsets " + ", ".join(self.toolsets)
        return chosen + (", read-only" if self.read_only else "")


FULL: Final = Profile()


class ProfileError(Exception):
    """A profile the request names that this server cannot serve; ``status`` is the HTTP answer."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _flag(value: str) -> bool:
    return value.strip().lower() not in FALSE_WORDS


def _names(raw: Iterable[str], enabled: Sequence[str], where: str, status: int) -> tuple[str, ...] | None:
    names = [n.strip().lower() for n in raw if n.strip()]
    if not names:
        raise ProfileError(
            status, "invalid_profile", f"{where} names no toolset; choose from {_choices(enabled)}"
        )
    if len(names) > MAX_NAMES:
        raise ProfileError(
            status, "invalid_profile", f"{where} names {len(names)} toolsets; there are {len(toolset_ids())}"
        )
    unknown = [n for n in dict.fromkeys(names) if n != ALL and n not in toolset_ids()]
    if unknown:
        raise ProfileError(
            status,
            "unknown_toolset",
            f"{where} names unknown toolset(s) {', '.join(repr(n[:40]) for n in unknown[:4])}; "
            f"choose from {_choices(enabled)}",
        )
    if ALL in names:
        return None
    disabled = [n for n in dict.fromkeys(names) if n not in enabled]
    if disabled:
        raise ProfileError(
            status,
            "toolset_not_enabled",
            f"{where} names {', '.join(disabled)}, which this server does not enable (MEDIAMUX_TOOLSETS, or no "
            f"API key for it); choose from {_choices(enabled)}",
        )
    chosen = tuple(t for t in enabled if t in names)
    return None if len(chosen) == len(enabled) else chosen


def _choices(enabled: Sequence[str]) -> str:
    return ", ".join([*enabled, ALL])


def requested(
    rest: str, headers: Iterable[tuple[bytes, bytes]], enabled: Sequence[str], *, base: str
) -> Profile | None:
    """The profile a request names by the path after ``base`` (``rest``: "", "/muapi+jobs",
    "/readonly", …) and its headers; None when it names none. Raises ProfileError: 404 for a path that
    names no profile of this server, 400 for such a header."""
    toolsets: tuple[str, ...] | None = None
    read_only = False
    named = False

    segments = [s for s in rest.split("/") if s]
    if segments and segments[-1].lower() == READONLY_SEGMENT:
        read_only, named = True, True
        segments.pop()
    if len(segments) > 1:
        raise ProfileError(
            404,
            "unknown_profile",
            f"no such MCP endpoint {base}{rest[:120]}; use {base}, {base}/<toolset>+<toolset>, and /readonly "
            f"after either (toolsets: {_choices(enabled)})",
        )
    if segments:
        named = True
        raw = segments[0].replace(",", "+").split("+")
        toolsets = _names(raw, enabled, f"the URL path {base}/{segments[0][:80]}", 404)

    for key, value in headers:
        if key == TOOLSETS_HEADER.encode():
            text = value.decode("latin-1")
            if not text.replace(",", "").strip():
                continue  # an empty list selects nothing, as with GitHub's header: the default applies
            from_header = _names(text.split(","), enabled, "the X-MCP-Toolsets header", 400)
            named = True
            if from_header is not None:
                if toolsets is None:
                    toolsets = from_header
                else:
                    both = tuple(t for t in toolsets if t in from_header)
                    if not both:
                        raise ProfileError(
                            400,
                            "invalid_profile",
                            f"the URL path selects {', '.join(toolsets)} and X-MCP-Toolsets "
                            f"{', '.join(from_header)}: no toolset in common (each can only narrow the other)",
                        )
                    toolsets = both
        elif key == READONLY_HEADER.encode():
            named = True
            read_only = read_only or _flag(value.decode("latin-1"))
    return Profile(toolsets, read_only) if named else None


# -- the request's profile -------------------------------------------------------------------------

# Set by the HTTP layer for each request it hands to the SDK; the SDK runs the request's handler in
# a copy of the context the request arrived in, so the value reaches tools/list and tools/call.
_current: ContextVar[Profile | None] = ContextVar("mediamux_profile", default=None)


def current() -> Profile | None:
    return _current.get()


@contextmanager
def serving(profile: Profile | None) -> Iterator[None]:
    token = _current.set(profile)
    try:
        yield
    finally:
        _current.reset(token)


def hidden(toolset: str | None, read_only_tool: bool, *, base: str = MCP_PATH) -> str | None:
    """Why the request being served may not see a registered tool of ``toolset``, or None if it may."""
    profile = _current.get()
    if profile is None:
        return None
    if profile.toolsets is not None and toolset not in profile.toolsets:
        return (
            f"it belongs to the {toolset} toolset and this connection offers {profile.describe()} "
            f"(opened at {profile.path(base)} or with X-MCP-Toolsets); connect at "
            f"{Profile((toolset,) if toolset else None, profile.read_only).path(base)} or {base} for it"
        )
    if profile.read_only and not read_only_tool:
        return (
            "it spends money, creates or deletes, and this connection is read-only (/readonly or "
            f"X-MCP-Readonly); connect at {Profile(profile.toolsets).path(base)} for it"
        )
    return None
