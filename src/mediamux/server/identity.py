"""Who is asking, read from the SDK's auth context for mediamux.principals (which cannot import mcp).

The SDK's auth middleware leaves the verified access token in a context variable for the request;
our verifiers (mediamux.server.auth) put the principal they derived in the token's claims.
"""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import get_access_token

from mediamux import principals


def signed_in() -> tuple[str, frozenset[str]] | None:
    token = get_access_token()
    if token is None:
        return None
    found = (token.claims or {}).get(principals.PRINCIPAL_CLAIM)
    principal = str(found) if found else (token.subject or token.client_id)
    return principal, frozenset(token.scopes)


principals.install(signed_in)
