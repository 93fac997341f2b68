"""The OpenID Connect client of "Sign in with SSO": the authorization code flow with PKCE S256,
state and nonce, against the provider found by discovery.

    client = OidcClient(settings.oidc)
    url = client.authorization_url(redirect_uri, state, nonce, code_verifier)
    ... the provider sends the browser back to redirect_uri with ?code=&state= ...
    claims = client.sign_in(code, redirect_uri, code_verifier, nonce)

The ID token's signature (against the provider's JWKS), issuer, audience, expiry and nonce are
checked by authlib (`authlib.oidc.core.CodeIDToken` over a token decoded by joserfc, authlib's
JOSE library), not here. The PKCE method is always S256, whether or not the provider
advertises it: many providers do not advertise it and support it all the same.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regward.server.errors import Unauthenticated
from regward.server.settings import OidcSettings

# httpx, authlib and joserfc are imported where used: about 18 MB that a server without SSO
# never needs (docs/operators.md, memory).
if TYPE_CHECKING:
    import httpx
    from authlib.oidc.core import CodeIDToken
    from joserfc.jwk import KeySet

DISCOVERY_TTL = 3600.0  # seconds the provider's metadata and keys are kept
LEEWAY = 60  # seconds of clock difference allowed on exp, iat and nbf
# Asymmetric algorithms only: an ID token "signed" with the client secret (HS256) or not at
# all (none) is refused.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class SsoFailed(Unauthenticated):
    """The provider's answer cannot sign anyone in; the message says why, for the person."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in, from a verified ID token."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    preferred_username: str
    groups: tuple[str, ...]

    @property
    def email_domain(self) -> str:
        return self.email.rpartition("@")[2].lower() if "@" in self.email else ""


class OidcClient:
    """One provider's client; discovery and keys are fetched on first use and kept an hour."""

    def __init__(self, settings: OidcSettings, http: httpx.Client | None = None) -> None:
        import httpx

        self.settings = settings
        self._http = http or httpx.Client(timeout=10, follow_redirects=False)
        self._lock = threading.Lock()
        self._provider: tuple[float, Provider] | None = None
        self._keys: tuple[float, KeySet] | None = None

    def close(self) -> None:
        self._http.close()

    # --- discovery and keys ---------------------------------------------------------------

    def provider(self) -> Provider:
        with self._lock:
            if self._provider and time.monotonic() - self._provider[0] < DISCOVERY_TTL:
                return self._provider[1]
        url = self.settings.issuer + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery")
        try:
            provider = Provider(
                issuer=str(document["issuer"]).rstrip("/"),
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks_uri=str(document["jwks_uri"]),
            )
        except KeyError as error:
            raise SsoFailed(f"the provider's discovery document lacks {error}") from None
        if provider.issuer != self.settings.issuer:
            raise SsoFailed(
                f"the provider calls itself {provider.issuer!r}, not REGWARD_OIDC_ISSUER "
                f"{self.settings.issuer!r}; set the issuer exactly as the provider names it"
            )
        with self._lock:
            self._provider = (time.monotonic(), provider)
        return provider

    def _key_set(self, *, fresh: bool) -> KeySet:
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        with self._lock:
            if not fresh and self._keys and time.monotonic() - self._keys[0] < DISCOVERY_TTL:
                return self._keys[1]
        document = self._get_json(self.provider().jwks_uri, "keys")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise SsoFailed(f"the provider's keys cannot be read: {error}") from None
        with self._lock:
            self._keys = (time.monotonic(), keys)
        return keys

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        import httpx

        try:
            answer = self._http.get(url)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as error:
            raise SsoFailed(f"the provider's {what} at {url} cannot be read: {error}") from None
        if not isinstance(document, dict):
            raise SsoFailed(f"the provider's {what} at {url} is not a JSON object")
        return document

    # --- the flow -------------------------------------------------------------------------

    def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        url: str = prepare_grant_uri(
            self.provider().authorization_endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=self.settings.scopes,
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(code_verifier),
            code_challenge_method="S256",
        )
        return url

    def sign_in(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity:
        """Exchange the code (with the PKCE verifier) and verify the ID token it brings."""
        tokens = self._exchange(code, redirect_uri, code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SsoFailed("the provider answered without an ID token; is the openid scope on?")
        access_token = tokens.get("access_token")
        claims = self.verify(
            id_token, nonce, access_token if isinstance(access_token, str) else None
        )
        return self._identity(claims)

    def _exchange(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        import httpx

        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.settings.client_id,
        }
        auth = None
        if self.settings.client_secret:
            auth = httpx.BasicAuth(self.settings.client_id, self.settings.client_secret)
        try:
            answer = self._http.post(
                self.provider().token_endpoint,
                data=form,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
            )
            body = answer.json()
        except (httpx.HTTPError, ValueError) as error:
            raise SsoFailed(f"the provider's token endpoint cannot be reached: {error}") from None
        if answer.status_code != 200 or not isinstance(body, dict):
            detail = (
                body.get("error_description") or body.get("error") if isinstance(body, dict) else ""
            )
            raise SsoFailed(
                f"the provider refused the sign-in code ({answer.status_code}: {detail})"
            )
        return body

    def verify(self, id_token: str, nonce: str, access_token: str | None = None) -> CodeIDToken:
        """The ID token's claims once authlib has checked signature, issuer, audience, expiry
        and nonce; SsoFailed naming what failed otherwise."""
        from authlib.oidc.core import CodeIDToken
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            try:
                token = jwt.decode(id_token, self._key_set(fresh=False), algorithms=ALGORITHMS)
            except JoseError:
                # The provider may have rotated its keys since they were fetched: once more.
                token = jwt.decode(id_token, self._key_set(fresh=True), algorithms=ALGORITHMS)
            claims = CodeIDToken(
                token.claims,
                token.header,
                options={
                    "iss": {"essential": True, "value": self.provider().issuer},
                    "aud": {"essential": True, "value": self.settings.client_id},
                    "sub": {"essential": True},
                    "exp": {"essential": True},
                    "nonce": {"essential": True, "value": nonce},
                },
                params={
                    "nonce": nonce,
                    "client_id": self.settings.client_id,
                    "access_token": access_token,
                },
            )
            claims.validate(leeway=LEEWAY)
        except (JoseError, ValueError) as error:
            raise SsoFailed(f"the provider's ID token was refused: {_reason(error)}") from None
        return claims

    def _identity(self, claims: CodeIDToken) -> Identity:
        groups = claims.get(self.settings.groups_claim) or ()
        if isinstance(groups, str):
            groups = (groups,)
        return Identity(
            issuer=str(claims["iss"]).rstrip("/"),
            subject=str(claims["sub"]),
            email=str(claims.get("email") or ""),
            email_verified=claims.get("email_verified") is not False,
            preferred_username=str(claims.get("preferred_username") or ""),
            groups=tuple(str(g) for g in groups if isinstance(g, str | int)),
        )


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text[:200]
