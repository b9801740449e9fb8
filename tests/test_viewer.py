"""The job viewer's MCP side: which tools link it, how the ``ui://`` resource is served, what its HTML holds.

How it looks and behaves in a browser is tests/test_viewer_browser.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from mediamux.apps.viewer import MEDIA_ORIGINS, VIEWER_URI, document_csp, viewer_html
from mediamux.resources import MAX_INLINE_OUTPUT_BYTES
from mediamux.server.app import MediamuxServer

# Every tool whose result is a job, and only those.
JOB_TOOLS = {
    "jobs_cancel",
    "jobs_get",
    "jobs_wait",
    "mixpeek_index_file",
    "mixpeek_index_url",
    "muapi_generate",
    "museai_align",
    "museai_detect_colors",
    "museai_detect_faces",
    "museai_detect_objects",
    "museai_detect_sounds",
    "museai_detect_text",
    "museai_transcribe",
    "muzaic_create_soundtrack",
    "muzaic_generate_music",
    "muzaic_regenerate",
}
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})


@pytest.mark.both_eras
async def test_every_job_tool_and_only_job_tools_name_the_viewer(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    async with Client(make_server(MEDIAMUX_TOOLSETS="all"), mode=era) as client:  # type: ignore[arg-type]
        tools = (await client.list_tools()).tools
    linked = {t.name: t.meta for t in tools if t.meta and "ui" in t.meta}

    assert set(linked) == JOB_TOOLS
    for meta in linked.values():
        # The current key, and the flat one that hosts built on the draft still read (beside other
        # hosts' keys, such as Claude Code's always-load mark on the core job tools).
        assert meta["ui"] == {"resourceUri": VIEWER_URI} and meta["ui/resourceUri"] == VIEWER_URI


@pytest.mark.both_eras
async def test_the_viewer_is_an_mcp_app_resource_with_a_strict_declared_policy(
    make_server: Callable[..., MediamuxServer], era: str
) -> None:
    async with Client(make_server(), mode=era, extensions=[APPS]) as client:  # type: ignore[arg-type]
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        contents = (await client.read_resource(VIEWER_URI)).contents

    assert listed[VIEWER_URI].mime_type == APP_MIME_TYPE
    assert len(contents) == 1
    view = contents[0]
    assert view.mime_type == APP_MIME_TYPE
    assert view.text == viewer_html()  # type: ignore[union-attr]
    # Media origins only: no connect, frame or base-uri domains, so a host allows no fetch and no frame.
    assert view.meta == {"ui": {"csp": {"resourceDomains": list(MEDIA_ORIGINS)}, "prefersBorder": True}}
    assert all(origin.startswith("https://") and origin.count("/") == 2 for origin in MEDIA_ORIGINS)


async def test_the_server_advertises_the_apps_extension(make_server: Callable[..., MediamuxServer]) -> None:
    async with Client(make_server(), mode="auto") as client:
        extensions = client.server_capabilities.extensions or {}
    assert EXTENSION_ID in extensions


class _Document(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.data: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = dict(attrs).get("id") or tag

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.data[self._open] = self.data.get(self._open, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


@pytest.mark.unit
def test_the_viewer_html_is_self_contained_and_carries_the_declared_policy() -> None:
    html = viewer_html()
    doc = _Document()
    doc.feed(html)

    # Nothing is loaded from anywhere: no src or href, no stylesheet link, no @import, no url().
    assert [(tag, attrs) for tag, attrs in doc.tags if "src" in attrs or "href" in attrs] == []
    assert not [tag for tag, _ in doc.tags if tag in ("link", "iframe", "object", "embed", "base")]
    assert "@import" not in html and "url(" not in html and "@font-face" not in html
    # The document enforces the same media origins it declares to the host, and nothing else.
    policy = next(
        attrs["content"]
        for tag, attrs in doc.tags
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    )
    assert policy == document_csp()
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'none'"
    assert directives["img-src"] == directives["media-src"] == " ".join(("data:", *MEDIA_ORIGINS))
    config = json.loads(doc.data["mediamux-config"])
    assert config["mediaOrigins"] == list(MEDIA_ORIGINS)
    assert config["inlineLimit"] == MAX_INLINE_OUTPUT_BYTES
    # Only the policy and the origins list name a URL.
    assert html.count("https://") == 3 * len(MEDIA_ORIGINS)  # img-src, media-src, settings
    assert "http://" not in html
