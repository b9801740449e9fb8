"""The job viewer, an MCP App, as a person sees it: rendered by a real headless Chromium.

Each test runs real jobs against the sandbox through the SDK client (declaring MCP Apps support, as a host
does), takes the job tool's ``_meta.ui.resourceUri`` from ``tools/list``, reads that ``ui://`` resource, and
hosts it the way SEP-1865 describes: ``tests/fixtures/apps_host.html`` puts the view in a sandboxed iframe on
another origin, serves it with the Content-Security-Policy a host builds from the resource's ``_meta.ui.csp``
(the spec's construction), answers ``ui/initialize``, sends the tool input and the actual ``CallToolResult``,
and proxies the view's ``resources/read`` to the real server. Screenshots land in ``.interop/viewer/``.

Driver: Playwright's Python package drives the system Chromium (``executable_path``; it never downloads a
browser). It was chosen over a hand-written DevTools client because the view lives in a cross-origin iframe,
which Chromium runs out of process: Playwright attaches to such frames, routes their requests and bounds
every wait, which a small CDP client would have to rebuild (target auto-attach, per-frame sessions).

Skipped only where no ``chromium`` is installed; under CI (``CI=true``, where ``.ci/run`` installs it) a
missing browser fails instead.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPError
from playwright.async_api import Browser, Frame, Page, async_playwright

from mediamux.sandbox.media import wav_sequence_bytes
from mediamux.server.app import MediamuxServer

CHROMIUM = shutil.which("chromium")
IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / ".interop" / "viewer"
HOST_PAGE = Path(__file__).parent / "fixtures" / "apps_host.html"
HOST_URL = "https://host.test/"
VIEW_ORIGIN = "https://view.test"
WAIT_MS = 15_000  # any one browser wait
VIEWPORT_WIDTH = 720
TEST_TIMEOUT_S = 90

IMAGE = {"endpoint": "flux-schnell-image", "params": {"prompt": "a heron"}}
MUSIC = {"duration": 6}
VIDEO = {
    "endpoint": "kling-v2.1-master-t2v",
    "params": {"prompt": "rain on a window", "duration": 5},
    "wait_s": 0,
}
SPEECH_WAV = wav_sequence_bytes([(1.0, 440.0), (0.5, None), (1.0, 250.0), (0.5, None)])

pytestmark = [
    pytest.mark.providers("muapi", "muzaic", "museai"),
    pytest.mark.skipif(
        CHROMIUM is None and not IN_CI,
        reason="no `chromium` on PATH: install Debian's chromium package to render the viewer",
    ),
]

# Collects every CSP violation in every frame (injected by DevTools, so the policy cannot block it).
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__csp.push({ uri: e.blockedURI, directive: e.effectiveDirective }));
"""

# WCAG contrast of an element's text against the first opaque background behind it.
CONTRAST = """
(selector) => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const ch = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
  };
  const node = document.querySelector(selector);
  if (!node) return null;
  let bg = null;
  for (let n = node; n && !bg; n = n.parentElement) {
    const c = parse(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) bg = c.slice(0, 3);
  }
  const fg = parse(getComputedStyle(node).color).slice(0, 3);
  const [a, b] = [lum(fg), lum(bg || [255, 255, 255])].sort((x, y) => y - x);
  return { ratio: (a + 0.05) / (b + 0.05), background: lum(bg || [255, 255, 255]) };
}
"""
READABLE = ["h1", ".eyebrow", "#status", ".facts dt", ".facts dd", "figcaption", ".foot"]


def spec_host_csp(csp: dict[str, list[str]]) -> str:
    """The policy SEP-1865 ("CSP Construction from Metadata") tells a host to build from ``_meta.ui.csp``."""
    resources = " ".join(csp.get("resourceDomains", []))
    connect = " ".join(csp.get("connectDomains", []))
    frames = " ".join(csp.get("frameDomains", [])) or "'none'"
    base = " ".join(csp.get("baseUriDomains", [])) or "'self'"
    return "; ".join(
        d.strip()
        for d in (
            "default-src 'none'",
            f"script-src 'self' 'unsafe-inline' {resources}",
            f"style-src 'self' 'unsafe-inline' {resources}",
            f"connect-src 'self' {connect}",
            f"img-src 'self' data: {resources}",
            f"font-src 'self' {resources}",
            f"media-src 'self' data: {resources}",
            f"frame-src {frames}",
            "object-src 'none'",
            f"base-uri {base}",
        )
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def wav_seconds(data: bytes) -> float:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "not a WAV"
    byte_rate = struct.unpack("<I", data[28:32])[0]
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        if kind == b"data":
            return size / byte_rate
        at += 8 + size
    raise AssertionError("WAV without a data chunk")


@pytest.fixture
async def apps_client(make_server: Callable[..., MediamuxServer]) -> AsyncIterator[Client]:
    ui = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
    async with Client(make_server(), mode="legacy", extensions=[ui]) as client:
        yield client


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("CI=true but no `chromium` on PATH: .ci/run installs Debian's chromium package")
    async with async_playwright() as playwright:
        # No user gesture in a headless run: let the test start playback to prove the audio plays.
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"], timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


class Hosted:
    """One tool result rendered in the test host: the page, the view's frame, and what was seen."""

    def __init__(
        self, page: Page, frame: Frame, result: dict[str, Any], problems: list[str], forwarded: list[Any]
    ) -> None:
        self.page, self.frame, self.result, self.problems = page, frame, result, problems
        self.forwarded = forwarded  # (method, params, answer) for each request the view sent the server

    async def text(self, selector: str) -> str:
        return (await self.frame.locator(selector).inner_text(timeout=WAIT_MS)).strip()

    async def readable(self) -> dict[str, float]:
        ratios = {}
        for selector in READABLE:
            found = await self.frame.evaluate(CONTRAST, selector)
            if found is not None:
                ratios[selector] = round(found["ratio"], 2)
        return ratios

    async def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / name
        # Chromium paints a cross-origin frame only inside the viewport, so a full-page capture would cut
        # the view off: grow the viewport to the page first.
        height = await self.page.evaluate("() => Math.ceil(document.body.getBoundingClientRect().height)")
        await self.page.set_viewport_size({"width": VIEWPORT_WIDTH, "height": height})
        await self.page.screenshot(path=str(path), timeout=WAIT_MS)
        return path


async def render(
    client: Client,
    browser: Browser,
    tool: str,
    arguments: dict[str, Any],
    *,
    theme: str = "light",
    variables: dict[str, str] | None = None,
) -> Hosted:
    # What a host does: find the tool's view in tools/list, read it, call the tool.
    listed = {t.name: t for t in (await client.list_tools()).tools}
    uri = (listed[tool].meta or {})["ui"]["resourceUri"]
    view = (await client.read_resource(uri)).contents[0]
    assert view.mime_type == APP_MIME_TYPE
    html = view.text  # type: ignore[union-attr]
    csp = spec_host_csp((view.meta or {})["ui"]["csp"])
    called = await client.call_tool(tool, arguments)
    assert not called.is_error, called.content
    result = called.model_dump(mode="json", by_alias=True, exclude_none=True)

    page = await browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": 480}, device_scale_factor=2)
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    await page.add_init_script(CSP_PROBE)

    async def serve(route: Any) -> None:
        url = route.request.url
        if url == HOST_URL:
            await route.fulfill(body=HOST_PAGE.read_text(encoding="utf-8"), content_type="text/html")
        elif url.startswith(VIEW_ORIGIN + "/"):
            await route.fulfill(body=html, content_type="text/html", headers={"Content-Security-Policy": csp})
        else:  # the view is self-contained: no CDN, no fonts, no provider URL for a sandbox job
            problems.append(f"unexpected request: {url}")
            await route.abort()

    await page.route("**/*", serve)

    forwarded: list[Any] = []

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            if method == "resources/read":
                answer: Any = await client.read_resource(params["uri"])
            else:
                answer = await client.call_tool(params["name"], params.get("arguments") or {})
        except MCPError as exc:
            forwarded.append((method, params, exc))
            return {"error": {"code": exc.code, "message": exc.message}}
        forwarded.append((method, params, answer))
        return {"result": answer.model_dump(mode="json", by_alias=True, exclude_none=True)}

    await page.expose_function("mcpForward", forward)
    await page.goto(HOST_URL)
    await page.evaluate(
        "window.startView",
        {
            "viewUrl": f"{VIEW_ORIGIN}/{uri.removeprefix('ui://')}",
            "toolName": tool,
            "toolInput": arguments,
            "toolResult": result,
            "theme": theme,
            "variables": variables,
        },
    )
    frame = await (await page.wait_for_selector("iframe")).content_frame()
    assert frame is not None
    await frame.wait_for_url(f"{VIEW_ORIGIN}/**")
    await frame.wait_for_function(
        "() => document.getElementById('app').getAttribute('aria-busy') === 'false'"
    )
    return Hosted(page, frame, result, problems, forwarded)


async def read_output(client: Client, uri: str) -> bytes:
    return base64.b64decode((await client.read_resource(uri)).contents[0].blob)  # type: ignore[union-attr]


async def test_a_completed_image_job_shows_the_image_at_its_size_with_cost_and_status(
    apps_client: Client, browser: Browser
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        hosted = await render(apps_client, browser, "muapi_generate", IMAGE)
        saved = hosted.result["structuredContent"]["result"]["saved"][0]
        width, height = png_size(await read_output(apps_client, saved["uri"]))

        image = await hosted.frame.wait_for_function(
            "() => { const i = document.querySelector('figure img');"
            " return i && i.complete && i.naturalWidth > 0 ? i : null; }"
        )
        shown = await image.evaluate(
            "i => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 22), alt: i.alt,"
            " box: i.getBoundingClientRect().width })"
        )
        assert (shown["w"], shown["h"]) == (width, height)
        assert shown["src"] == "data:image/png;base64,"
        assert shown["alt"] == "Generated image: a heron"
        assert shown["box"] > 0
        assert await hosted.text("#status") == "completed"
        assert await hosted.text("#title") == "flux-schnell-image"
        assert "$0.003" in await hosted.text("#facts")
        assert hosted.result["structuredContent"]["job_id"] in await hosted.text("#foot")
        assert f"{width} × {height}" in await hosted.text("figcaption")

        # The saved file came through the host bridge, and the view sized its frame to its content.
        log = await hosted.page.evaluate("window.hostLog")
        reads = [m["params"]["uri"] for m in log if m.get("method") == "resources/read"]
        assert reads == [saved["uri"]]
        assert any(m.get("method") == "ui/notifications/size-changed" for m in log)
        body = await hosted.frame.evaluate("() => Math.ceil(document.body.getBoundingClientRect().height)")
        frame_height = await hosted.page.evaluate("document.querySelector('iframe').clientHeight")
        assert abs(frame_height - body) <= 2, (frame_height, body)

        ratios = await hosted.readable()
        assert set(ratios) == set(READABLE)
        assert min(ratios.values()) >= 4.5, ratios
        await hosted.screenshot("image-job.png")

        # The view ran without a single error or violation, under policies that are really enforced:
        # the host's (from _meta.ui.csp) and the document's own both refuse an undeclared origin.
        assert hosted.problems == []
        assert await hosted.frame.evaluate("() => window.__csp") == []
        blocked = await hosted.frame.evaluate(
            """() => new Promise((resolve) => {
                 const probe = new Image();
                 probe.onerror = () => resolve(window.__csp.map((v) => v.directive));
                 probe.onload = () => resolve("loaded");
                 probe.src = "https://elsewhere.test/pixel.png";
               })"""
        )
        assert blocked == ["img-src", "img-src"]


async def test_an_audio_job_gets_a_player_that_plays_with_tokens_as_its_cost(
    apps_client: Client, browser: Browser
) -> None:
    host_background = "rgb(250, 247, 240)"
    with anyio.fail_after(TEST_TIMEOUT_S):
        hosted = await render(
            apps_client,
            browser,
            "muzaic_generate_music",
            MUSIC,
            variables={"--color-background-primary": host_background},
        )
        saved = hosted.result["structuredContent"]["result"]["saved"][0]
        seconds = wav_seconds(await read_output(apps_client, saved["uri"]))

        audio = await hosted.frame.wait_for_function(
            "() => { const a = document.querySelector('figure audio');"
            " return a && a.readyState >= 1 && a.duration > 0 ? a : null; }"
        )
        state = await audio.evaluate(
            "a => ({ src: a.src.slice(0, 11), duration: a.duration, error: a.error && a.error.code,"
            " controls: a.controls, label: a.getAttribute('aria-label') })"
        )
        assert state["src"] == "data:audio/"
        assert state["duration"] == pytest.approx(seconds, abs=0.05)
        assert state["error"] is None
        assert state["controls"] is True
        assert state["label"].startswith("Audio output 1")
        await audio.evaluate("a => a.play()")
        await hosted.frame.wait_for_function("() => document.querySelector('figure audio').currentTime > 0")
        await audio.evaluate("a => { a.pause(); a.currentTime = 0; }")

        assert await hosted.text("#status") == "completed"
        assert await hosted.text("#provider") == "Muzaic"
        assert await hosted.text("#title") == "generate music"
        assert "6 tokens" in await hosted.text("#facts")
        # The host's theme variables reach the view.
        body = await hosted.frame.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert body == host_background
        ratios = await hosted.readable()
        assert min(ratios.values()) >= 4.5, ratios
        await hosted.screenshot("audio-job.png")
        assert await hosted.frame.evaluate("() => window.__csp") == []
        assert hosted.problems == []


async def test_the_viewer_follows_a_dark_host_theme_and_stays_readable(
    apps_client: Client, browser: Browser
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        hosted = await render(apps_client, browser, "muapi_generate", IMAGE, theme="dark")
        await hosted.frame.wait_for_function(
            "() => { const i = document.querySelector('figure img'); return i && i.naturalWidth > 0; }"
        )
        ratios = await hosted.readable()
        assert min(ratios.values()) >= 4.5, ratios
        background = await hosted.frame.evaluate(CONTRAST, "body")
        assert background["background"] < 0.05, "the dark theme kept a light background"
        await hosted.screenshot("image-job-dark.png")
        assert hosted.problems == []


async def test_a_transcription_job_shows_its_transcript(
    apps_client: Client, browser: Browser, files_dir: Path
) -> None:
    (files_dir / "talk.wav").write_bytes(SPEECH_WAV)
    with anyio.fail_after(TEST_TIMEOUT_S):
        hosted = await render(apps_client, browser, "museai_transcribe", {"path": "talk.wav"})
        transcript = hosted.result["structuredContent"]["result"]["text"]

        assert transcript
        assert await hosted.text("#text h2") == "Transcript"
        assert await hosted.text(".transcript") == transcript
        assert await hosted.frame.locator("#outputs").is_hidden()
        assert await hosted.text("#provider") == "muse.ai"
        assert await hosted.text("#status") == "completed"
        ratios = await hosted.readable()
        assert min(ratios.values()) >= 4.5, ratios
        await hosted.screenshot("transcript-job.png")
        assert hosted.problems == []


async def test_a_running_job_can_be_checked_again_from_the_view(
    apps_client: Client, browser: Browser
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        hosted = await render(apps_client, browser, "muapi_generate", VIDEO)
        job_id = hosted.result["structuredContent"]["job_id"]
        status = hosted.result["structuredContent"]["status"]
        assert status in ("queued", "running")
        assert await hosted.text("#status") == status
        assert await hosted.text("#title") == VIDEO["endpoint"]  # from the tool input: no result yet
        assert "jobs_wait" in await hosted.text("#message")  # the job's own note says how to resume
        await hosted.screenshot("running-job.png")

        await hosted.frame.get_by_role("button", name="Check again").click()
        await hosted.frame.wait_for_function("() => !document.getElementById('refresh').disabled")
        calls = [(params, answer) for method, params, answer in hosted.forwarded if method == "tools/call"]
        assert [params for params, _ in calls] == [{"name": "jobs_get", "arguments": {"job_id": job_id}}]
        answer = calls[0][1]
        assert answer.structured_content["job_id"] == job_id
        assert await hosted.text("#status") == answer.structured_content["status"].replace("_", " ")
        assert hosted.problems == []
