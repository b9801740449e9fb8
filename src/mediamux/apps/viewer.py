"""The job viewer: one ``ui://`` MCP App that shows a job's outputs, cost and status.

Every tool that returns a job (``JobResult``) names the viewer in its definition's ``_meta.ui.resourceUri``
(and the flat ``_meta["ui/resourceUri"]`` that hosts built before the key moved still read). A host that
renders MCP Apps loads the view and hands it the tool's result over its postMessage bridge; the view reads
saved outputs back through the host (``resources/read`` of ``mediamux://outputs/…``). Hosts without Apps
ignore ``_meta``: their tool list and results are exactly what they were, and the tool list stays one
list for every client, so it can be cached and compared.

The view makes no network request of its own. Its Content-Security-Policy is declared twice from one
source: in the resource's ``_meta.ui.csp`` for the host to enforce, and in the document itself, so a host
that enforces less still cannot let it fetch, frame or post anywhere. Provider URLs are used only for
outputs too large to read inline, and only from the providers' media origins listed here.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Annotated, Any, Final, get_args, get_origin

from mcp.server.apps import Apps, ResourceCsp

from mediamux import __version__
from mediamux.files.outputs import MAX_INLINE_OUTPUT_BYTES

VIEWER_URI: Final = "ui://mediamux/job-viewer.html"

# Where providers host generated media (see the provider notes): MuAPI's CDN, Muzaic's result files and
# muse.ai's CDN. The emulators' loopback URLs are never needed: the sandbox's outputs are always saved
# and small enough to read inline.
MEDIA_ORIGINS: Final = (
    "https://cdn.muapi.ai",
    "https://api.muzaic.ai",
    "https://m10.muzaic.ai",
    "https://cdn.muse.ai",
)

_CSP_PLACEHOLDER = "__MEDIAMUX_CSP__"
_CONFIG_PLACEHOLDER = "__MEDIAMUX_CONFIG__"


def document_csp() -> str:
    """The policy the view enforces on itself: no stricter than a host needs, never looser than declared.

    Scripts and styles are the document's own inline ones (``'self'`` and ``'unsafe-inline'`` as the
    spec's host policy has them, so a host's own additions keep working); media only from ``data:`` URLs
    (outputs read through the host) and the declared provider origins; nothing else at all.
    """
    media = " ".join(("data:", *MEDIA_ORIGINS))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self' 'unsafe-inline'",
            "style-src 'self' 'unsafe-inline'",
            f"img-src {media}",
            f"media-src {media}",
            "connect-src 'none'",
            "font-src 'none'",
            "frame-src 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


@cache
def viewer_html() -> str:
    """The view's HTML (package data), with its policy and settings filled in."""
    template = resources.files("mediamux.apps").joinpath("viewer.html").read_text(encoding="utf-8")
    settings = {
        "mediaOrigins": list(MEDIA_ORIGINS),
        "inlineLimit": MAX_INLINE_OUTPUT_BYTES,
        "version": __version__,
    }
    # Inside <script type="application/json">: "<" escaped so no value can close the element.
    data = json.dumps(settings, separators=(",", ":")).replace("<", "\\u003c")
    if template.count(_CSP_PLACEHOLDER) != 1 or template.count(_CONFIG_PLACEHOLDER) != 1:
        raise RuntimeError("viewer.html must hold each placeholder exactly once")
    return template.replace(_CSP_PLACEHOLDER, document_csp()).replace(_CONFIG_PLACEHOLDER, data)


def extension() -> Apps:
    """The Apps extension holding the viewer; it also advertises ``io.modelcontextprotocol/ui``."""
    apps = Apps()
    apps.add_html_resource(
        VIEWER_URI,
        viewer_html(),
        name="job_viewer",
        title="Job viewer",
        description="Shows a mediamux job: image, audio and video outputs, transcript or segments, cost "
        "and status (an MCP App for hosts that render them)",
        # No connect or frame domains: the view reaches the server only through the host.
        csp=ResourceCsp(resource_domains=list(MEDIA_ORIGINS)),
        prefers_border=True,
    )
    return apps


def returns_job(fn: Callable[..., Any]) -> bool:
    """Whether a tool's declared output is a job (``Annotated[CallToolResult, JobResult[...]]``)."""
    # Imported here: the extension is made before a stdio server's first answer, the tools after it.
    from mediamux.jobs.models import JobResult

    annotation = inspect.signature(fn, eval_str=True).return_annotation
    if get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(arg, type) and issubclass(arg, JobResult) for arg in get_args(annotation)[1:])


def tool_meta(fn: Callable[..., Any]) -> dict[str, Any] | None:
    """The ``_meta`` that links a job tool to the viewer; None for every other tool."""
    if not returns_job(fn):
        return None
    return {"ui": {"resourceUri": VIEWER_URI}, "ui/resourceUri": VIEWER_URI}
