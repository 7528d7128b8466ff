"""Secrets as a type, and their encryption at rest.

A ``Secret`` prints as a fixed placeholder, never its value or its length, so a
secret put into a log line, an exception or a repr by mistake leaks nothing.  It
is unwrapped with ``reveal()`` only where it goes onto the wire or into the
cipher.

At rest, secrets are sealed with Fernet (AES-128-CBC with HMAC-SHA256, from the
``cryptography`` package).  The key comes from ``MAILROOM_SECRET_KEY`` or from a
key file that ``mailroom init`` writes with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from mailroom.errors import InputError, MailroomError
from mailroom.i18n import Text

PLACEHOLDER: Final = "********"
KEY_ENV: Final = "MAILROOM_SECRET_KEY"


class Secret:
    """A value that must not be shown: ``str`` and ``repr`` print a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value; call only where it is written to the wire or sealed."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return PLACEHOLDER

    def __repr__(self) -> str:
        return f"Secret({PLACEHOLDER!r})"


class SecretKeyError(MailroomError):
    """The secret key is missing, unreadable or does not open a stored secret."""


class Cipher:
    """Seals and opens secrets with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise InputError(
                KEY_ENV,
                Text("is not a valid key"),
                Text("generate one with `mailroom init`"),
            ) from exc

    def seal(self, secret: Secret) -> bytes:
        return self._fernet.encrypt(secret.reveal().encode("utf-8"))

    def open(self, token: bytes) -> Secret:
        try:
            return Secret(self._fernet.decrypt(token).decode("utf-8"))
        except InvalidToken:
            # Raised without the cause: InvalidToken carries nothing useful and
            # the message must not hint at the token's contents.
            raise SecretKeyError(
                "a stored secret cannot be opened with this key; was "
                f"{KEY_ENV} or the key file changed?"
            ) from None


def create_key_file(path: Path) -> None:
    """Write a new key readable by the owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(Fernet.generate_key())


def load_cipher(key_file: Path) -> Cipher:
    """The cipher from the environment if set, else from the key file."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return Cipher(from_env.encode("ascii"))
    try:
        return Cipher(key_file.read_bytes().strip())
    except FileNotFoundError:
        raise SecretKeyError(
            f"no secret key at {key_file}; run `mailroom init` or set {KEY_ENV}"
        ) from None
