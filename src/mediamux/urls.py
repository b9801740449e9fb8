"""URL facts shared by the provider transport and the output downloader."""

from __future__ import annotations

from typing import Final

import httpx2

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def origin(url: httpx2.URL) -> str:
    """``scheme://host:port`` of a URL, in one spelling per origin.

    The host is ASCII (punycode), lower-case and without the trailing dot of an absolute name, and
    the default port is written out, so two URLs reach the same origin exactly when these strings
    are equal: the transport decides by it whether a redirect may keep the API key, the downloader
    whether a URL is a configured provider's own. IPv6 hosts keep their brackets, so the string
    parses back as a URL (the downloader parses the transport's origin).
    """
    scheme = url.scheme.lower()
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{url.port or DEFAULT_PORTS.get(scheme, 0)}"
