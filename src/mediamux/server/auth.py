"""Sign-in for the HTTP transport: mediamux as an OAuth 2.1 resource server, and static tokens.

Three ways a request can prove who it is, tried in this order:

* ``MEDIAMUX_HTTP_TOKEN``: one shared token, one person (the ``local`` principal, the same one
  stdio uses, so switching transports keeps the jobs);
* ``MEDIAMUX_PRINCIPALS_FILE``: named static tokens for a small team, each its own principal;
* ``MEDIAMUX_AUTH_ISSUER`` + ``MEDIAMUX_AUTH_AUDIENCE``: JWT access tokens from an OAuth
  authorization server, checked against the issuer's JWKS (signature, expiry, issuer, audience =
  this server's resource URL per RFC 8707, scopes). The server then publishes RFC 9728
  protected-resource metadata, and a 401 names it, so a host can start the OAuth flow by itself.

The SDK's pieces do the plumbing (``TokenVerifier``, its authentication backend, the context
variable tools read the token from, the metadata routes); the checks and the words are ours.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx2
import jwt
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from pydantic import AnyHttpUrl
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mediamux.config import Settings
from mediamux.principals import (
    LOCAL,
    PRINCIPAL_CLAIM,
    READ_SCOPE,
    SPEND_SCOPE,
    Principals,
    load_principals,
)

logger = logging.getLogger("mediamux.auth")

# Asymmetric algorithms only: an HMAC "key" from a JWKS would be public, and "none" is no signature.
ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
# Clock skew tolerated on exp/nbf/iat between the issuer and this server.
LEEWAY_S: Final = 30
# An unknown kid refetches the JWKS (the issuer rotated its keys), at most this often, so a stream of
# forged kids cannot make us hammer the issuer.
JWKS_REFRESH_MIN_S: Final = 30.0
# Keys are re-read this often even when every kid is known, so a withdrawn key stops working.
JWKS_MAX_AGE_S: Final = 3600.0
FETCH_TIMEOUT_S: Final = 10.0


# -- verifiers ----------------------------------------------------------------------------------


class StaticTokenVerifier(TokenVerifier):
    """MEDIAMUX_HTTP_TOKEN (the local principal) and the principals file's tokens, compared as
    SHA-256 digests in constant time, every entry checked so timing says nothing about which."""

    def __init__(self, tokens: dict[bytes, tuple[str, tuple[str, ...]]]) -> None:
        self._tokens = tokens

    @classmethod
    def from_settings(cls, settings: Settings, principals: Principals) -> StaticTokenVerifier | None:
        tokens: dict[bytes, tuple[str, tuple[str, ...]]] = {}
        if settings.http_token is not None and settings.http_token.get_secret_value():
            digest = hashlib.sha256(settings.http_token.get_secret_value().encode()).digest()
            tokens[digest] = (LOCAL, (READ_SCOPE, SPEND_SCOPE))
        for entry in principals.entries.values():
            if entry.token_sha256 is not None:
                tokens[entry.token_sha256] = (entry.name, entry.scopes)
        return cls(tokens) if tokens else None

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = hashlib.sha256(token.strip().encode()).digest()
        found: tuple[str, tuple[str, ...]] | None = None
        for digest, who in self._tokens.items():
            if hmac.compare_digest(presented, digest):
                found = who
        if found is None:
            return None
        name, scopes = found
        return AccessToken(
            token=token,
            client_id=name,
            scopes=list(scopes),
            subject=name,
            claims={PRINCIPAL_CLAIM: name},
        )


class JwtVerifier(TokenVerifier):
    """JWT access tokens of one issuer, verified against its JWKS.

    The JWKS location comes from the issuer's metadata (RFC 8414, then OpenID discovery), keys are
    cached by ``kid``, and an unknown ``kid`` refetches them (rate-limited): that is how a rotation
    at the issuer reaches us without a restart.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        principal_claim: str = "sub",
        http: Callable[[], httpx2.AsyncClient] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.principal_claim = principal_claim
        self._http = http or (lambda: httpx2.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False))
        self._now = monotonic
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            logger.info("refused a token signed with %r", alg)
            return None
        key = await self._key(header.get("kid"))
        if key is None:
            logger.info("refused a token whose key id the issuer does not publish")
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            # The reason, never the token: an operator can tell an expired token from a wrong audience.
            logger.info("refused a token: %s", exc)
            return None
        principal = claims.get(self.principal_claim)
        if not isinstance(principal, str) or not principal:
            logger.info("refused a token without the %r claim that names its principal", self.principal_claim)
            return None
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope or []]
        client_id = str(claims.get("client_id") or claims.get("azp") or claims["sub"])
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=str(claims["sub"]),
            claims={"iss": claims["iss"], PRINCIPAL_CLAIM: principal},
        )

    async def _key(self, kid: Any) -> jwt.PyJWK | None:
        now = self._now()
        stale = self._fetched_at is None or now - self._fetched_at > JWKS_MAX_AGE_S
        unknown = not isinstance(kid, str) or kid not in self._keys
        may_refresh = self._fetched_at is None or now - self._fetched_at >= JWKS_REFRESH_MIN_S
        if stale or (unknown and may_refresh):
            await self._refresh()
        if isinstance(kid, str):
            return self._keys.get(kid)
        # A token without a kid is accepted only from an issuer that publishes exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        self._fetched_at = self._now()
        try:
            async with self._http() as client:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover(client)
                response = await client.get(self._jwks_uri)
                response.raise_for_status()
                keys = response.json().get("keys", [])
        except (httpx2.HTTPError, ValueError, AttributeError) as exc:
            # Keep the keys we have: an issuer blip must not sign everybody out.
            logger.warning(
                "could not read the issuer's keys (%s); keeping %d cached",
                type(exc).__name__,
                len(self._keys),
            )
            return
        fresh: dict[str, jwt.PyJWK] = {}
        for jwk in keys if isinstance(keys, list) else []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                parsed = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue
            fresh[str(jwk.get("kid", ""))] = parsed
        self._keys = fresh

    async def _discover(self, client: httpx2.AsyncClient) -> str:
        """The JWKS URL from the issuer's metadata: RFC 8414 first, OpenID Connect discovery second."""
        base = self.issuer.rstrip("/")
        parts = urlsplit(base)
        origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.strip("/")
        candidates = [
            f"{origin}/.well-known/oauth-authorization-server" + (f"/{path}" if path else ""),
            f"{base}/.well-known/openid-configuration",
        ]
        for url in candidates:
            response = await client.get(url)
            if response.status_code != 200:
                continue
            document = response.json()
            if document.get("issuer", "").rstrip("/") != base:
                # RFC 8414 §3.3: metadata naming another issuer must not be used.
                logger.warning("issuer metadata at %s names another issuer; ignored", url)
                continue
            jwks_uri = document.get("jwks_uri")
            if isinstance(jwks_uri, str) and jwks_uri:
                return jwks_uri
        raise ValueError("the issuer publishes no jwks_uri")


class ChainVerifier(TokenVerifier):
    def __init__(self, verifiers: list[TokenVerifier]) -> None:
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self.verifiers:
            found = await verifier.verify_token(token)
            if found is not None:
                return found
        return None


# -- the HTTP side ------------------------------------------------------------------------------


@dataclass
class SignIn:
    """What ``build_http_app`` needs: the verifier, the scopes every token must carry, and, with an
    issuer, the metadata URL a 401 points at."""

    verifier: TokenVerifier
    required_scopes: list[str]
    issuer: str | None = None
    audience: str | None = None
    principals: Principals = field(default_factory=Principals)

    @property
    def metadata_url(self) -> str | None:
        if self.audience is None:
            return None
        return str(build_resource_metadata_url(AnyHttpUrl(self.audience)))

    def routes(self) -> list[Route]:
        """RFC 9728 protected-resource metadata, served without a token."""
        if self.issuer is None or self.audience is None:
            return []
        # Written out rather than through the SDK's route, whose URL type appends a "/" to a bare
        # origin: clients compare the issuer string exactly (RFC 8414 §3.3) and then refuse it.
        document = {
            "resource": self.audience,
            "authorization_servers": [self.issuer],
            "scopes_supported": sorted({*self.required_scopes, READ_SCOPE, SPEND_SCOPE}),
            "bearer_methods_supported": ["header"],
            "resource_name": "mediamux",
        }

        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})

        path = urlsplit(self.metadata_url or "").path
        return [Route(path, metadata, methods=["GET"])]

    def protect(self, app: ASGIApp) -> ASGIApp:
        guarded: ASGIApp = RequireToken(
            app, self.required_scopes, self.metadata_url, oauth=self.issuer is not None
        )
        guarded = AuthContextMiddleware(guarded)
        return AuthenticationMiddleware(guarded, backend=BearerAuthBackend(self.verifier))


def sign_in(settings: Settings, principals: Principals | None = None) -> SignIn | None:
    """The sign-in the settings ask for, or None for an open (loopback, token-less) server."""
    principals = principals if principals is not None else load_principals(settings.principals_file)
    verifiers: list[TokenVerifier] = []
    static = StaticTokenVerifier.from_settings(settings, principals)
    if static is not None:
        verifiers.append(static)
    if settings.auth_issuer and settings.auth_audience:
        verifiers.append(
            JwtVerifier(
                settings.auth_issuer,
                settings.auth_audience,
                principal_claim=settings.auth_principal_claim,
            )
        )
    if not verifiers:
        return None
    # Static tokens carry their own scopes; the required ones apply to OAuth tokens (whose issuer
    # decides what they hold) — and to a static token only if it is an OAuth deployment's.
    required = list(settings.auth_scopes) if settings.auth_issuer else []
    return SignIn(
        ChainVerifier(verifiers),
        required,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        principals=principals,
    )


class RequireToken:
    """401 without a valid token (with the header that starts a host's OAuth flow), 403 without the
    required scopes; otherwise the request goes on with the token in context."""

    def __init__(
        self, app: ASGIApp, required_scopes: list[str], metadata_url: str | None, *, oauth: bool
    ) -> None:
        self.app = app
        self.required_scopes = required_scopes
        self.metadata_url = metadata_url
        self.oauth = oauth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            how = (
                "sign in: the resource metadata named in WWW-Authenticate says where"
                if self.oauth
                else "send Authorization: Bearer <token> (MEDIAMUX_HTTP_TOKEN or one of MEDIAMUX_PRINCIPALS_FILE)"
            )
            await self._refuse(send, 401, "invalid_token", f"a valid access token is required; {how}")
            return
        missing = [s for s in self.required_scopes if s not in user.scopes]
        if missing:
            await self._refuse(
                send, 403, "insufficient_scope", f"the token lacks the scope(s) {' '.join(missing)}", missing
            )
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, send: Send, status: int, error: str, description: str, scopes: list[str] | None = None
    ) -> None:
        parts = [f'error="{error}"', f'error_description="{description}"']
        # A client asks for the scopes the challenge names (MCP's scope selection): on a 401 that is
        # everything this server can use, so a host signs in once for spending too and the issuer
        # decides what the person may have; on a 403, what was missing.
        wanted = scopes or sorted({*self.required_scopes, READ_SCOPE, SPEND_SCOPE})
        if self.oauth:
            parts.append(f'scope="{" ".join(wanted)}"')
        if self.metadata_url:
            parts.append(f'resource_metadata="{self.metadata_url}"')
        # "unauthorized" in the body, as before sign-in existed; RFC 6750's code is in the header.
        body = json.dumps(
            {"error": "unauthorized" if status == 401 else error, "error_description": description}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
