"""A small, real OAuth 2.1 authorization server for the sign-in tests.

It serves RFC 8414 metadata, a JWKS with real RSA keys (which it can rotate), dynamic client
registration, an authorization endpoint that approves at once (the "user" is whoever the test says),
and a token endpoint that checks PKCE and signs RS256 access tokens for the requested resource. It
runs on a loopback port in its own thread, so both in-process and subprocess servers can reach it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.test_e2e import free_port


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


def new_key() -> SigningKey:
    return SigningKey(
        f"k-{secrets.token_hex(4)}", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


@dataclass
class Issuer:
    port: int
    keys: list[SigningKey] = field(default_factory=lambda: [new_key()])
    # Who approves the next authorization request (the browser's signed-in user, in real life).
    next_subject: str = "alice"
    jwks_fetches: int = 0
    _codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _clients: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rotate(self, *, keep_old: bool = False) -> SigningKey:
        """A new signing key first in the JWKS (the old one kept or withdrawn)."""
        key = new_key()
        self.keys = [key, *self.keys] if keep_old else [key]
        return key

    def mint(
        self,
        subject: str,
        *,
        audience: str,
        scopes: str = "mediamux:read mediamux:spend",
        expires_in: int = 300,
        key: SigningKey | None = None,
        issuer: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + expires_in,
            "scope": scopes,
            "client_id": "test-client",
            **claims,
        }
        key = key or self.keys[0]
        return jwt.encode(body, key.private, algorithm="RS256", headers={"kid": key.kid})

    # -- endpoints -------------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "authorization_endpoint": f"{self.url}/authorize",
                    "token_endpoint": f"{self.url}/token",
                    "registration_endpoint": f"{self.url}/register",
                    "jwks_uri": f"{self.url}/jwks",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
                    "scopes_supported": ["mediamux:read", "mediamux:spend"],
                }
            )

        async def jwks(request: Request) -> JSONResponse:
            self.jwks_fetches += 1
            return JSONResponse({"keys": [k.public_jwk() for k in self.keys]})

        async def register(request: Request) -> JSONResponse:
            body = await request.json()
            client_id = f"client-{secrets.token_hex(4)}"
            self._clients[client_id] = body
            return JSONResponse(
                {**body, "client_id": client_id, "client_id_issued_at": int(time.time())}, status_code=201
            )

        async def authorize(request: Request) -> Response:
            q = request.query_params
            if q.get("client_id") not in self._clients or q.get("code_challenge_method") != "S256":
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            code = secrets.token_urlsafe(16)
            self._codes[code] = {
                "challenge": q["code_challenge"],
                "resource": q.get("resource"),
                "scope": q.get("scope") or "mediamux:read mediamux:spend",
                "subject": self.next_subject,
                "redirect_uri": q["redirect_uri"],
            }
            query = urlencode({"code": code, "state": q.get("state", "")})
            return RedirectResponse(f"{q['redirect_uri']}?{query}", status_code=302)

        async def token(request: Request) -> JSONResponse:
            form = await request.form()
            grant = self._codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier", ""))
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if grant is None or digest != grant["challenge"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            access = self.mint(grant["subject"], audience=grant["resource"], scopes=grant["scope"])
            return JSONResponse(
                {"access_token": access, "token_type": "Bearer", "expires_in": 300, "scope": grant["scope"]}
            )

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/jwks", jwks),
                Route("/register", register, methods=["POST"]),
                Route("/authorize", authorize),
                Route("/token", token, methods=["POST"]),
            ]
        )


class RunningIssuer:
    """The issuer served by uvicorn in a daemon thread; ``stop()`` ends it."""

    def __init__(self) -> None:
        self.issuer = Issuer(free_port())
        config = uvicorn.Config(
            self.issuer.app(), host="127.0.0.1", port=self.issuer.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="test-issuer", daemon=True)

    def start(self) -> Issuer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test issuer did not start")
            self._thread.join(0.01)
        return self.issuer

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
