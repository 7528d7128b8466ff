"""OAuth providers: endpoints, client and scopes, from the environment.

Every setting is read from ``MAILROOM_OAUTH_<PROVIDER>_<SETTING>`` (PROVIDER is
GOOGLE or MICROSOFT), and defaults to the provider's documented value, so a
test or a private deployment can point mailroom at another authorization
server.  docs/oauth.md tells how to register the client with each provider.

Settings: CLIENT_ID, CLIENT_SECRET, AUTHORIZE_URL, TOKEN_URL, USERINFO_URL,
SCOPES (space separated), REDIRECT_HOST and REDIRECT_PATH; Microsoft also
reads TENANT (default ``common``), used in its default endpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mailroom.channels.model import Limits, Scope, Security
from mailroom.channels.presets import Preset
from mailroom.errors import InputError
from mailroom.i18n import Text
from mailroom.secrets import Secret

ENV_PREFIX: Final = "MAILROOM_OAUTH_"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One provider's settings; ``key`` is the name on the command line."""

    key: str
    kind: str
    title: str
    client_id: str
    client_secret: Secret | None
    authorize_url: str
    token_url: str
    userinfo_url: str
    scopes: tuple[str, ...]
    redirect_host: str
    redirect_path: str
    # Extra authorization parameters the provider needs to issue a refresh token.
    extra_params: tuple[tuple[str, str], ...] = ()
    env_name: str = ""

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def require_client(self) -> None:
        """Refuse to start a flow or a refresh without a registered client."""
        if not self.client_id:
            raise InputError(
                f"{ENV_PREFIX}{self.env_name}_CLIENT_ID",
                Text("is not set"),
                Text("register an OAuth client as docs/oauth.md shows and set it"),
            )


# Google: https://developers.google.com/identity/protocols/oauth2/native-app
# and https://developers.google.com/gmail/imap/xoauth2-protocol (SMTP needs the
# full https://mail.google.com/ scope).  ``access_type=offline`` asks for a
# refresh token; ``prompt=consent`` asks for a new one on a reconnection.
_GOOGLE: Final = {
    "AUTHORIZE_URL": "https://accounts.google.com/o/oauth2/v2/auth",
    "TOKEN_URL": "https://oauth2.googleapis.com/token",
    "USERINFO_URL": "https://openidconnect.googleapis.com/v1/userinfo",
    "SCOPES": "https://mail.google.com/ openid email",
    "REDIRECT_HOST": "127.0.0.1",
    "REDIRECT_PATH": "/callback",
}

# Microsoft identity platform v2.0 endpoints; SMTP AUTH with OAuth needs the
# SMTP.Send scope of outlook.office.com, and offline_access a refresh token.
_MICROSOFT_LOGIN: Final = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
_MICROSOFT: Final = {
    "AUTHORIZE_URL": _MICROSOFT_LOGIN + "/authorize",
    "TOKEN_URL": _MICROSOFT_LOGIN + "/token",
    "USERINFO_URL": "https://graph.microsoft.com/oidc/userinfo",
    "SCOPES": "https://outlook.office.com/SMTP.Send offline_access openid email",
    # Entra ID accepts ``http://localhost`` with any port for a desktop client.
    "REDIRECT_HOST": "localhost",
    "REDIRECT_PATH": "/callback",
}

# The two channel kinds, for the lead's preset table (see OAUTH_PRESETS).
KINDS: Final = {"gmail-oauth": "gmail", "microsoft-oauth": "microsoft"}

OAUTH_PRESETS: Final = (
    Preset(
        "gmail-oauth",
        "Gmail / Google Workspace (OAuth)",
        "smtp.gmail.com",
        587,
        Security.starttls,
        Scope.personal,
        Limits(per_minute=60, per_day=2_000, max_recipients=100),
        note="Connect with `mailroom channel connect gmail --owner ADDRESS`.",
    ),
    Preset(
        "microsoft-oauth",
        "Microsoft 365 / Exchange Online (OAuth)",
        "smtp.office365.com",
        587,
        Security.starttls,
        Scope.personal,
        Limits(per_minute=30, per_day=10_000, max_recipients=500),
        note="Connect with `mailroom channel connect microsoft --owner ADDRESS`;"
        " the tenant must allow SMTP AUTH for the mailbox.",
    ),
)


def load_provider(key: str, environ: Mapping[str, str] | None = None) -> ProviderConfig:
    """The settings of ``gmail`` or ``microsoft``."""
    environ = os.environ if environ is None else environ
    if key == "gmail":
        return _build("gmail", "gmail-oauth", "Google", "GOOGLE", _GOOGLE, environ)
    if key == "microsoft":
        tenant = environ.get(f"{ENV_PREFIX}MICROSOFT_TENANT") or "common"
        defaults = {k: v.format(tenant=tenant) for k, v in _MICROSOFT.items()}
        return _build(
            "microsoft", "microsoft-oauth", "Microsoft", "MICROSOFT", defaults, environ
        )
    raise InputError(
        "provider",
        Text("unknown provider {name!r}", name=key),
        Text("use gmail or microsoft"),
    )


def load_providers(
    environ: Mapping[str, str] | None = None,
) -> dict[str, ProviderConfig]:
    return {key: load_provider(key, environ) for key in ("gmail", "microsoft")}


def provider_key(kind: str) -> str | None:
    """The provider behind a channel kind, or None for a password channel."""
    return KINDS.get(kind)


def _build(
    key: str,
    kind: str,
    title: str,
    env_name: str,
    defaults: Mapping[str, str],
    environ: Mapping[str, str],
) -> ProviderConfig:
    def setting(name: str) -> str:
        return environ.get(f"{ENV_PREFIX}{env_name}_{name}") or defaults.get(name, "")

    secret = setting("CLIENT_SECRET")
    extra = (
        (("access_type", "offline"), ("prompt", "consent")) if key == "gmail" else ()
    )
    return ProviderConfig(
        key=key,
        kind=kind,
        title=title,
        client_id=setting("CLIENT_ID"),
        client_secret=Secret(secret) if secret else None,
        authorize_url=setting("AUTHORIZE_URL"),
        token_url=setting("TOKEN_URL"),
        userinfo_url=setting("USERINFO_URL"),
        scopes=tuple(setting("SCOPES").split()),
        redirect_host=setting("REDIRECT_HOST"),
        redirect_path=setting("REDIRECT_PATH"),
        extra_params=extra,
        env_name=env_name,
    )
