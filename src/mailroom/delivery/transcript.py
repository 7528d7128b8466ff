"""The transcript of a ``channel test`` conversation, credentials blanked out.

A ``Transcript`` records who said what as ``TranscriptLine`` values.  It is
told every secret the probe holds, in each form that could go on the wire, and
puts the placeholder in their place before a line is kept.  ``render_lines``
turns the lines into the text ``channel test`` prints.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mailroom.delivery.replies import Reply
from mailroom.secrets import PLACEHOLDER, Secret


class Direction(enum.StrEnum):
    """Who a transcript line comes from."""

    client = "C"
    server = "S"
    # A remark of the probe's own: TLS details, what it tried, what it skipped.
    note = "*"


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line of the conversation, credentials already blanked out."""

    direction: Direction
    text: str


class Transcript:
    """Records one conversation into ``lines``, hiding what it was told to."""

    def __init__(self, lines: list[TranscriptLine]) -> None:
        self.lines = lines
        self._hidden: set[str] = set()

    def said(self, text: str) -> None:
        """Record a line the client sent."""
        self._add(Direction.client, text)

    def heard(self, code: int, message: str) -> Reply:
        """Record a server reply, one transcript line a line, and parse it."""
        lines = message.split("\n") or [""]
        # RFC 5321 4.2.1: every line but the last has a hyphen after the code.
        for index, line in enumerate(lines):
            mark = " " if index == len(lines) - 1 else "-"
            self._add(Direction.server, f"{code}{mark}{line}".rstrip())
        return Reply.parse(code, message)

    def note(self, text: str) -> None:
        """Record a remark of the probe's own."""
        self._add(Direction.note, text)

    def scrub(self, text: str) -> str:
        """The text with every hidden word replaced by the placeholder."""
        # A last guard for a server that echoes what it was sent: no form of
        # a credential we hold reaches the transcript.
        for word in self._hidden:
            text = text.replace(word, PLACEHOLDER)
        return text

    def hide_password(self, username: str, secret: Secret) -> None:
        """Hide the password, alone and as AUTH PLAIN and LOGIN send it."""
        password = secret.reveal()
        # RFC 4616 2 (PLAIN): authzid NUL authcid NUL passwd, in base64.
        plain = f"\0{username}\0{password}"
        self._hide(password, _b64(password), _b64(plain))

    def hide_token(self, username: str, token: str) -> None:
        """Hide an OAuth token, alone and as AUTH XOAUTH2 sends it."""
        # Google's XOAUTH2: "user=" name ^A "auth=Bearer " token ^A ^A, base64.
        bearer = f"user={username}\1auth=Bearer {token}\1\1"
        self._hide(token, _b64(bearer))

    def _add(self, direction: Direction, text: str) -> None:
        self.lines.append(TranscriptLine(direction, self.scrub(text)))

    def _hide(self, *words: str) -> None:
        self._hidden.update(word for word in words if word)


def render_lines(lines: Iterable[TranscriptLine]) -> list[str]:
    """The lines as text: ``S: 220 ...``, ``C: EHLO ...``, ``* ...``."""
    return [_render(line) for line in lines]


def _render(line: TranscriptLine) -> str:
    if line.direction is Direction.note:
        return f"* {line.text}"
    return f"{line.direction}: {line.text}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
