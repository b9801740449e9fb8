"""Who is asking: the principal a request acts for, and what its token lets it do.

Over HTTP with sign-in (OAuth or named static tokens) the SDK's auth middleware puts the verified
token in a context variable for the request; everything that keeps per-person state (jobs, the
duplicate guard, outputs, the ledger, budgets) asks here. Stdio, token-less loopback and the single
``MEDIAMUX_HTTP_TOKEN`` are one person: ``LOCAL``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

LOCAL: Final = "local"
READ_SCOPE: Final = "mediamux:read"
SPEND_SCOPE: Final = "mediamux:spend"
# Where our verifiers leave the principal they derived (subject, tenant claim or token name).
PRINCIPAL_CLAIM: Final = "mediamux/principal"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def principal_of(token: AccessToken | None) -> str:
    if token is None:
        return LOCAL
    found = (token.claims or {}).get(PRINCIPAL_CLAIM)
    return str(found) if found else (token.subject or token.client_id)


def current_principal() -> str:
    """The principal of the request being served, ``LOCAL`` outside an authenticated request."""
    return principal_of(get_access_token())


def can_spend() -> bool:
    """False only for a signed-in request whose token lacks ``mediamux:spend``: such a caller sees
    the read-only catalog. Unauthenticated transports are governed by MEDIAMUX_READ_ONLY alone."""
    token = get_access_token()
    return token is None or SPEND_SCOPE in token.scopes


def folder_name(principal: str) -> str:
    """A file-system-safe, collision-free folder name for a principal's outputs.

    Subjects are arbitrary strings (URLs, emails, UUIDs); a readable prefix helps an operator, and the
    hash keeps two principals that sanitise alike apart.
    """
    if principal == LOCAL:
        return LOCAL
    readable = _SAFE.sub("_", principal)[:32].strip("._") or "p"
    digest = hashlib.sha256(principal.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"
