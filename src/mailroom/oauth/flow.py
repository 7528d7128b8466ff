"""The authorization-code flow with PKCE, in two steps any receiver can drive.

``begin`` builds the consent address for a redirect URI (the command line's
loopback listener, or later the web app's own route); ``complete`` takes what
came back to that URI, checks ``state``, exchanges the code and learns which
mailbox was connected.  Between the two steps the caller keeps the
``Authorization``; its verifier is a ``Secret`` and never leaves this process.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.base_client import OAuthError as AuthlibOAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.client import OAuth2Client

from mailroom.oauth import AuthorizationError, IdentityMismatch
from mailroom.oauth.providers import ProviderConfig
from mailroom.secrets import Secret

log = logging.getLogger("mailroom.oauth")

HTTP_TIMEOUT = 30.0
# RFC 7636 4.1: a verifier of 43 to 128 unreserved characters; 64 random bytes
# make 86 base64url characters.
VERIFIER_BYTES = 64
# Provider text shown to people is cut to this length.
MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class Authorization:
    """A started flow: what ``complete`` needs, kept by whoever began it."""

    provider: ProviderConfig
    redirect_uri: str
    url: str
    state: str
    verifier: Secret


@dataclass(frozen=True, slots=True)
class Callback:
    """What the provider sent back to the redirect URI (RFC 6749 4.1.2)."""

    state: str
    code: Secret | None = None
    error: str = ""
    error_description: str = ""

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Callback:
        code = params.get("code")
        return cls(
            state=params.get("state", ""),
            code=Secret(code) if code else None,
            error=_printable(params.get("error", "")),
            error_description=_printable(params.get("error_description", "")),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of a completed flow; tokens are ``Secret`` values."""

    provider: str
    email: str
    refresh_token: Secret
    access_token: Secret
    expires_in: float
    scope: str


def begin(
    provider: ProviderConfig, redirect_uri: str, login_hint: str | None = None
) -> Authorization:
    """A fresh state and PKCE verifier, and the consent address to visit."""
    provider.require_client()
    verifier = Secret(secrets.token_urlsafe(VERIFIER_BYTES))
    client = OAuth2Client(
        None,
        client_id=provider.client_id,
        scope=provider.scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    extra = dict(provider.extra_params)
    if login_hint:
        extra["login_hint"] = login_hint
    # RFC 6749 10.12: ``state`` binds the answer to this request (CSRF).
    url, state = client.create_authorization_url(
        provider.authorize_url, code_verifier=verifier.reveal(), **extra
    )
    return Authorization(provider, redirect_uri, url, state, verifier)


async def complete(authorization: Authorization, callback: Callback) -> Grant:
    """Check the answer, exchange the code (RFC 6749 4.1.3) and find the mailbox."""
    code = _checked_code(authorization, callback)
    provider = authorization.provider
    async with oauth_client(provider, authorization.redirect_uri) as client:
        token = await _exchange(client, authorization, code)
        email = await _identity(client, provider, token)
    return _grant(provider, email, token)


def confirm_identity(grant: Grant, owner: str) -> None:
    """Refuse a grant for another mailbox than the one the person named."""
    if grant.email.casefold() != owner.casefold():
        raise IdentityMismatch(owner, grant.email)


# Steps of ``complete`` -------------------------------------------------------


def _checked_code(authorization: Authorization, callback: Callback) -> Secret:
    # Compared in constant time; a forged answer must not learn the state.
    if not hmac.compare_digest(callback.state.encode(), authorization.state.encode()):
        raise AuthorizationError(
            "the answer to the consent page does not match this request (state); "
            "start again"
        )
    if callback.error:
        detail = f": {callback.error_description}" if callback.error_description else ""
        raise AuthorizationError(
            f"{authorization.provider.title} did not grant access "
            f"({callback.error}{detail})"
        )
    if callback.code is None:
        raise AuthorizationError("the provider sent back no authorization code")
    return callback.code


def oauth_client(
    provider: ProviderConfig, redirect_uri: str | None = None
) -> AsyncOAuth2Client:
    """Authlib's client for the token and userinfo endpoints; use ``async with``."""
    secret = provider.client_secret
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=secret.reveal() if secret else None,
        # Both providers accept the secret in the body; a public client
        # (no secret) sends only its id and relies on PKCE (RFC 7636).
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        # Microsoft requires the scope on a refresh too; Google accepts it.
        scope=provider.scope,
        redirect_uri=redirect_uri,
        timeout=HTTP_TIMEOUT,
    )


async def _exchange(
    client: AsyncOAuth2Client, authorization: Authorization, code: Secret
) -> dict[str, Any]:
    provider = authorization.provider
    try:
        token = await client.fetch_token(
            provider.token_url,
            grant_type="authorization_code",
            code=code.reveal(),
            code_verifier=authorization.verifier.reveal(),
        )
    except AuthlibOAuthError as exc:
        raise AuthorizationError(
            f"{provider.title} refused the code: {describe_oauth_error(exc)}"
        ) from None
    except httpx.HTTPError as exc:
        raise AuthorizationError(
            f"cannot reach {provider.title}'s token endpoint: {type(exc).__name__}"
        ) from None
    log.debug("provider=%s code exchanged", provider.key)
    return dict(token)


async def _identity(
    client: AsyncOAuth2Client, provider: ProviderConfig, token: Mapping[str, Any]
) -> str:
    """The connected address, from the ID token or else the userinfo endpoint."""
    id_token = token.get("id_token")
    if id_token:
        claims = _id_token_claims(str(id_token), provider)
    else:
        claims = await _userinfo(client, provider, str(token["access_token"]))
    return _email(claims, provider)


def _id_token_claims(id_token: str, provider: ProviderConfig) -> dict[str, Any]:
    # OpenID Connect Core 3.1.3.7: an ID token received straight from the
    # token endpoint over TLS may be trusted by that TLS check instead of its
    # signature; the audience must still be this client.
    try:
        payload = id_token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError, binascii.Error):
        raise AuthorizationError("the provider's ID token cannot be read") from None
    if not isinstance(claims, dict):
        raise AuthorizationError("the provider's ID token cannot be read")

    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if provider.client_id not in audiences:
        raise AuthorizationError("the provider's ID token is for another client")
    return claims


async def _userinfo(
    client: AsyncOAuth2Client, provider: ProviderConfig, access_token: str
) -> dict[str, Any]:
    # OpenID Connect Core 5.3: the userinfo endpoint takes the access token.
    try:
        response = await client.request(
            "GET",
            provider.userinfo_url,
            headers={"Authorization": f"Bearer {access_token}"},
            withhold_token=True,
        )
        response.raise_for_status()
        claims = response.json()
    except (httpx.HTTPError, ValueError):
        raise AuthorizationError(
            f"cannot learn the connected address from {provider.title}"
        ) from None
    if not isinstance(claims, dict):
        raise AuthorizationError("the userinfo answer is not a JSON object")
    return claims


def _email(claims: Mapping[str, Any], provider: ProviderConfig) -> str:
    if claims.get("email_verified") is False:
        raise AuthorizationError(f"{provider.title} has not verified that address")
    # Microsoft puts the sign-in name in ``preferred_username`` when a tenant
    # does not release ``email``.
    email = claims.get("email") or claims.get("preferred_username")
    if not isinstance(email, str) or "@" not in email:
        raise AuthorizationError(
            f"{provider.title} did not say which address was connected; "
            "check that the openid and email scopes are granted"
        )
    return email.lower()


def _grant(provider: ProviderConfig, email: str, token: Mapping[str, Any]) -> Grant:
    refresh = token.get("refresh_token")
    if not refresh:
        raise AuthorizationError(
            f"{provider.title} issued no refresh token; remove mailroom's access "
            "in the account's security settings and connect again"
        )
    return Grant(
        provider=provider.key,
        email=email,
        refresh_token=Secret(str(refresh)),
        access_token=Secret(str(token["access_token"])),
        expires_in=float(token.get("expires_in") or 3600),
        scope=str(token.get("scope") or provider.scope),
    )


def describe_oauth_error(exc: AuthlibOAuthError) -> str:
    """The provider's error code and description (RFC 6749 5.2), printable."""
    text = str(exc.error or "error")
    if exc.description:
        text += f": {exc.description}"
    return _printable(text)


def _printable(text: str) -> str:
    # Provider text goes into logs and statuses: no control characters.
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:MAX_REASON]
