"""One spelling per origin, shared by the transport (may a redirect keep the key?) and the downloader."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from mediamux.files import download_output
from mediamux.providers.transport import ProviderHints, Transport
from mediamux.urls import origin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://API.Example.com/v1/x?q=1", "https://api.example.com:443"),
        ("https://api.example.com.:443/", "https://api.example.com:443"),
        ("http://127.0.0.1:8123/api", "http://127.0.0.1:8123"),
        ("http://localhost/", "http://localhost:80"),
        ("https://bücher.de/", "https://xn--bcher-kva.de:443"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
    ],
)
def test_one_spelling_per_origin(url: str, expected: str) -> None:
    assert origin(httpx2.URL(url)) == expected
    assert origin(httpx2.URL(expected)) == expected  # it parses back to itself


async def test_a_provider_origin_on_ipv6_loopback_is_trusted_for_downloads(tmp_path: Path) -> None:
    """The transport's origin is handed to the downloader as text: it has to parse back."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "image/png"}, content=b"\x89PNG")

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        transport = Transport(
            provider="x", base_url="http://[::1]:9000/api", hints=ProviderHints("X", "X_KEY"), client=client
        )
        saved = await download_output(
            client, "http://[::1]:9000/out/a.png", tmp_path, trusted_origins=[transport.origin]
        )

    assert saved.size_bytes == 4
