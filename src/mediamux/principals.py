"""Who is asking: the principal a request acts for, and what its token lets it do.

Over HTTP with sign-in (OAuth or named static tokens) the SDK's auth middleware puts the verified
token in a context variable for the request; everything that keeps per-person state (jobs, the
duplicate guard, outputs, the ledger, budgets) asks here. Stdio, token-less loopback and the single
``MEDIAMUX_HTTP_TOKEN`` are one person: ``LOCAL``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mediamux.errors import MediamuxError

LOCAL: Final = "local"
READ_SCOPE: Final = "mediamux:read"
SPEND_SCOPE: Final = "mediamux:spend"
# Where our verifiers leave the principal they derived (subject, tenant claim or token name).
PRINCIPAL_CLAIM: Final = "mediamux/principal"

# (principal, scopes) of the request being served, or None outside a signed-in request. The server
# layer installs the reader of the SDK's auth context (see mediamux.server.identity): the layers below
# the tools never import mcp.
_signed_in: Callable[[], tuple[str, frozenset[str]] | None] = lambda: None  # noqa: E731


def install(reader: Callable[[], tuple[str, frozenset[str]] | None]) -> None:
    global _signed_in
    _signed_in = reader


def current_principal() -> str:
    """The principal of the request being served, ``LOCAL`` outside an authenticated request."""
    found = _signed_in()
    return LOCAL if found is None else found[0]


def can_spend() -> bool:
    """False only for a signed-in request whose token lacks ``mediamux:spend``: such a caller sees
    the read-only catalog. Unauthenticated transports are governed by MEDIAMUX_READ_ONLY alone."""
    found = _signed_in()
    return found is None or SPEND_SCOPE in found[1]


class AuthConfigError(MediamuxError):
    # A configuration mistake, reported at start-up; the class only matters if a tool ever meets one.
    error_class = "invalid_input"


# -- the principals file --------------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalEntry:
    """One principal of MEDIAMUX_PRINCIPALS_FILE: an optional static token (held as its SHA-256 only),
    its scopes, and an optional budget that overrides MEDIAMUX_PRINCIPAL_BUDGET_USD."""

    name: str
    token_sha256: bytes | None = None
    scopes: tuple[str, ...] = (READ_SCOPE, SPEND_SCOPE)
    budget_usd: float | None = None


@dataclass(frozen=True)
class Principals:
    entries: dict[str, PrincipalEntry] = field(default_factory=dict)

    def budget_for(self, principal: str, default: float | None) -> float | None:
        entry = self.entries.get(principal)
        return entry.budget_usd if entry is not None and entry.budget_usd is not None else default


def load_principals(path: Path | None) -> Principals:
    """Read MEDIAMUX_PRINCIPALS_FILE::

        [principals.alice]
        token_sha256 = "9f86d0…"          # sha256 of the token (or `token = "…"`, kept only hashed)
        scopes = ["mediamux:read", "mediamux:spend"]
        budget_usd = 5.0

    A section without a token only sets that principal's budget (an OAuth subject, for example).
    """
    import tomllib

    if path is None:
        return Principals()
    where = f"MEDIAMUX_PRINCIPALS_FILE ({path})"
    try:
        data = tomllib.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuthConfigError(f"{where} is not valid TOML: {exc}") from None
    table = data.get("principals", {})
    if not isinstance(table, dict):
        raise AuthConfigError(f"{where}: [principals] must be a table of [principals.NAME] sections")
    entries: dict[str, PrincipalEntry] = {}
    digests: set[bytes] = set()
    for name, section in table.items():
        entry = _entry(where, name, section)
        if entry.token_sha256 is not None:
            if entry.token_sha256 in digests:
                raise AuthConfigError(f"{where}: two principals have the same token; give each its own")
            digests.add(entry.token_sha256)
        entries[name] = entry
    return Principals(entries)


def _entry(where: str, name: str, section: Any) -> PrincipalEntry:
    if not isinstance(section, dict):
        raise AuthConfigError(f"{where}: principals.{name} must be a table")
    if name == LOCAL:
        raise AuthConfigError(
            f"{where}: '{LOCAL}' is the name of the stdio/loopback principal; choose another"
        )
    unknown = set(section) - {"token", "token_sha256", "scopes", "budget_usd"}
    if unknown:
        raise AuthConfigError(
            f"{where}: principals.{name} has unknown key(s) {', '.join(sorted(unknown))}; "
            "allowed: token, token_sha256, scopes, budget_usd"
        )
    digest: bytes | None = None
    if "token" in section and "token_sha256" in section:
        raise AuthConfigError(f"{where}: principals.{name} sets both token and token_sha256; keep one")
    if "token" in section:
        token = str(section["token"]).strip()
        if len(token) < 16:
            raise AuthConfigError(f"{where}: principals.{name}.token is shorter than 16 characters")
        digest = hashlib.sha256(token.encode()).digest()
    elif "token_sha256" in section:
        try:
            digest = bytes.fromhex(str(section["token_sha256"]).strip())
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise AuthConfigError(f"{where}: principals.{name}.token_sha256 must be 64 hex digits")
    scopes = section.get("scopes", [READ_SCOPE, SPEND_SCOPE])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise AuthConfigError(f"{where}: principals.{name}.scopes must be a list of strings")
    budget = section.get("budget_usd")
    if budget is not None and (not isinstance(budget, int | float) or budget < 0):
        raise AuthConfigError(f"{where}: principals.{name}.budget_usd must be a number ≥ 0")
    return PrincipalEntry(name, digest, tuple(scopes), float(budget) if budget is not None else None)
