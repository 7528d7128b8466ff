"""An OAuth 2.0 authorization server on loopback, made for the tests.

``OAuthServer`` plays Google or Microsoft: an authorization endpoint that
approves at once for ``user`` (no human) and redirects with a code and the
state; a token endpoint that checks the client secret and PKCE S256 (RFC 7636
4.6) and issues short-lived access tokens and refresh tokens; a userinfo
endpoint; and, when ``id_tokens`` is on, an ID token with the email.

Tests steer it: ``revoke(user)`` makes that user's refresh tokens answer
``invalid_grant`` and ends their access tokens; ``expire_access_tokens()``
ends access tokens only.  ``refreshes`` counts refresh grants, ``seen`` holds
every code, verifier and token that passed through, for leak checks, and
``check_access`` is what the XOAUTH2 test server asks.

It runs ``http.server`` in a daemon thread on 127.0.0.1 and port 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

CLIENT_ID: Final = "mailroom-test-client.apps.example.com"
CLIENT_SECRET: Final = "fake-client-secret-1"
REVOKED_TEXT: Final = "Token has been expired or revoked."
CODE_TTL: Final = 60.0


@dataclass
class _Code:
    user: str
    redirect_uri: str
    challenge: str
    scope: str
    issued: float
    used: bool = False


@dataclass
class _State:
    """Everything the server knows; guarded by ``OAuthServer.lock``."""

    codes: dict[str, _Code] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    revoked_users: set[str] = field(default_factory=set)
    refreshes: int = 0
    exchanges: int = 0
    seen: list[str] = field(default_factory=list)


class OAuthServer:
    def __init__(
        self,
        *,
        user: str = "alice@example.com",
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        access_ttl: int = 600,
        id_tokens: bool = False,
        rotate_refresh_tokens: bool = False,
    ) -> None:
        self.user = user
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_ttl = access_ttl
        self.id_tokens = id_tokens
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.lock = threading.Lock()
        self.state = _State()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.oauth = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- addresses -------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self, provider: str = "GOOGLE") -> dict[str, str]:
        """The MAILROOM_OAUTH_* settings that point a provider at this server."""
        prefix = f"MAILROOM_OAUTH_{provider}_"
        return {
            prefix + "CLIENT_ID": self.client_id,
            prefix + "CLIENT_SECRET": self.client_secret,
            prefix + "AUTHORIZE_URL": f"{self.base_url}/authorize",
            prefix + "TOKEN_URL": f"{self.base_url}/token",
            prefix + "USERINFO_URL": f"{self.base_url}/userinfo",
            prefix + "REDIRECT_HOST": "127.0.0.1",
        }

    # -- steering and records --------------------------------------------

    def revoke(self, user: str) -> None:
        """The user withdrew consent: refresh and access tokens stop working."""
        with self.lock:
            self.state.revoked_users.add(user.lower())
            self._drop_access(user.lower())

    def restore(self, user: str) -> None:
        """The user may consent again (earlier grants stay revoked)."""
        with self.lock:
            self.state.revoked_users.discard(user.lower())
            for token, owner in list(self.state.refresh_tokens.items()):
                if owner == user.lower():
                    del self.state.refresh_tokens[token]

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.state.access_tokens.clear()

    @property
    def refreshes(self) -> int:
        with self.lock:
            return self.state.refreshes

    @property
    def exchanges(self) -> int:
        with self.lock:
            return self.state.exchanges

    @property
    def seen(self) -> list[str]:
        """Every code, verifier and token that passed through, plus the secret."""
        with self.lock:
            return [self.client_secret, *self.state.seen]

    def check_access(self, token: str, user: str) -> bool:
        """Whether ``token`` is a live access token of ``user``."""
        with self.lock:
            owner, expires = self.state.access_tokens.get(token, ("", 0.0))
            live = owner == user.lower() and time.monotonic() < expires
            return live and owner not in self.state.revoked_users

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-oauth-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- endpoints, called by the handler ----------------------------------

    def authorize(self, params: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Approve at once for ``user``; the redirect's location, or an error."""
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or not _loopback(redirect_uri):
            return 400, {"error": "invalid_request"}
        answer = {"state": params.get("state", "")}
        if params.get("code_challenge_method") != "S256":
            answer["error"] = "invalid_request"
            return 302, {"location": _with_query(redirect_uri, answer)}

        code = secrets.token_urlsafe(24)
        with self.lock:
            self.state.codes[code] = _Code(
                self.user.lower(),
                redirect_uri,
                params.get("code_challenge", ""),
                params.get("scope", ""),
                time.monotonic(),
            )
            self.state.seen.append(code)
        answer["code"] = code
        return 302, {"location": _with_query(redirect_uri, answer)}

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> Any:
        if not self._client_ok(form, basic):
            return 401, {"error": "invalid_client"}
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._refresh(form)
        return 400, {"error": "unsupported_grant_type"}

    def userinfo(self, bearer: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            owner, expires = self.state.access_tokens.get(bearer, ("", 0.0))
        if not owner or time.monotonic() >= expires:
            return 401, {"error": "invalid_token"}
        return 200, {"sub": _subject(owner), "email": owner, "email_verified": True}

    # -- internals (lock held) -------------------------------------------

    def _client_ok(self, form: dict[str, str], basic: tuple[str, str] | None) -> bool:
        given = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        return hmac.compare_digest(
            f"{given[0]}\n{given[1]}", f"{self.client_id}\n{self.client_secret}"
        )

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        code = self.state.codes.get(form.get("code", ""))
        verifier = form.get("code_verifier", "")
        self.state.seen.append(verifier)
        if code is None or code.used or time.monotonic() - code.issued > CODE_TTL:
            return 400, {"error": "invalid_grant", "error_description": "bad code"}
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect"}
        if _s256(verifier) != code.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE failed"}

        self.state.exchanges += 1
        refresh = self._new_refresh(code.user)
        answer = {**self._new_access(code.user, code.scope), "refresh_token": refresh}
        if self.id_tokens:
            answer["id_token"] = self._id_token(code.user)
        return 200, answer

    def _refresh(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        user = self.state.refresh_tokens.get(form.get("refresh_token", ""))
        if user is None or user in self.state.revoked_users:
            return 400, {"error": "invalid_grant", "error_description": REVOKED_TEXT}
        self.state.refreshes += 1
        answer = self._new_access(user, form.get("scope", ""))
        if self.rotate_refresh_tokens:
            del self.state.refresh_tokens[form["refresh_token"]]
            answer["refresh_token"] = self._new_refresh(user)
        return 200, answer

    def _new_access(self, user: str, scope: str) -> dict[str, Any]:
        token = "ya29.test-" + secrets.token_urlsafe(24)
        self.state.access_tokens[token] = (user, time.monotonic() + self.access_ttl)
        self.state.seen.append(token)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": scope,
        }

    def _new_refresh(self, user: str) -> str:
        token = "1//test-" + secrets.token_urlsafe(24)
        self.state.refresh_tokens[token] = user
        self.state.seen.append(token)
        return token

    def _drop_access(self, user: str) -> None:
        for token, (owner, _) in list(self.state.access_tokens.items()):
            if owner == user:
                del self.state.access_tokens[token]

    def _id_token(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.base_url,
            "aud": self.client_id,
            "sub": _subject(user),
            "email": user,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        key = self.client_secret.encode()
        signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256)
        return f"{header}.{body}.{_b64(signature.digest())}"


class _Handler(BaseHTTPRequestHandler):
    server_version = "test-oauth"

    @property
    def oauth(self) -> OAuthServer:
        return self.server.oauth  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines hold codes; a test server keeps quiet like a real one.
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/authorize":
            status, answer = self.oauth.authorize(dict(parse_qsl(parts.query)))
            if status == 302:
                self._send(302, b"", {"Location": answer["location"]})
            else:
                self._json(status, answer)
        elif parts.path == "/userinfo":
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._json(*self.oauth.userinfo(bearer))
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            self._json(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode("utf-8")))
        self._json(*self.oauth.token(form, self._basic()))

    def _basic(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password

    def _json(self, status: int, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        self._send(status, json.dumps(body).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _loopback(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost"}


def _with_query(uri: str, params: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(params)}"


def _s256(verifier: str) -> str:
    # RFC 7636 4.6: BASE64URL(SHA256(ASCII(code_verifier))), no padding.
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _subject(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:20]
