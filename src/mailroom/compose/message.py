"""A draft and its wire form.

``build_message`` writes the bytes of an RFC 5322 message directly, with CRLF
line ends, instead of going through ``email.message.EmailMessage`` and its
generator: a campaign builds one message per recipient, and the stdlib's
policy-driven folding costs far more than the message is worth.  The stdlib
still does the parts that are easy to get wrong: RFC 2047 encoded words
(``email.header.Header``), quoted-printable (``binascii``) and dates
(``email.utils``).  Values repeated across a campaign, such as the sender's
mailbox, are encoded once and cached.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from typing import Final

from mailroom.addresses import (
    Address,
    ascii_domain,
    check_header_value,
    needs_smtputf8,
    quote_phrase,
)
from mailroom.clock import utcnow
from mailroom.compose.html_text import html_to_text
from mailroom.errors import InputError
from mailroom.i18n import Text

# RFC 5322 2.1.1: a line SHOULD be at most 78 characters and MUST be at most
# 998, both without the CRLF.
_FOLD_AT: Final = 78
_LINE_LIMIT: Final = 998

# A word longer than this cannot be folded and is sent as encoded words
# instead; with a header name of at most _NAME_LIMIT it stays under 998.
_WORD_LIMIT: Final = 900
_NAME_LIMIT: Final = 64

# RFC 2047 2: an encoded word is at most 75 characters, and the continuation
# line adds one space before it.
_ENCODED_WORD_LINE: Final = 76

# RFC 5322 2.2: a field name is printable ASCII except the colon.
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")

# What an addr-spec may hold once it is in a header: no whitespace, nothing that
# would end the angle-addr or start another mailbox (RFC 5322 3.4).
_ADDR_SPEC: Final = re.compile(r'[^\s<>(),;:"\[\]\\@]+@[^\s<>(),;:"\[\]\\@]+')

# RFC 5322 3.6.4: msg-id is "<" id-left "@" id-right ">".
_MSG_ID: Final = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")

# Headers that build_message writes itself; a draft may not set them again.
_OWN_HEADERS: Final = frozenset(
    {"date", "from", "sender", "to", "cc", "bcc", "reply-to", "subject"}
    | {"message-id", "mime-version", "content-type", "content-transfer-encoding"}
)

_CRLF: Final = "\r\n"
_WORDS: Final = re.compile(r"[ \t]+[^ \t]+")
_LINE_ENDS: Final = re.compile(r"\r\n|\r|\n")


@dataclass
class Draft:
    """A message as a person writes it, before it becomes bytes."""

    sender: Address
    to: list[Address]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: list[Address] = field(default_factory=list)
    reply_to: Address | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    date: datetime | None = None


def make_message_id(domain: str) -> str:
    """A new ``<unique@domain>`` message identifier (RFC 5322 3.6.4).

    The left side is 128 random bits, so two ids collide only by astronomical
    chance, without any state shared between processes.
    """
    return f"<{os.urandom(16).hex()}@{ascii_domain(domain)}>"


def build_message(
    draft: Draft, *, smtputf8: bool = False, eight_bit: bool = False
) -> bytes:
    """The wire bytes of *draft*, CRLF line ends, ready for SMTP DATA.

    With *smtputf8*, non-ASCII header text is sent as raw UTF-8 (RFC 6532 3.2);
    otherwise it becomes RFC 2047 encoded words.  With *eight_bit* (the server
    offers 8BITMIME, RFC 6152), bodies whose lines all fit go unencoded.  The
    draft is not changed: a caller that records the Message-ID sets it first.
    """
    head = _head(draft, smtputf8)
    text, html = _texts(draft)

    if html is None:
        return head + _part(text, "plain", eight_bit)

    parts = (_part(text, "plain", eight_bit), _part(html, "html", eight_bit))
    return head + _alternative(parts)


def _head(draft: Draft, smtputf8: bool) -> bytes:
    lines = [
        f"Date: {_date(draft.date)}",
        _address_header("From", (draft.sender,), smtputf8),
        _address_header("To", draft.to, smtputf8),
    ]
    if draft.cc:
        lines.append(_address_header("Cc", draft.cc, smtputf8))
    if draft.reply_to is not None:
        lines.append(_address_header("Reply-To", (draft.reply_to,), smtputf8))

    lines.append(_text_header("Subject", draft.subject, smtputf8))
    lines.append(f"Message-ID: {_message_id(draft)}")
    lines.append("MIME-Version: 1.0")
    lines.extend(_extra_headers(draft.headers, smtputf8))
    return _utf8("headers", "\r\n".join(lines) + "\r\n")


def _texts(draft: Draft) -> tuple[str, str | None]:
    if draft.text is None and draft.html is None:
        raise InputError(
            "text", Text("the message has no body"), Text("give a text or HTML body")
        )

    # RFC 2046 5.1.4: the alternative to HTML is a plain rendering of it.
    text = draft.text if draft.text is not None else html_to_text(draft.html or "")
    return text, draft.html


# ---------------------------------------------------------------- headers


def _date(value: datetime | None) -> str:
    if value is None:
        return _date_for_second(int(utcnow().timestamp()))
    if value.tzinfo is None:
        raise InputError(
            "date", Text("has no time zone"), Text("use an aware datetime")
        )
    # RFC 5322 3.3 counts whole seconds; a campaign's messages share a few.
    return _date_text(value.replace(microsecond=0))


@functools.lru_cache(maxsize=64)
def _date_text(value: datetime) -> str:
    return format_datetime(value)


@functools.lru_cache(maxsize=4)
def _date_for_second(timestamp: int) -> str:
    # A campaign builds many messages within one second; they share the text.
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _message_id(draft: Draft) -> str:
    if not draft.message_id:
        return make_message_id(draft.sender.domain)
    if not _MSG_ID.fullmatch(draft.message_id):
        problem = Text("not a msg-id: {value!r}", value=draft.message_id)
        fix = Text("use the form <unique@example.com>")
        raise InputError("message_id", problem, fix)
    return draft.message_id


def _extra_headers(headers: dict[str, str], smtputf8: bool) -> Iterable[str]:
    for name, value in headers.items():
        _check_field_name(name)
        yield _text_header(name, value, smtputf8)


def _check_field_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name) or len(name) > _NAME_LIMIT:
        fix = Text(
            "use printable ASCII without ':' and at most {limit} characters",
            limit=_NAME_LIMIT,
        )
        raise InputError("headers", Text("not a header name: {name!r}", name=name), fix)
    if name.lower() in _OWN_HEADERS:
        problem = Text("{name} is written by mailroom itself", name=name)
        fix = Text("set it through the draft's own attribute")
        raise InputError("headers", problem, fix)


def _text_header(name: str, value: str, smtputf8: bool) -> str:
    """An unstructured header (RFC 5322 3.2.5), folded only at its own spaces."""
    check_header_value(name.lower(), value)

    # RFC 5322 2.2.3: surrounding whitespace does not survive unfolding.
    value = value.strip(" \t")
    if _may_send_raw(value, smtputf8):
        words = _WORDS.findall(" " + value)
        if _all_fit(value, words):
            return _fold(name, words)

    encoded = Header(value, "utf-8", maxlinelen=_FOLD_AT, header_name=name)
    return f"{name}: {encoded.encode(linesep=_CRLF)}"


def _address_header(name: str, mailboxes: Sequence[Address], smtputf8: bool) -> str:
    """An address list (RFC 5322 3.4), one mailbox after another."""
    if not mailboxes:
        raise InputError(
            name.lower(), Text("has no address"), Text("give at least one address")
        )

    words: list[str] = []
    for mailbox in mailboxes:
        if words:
            words[-1] += ","
        words.extend(_mailbox_words(mailbox, smtputf8, name.lower()))
    return _fold(name, words)


@functools.lru_cache(maxsize=4096)
def _mailbox_words(mailbox: Address, smtputf8: bool, field: str) -> tuple[str, ...]:
    # Cached: the sender's mailbox is the same for every message of a campaign.
    spec = _addr_spec(mailbox, smtputf8, field)
    if not mailbox.display_name:
        return (f" {spec}",)
    return (*_phrase_words(mailbox.display_name, smtputf8, field), f" <{spec}>")


def _addr_spec(mailbox: Address, smtputf8: bool, field: str) -> str:
    spec = f"{mailbox.local_part}@{mailbox.domain}"
    if not _ADDR_SPEC.fullmatch(spec) or len(spec) > 254:
        problem = Text("not an address: {spec!r}", spec=spec)
        raise InputError(field, problem, Text("use parse_address"))

    # RFC 6531 3.2: a non-ASCII local part cannot be written any other way.
    if needs_smtputf8(mailbox) and not smtputf8:
        fix = Text("send through a server that offers SMTPUTF8")
        raise InputError(field, Text("{spec} needs SMTPUTF8", spec=spec), fix)
    return spec


def _phrase_words(name: str, smtputf8: bool, field: str) -> tuple[str, ...]:
    check_header_value(field, name)
    if _may_send_raw(name, smtputf8):
        words = tuple(_WORDS.findall(" " + quote_phrase(name)))
        if _all_fit(name, words):
            return words

    # RFC 2047 5(3): encoded words may stand for a phrase, but not inside a
    # quoted string, so the whole name is encoded.
    encoded = Header(name, "utf-8", maxlinelen=_ENCODED_WORD_LINE).encode()
    return tuple(f" {word}" for word in encoded.split())


def _may_send_raw(text: str, smtputf8: bool) -> bool:
    # Text that looks like an encoded word would be decoded by the reader
    # (RFC 2047 6.1), so it is encoded itself to arrive as written.
    return (smtputf8 or text.isascii()) and "=?" not in text


def _fold(name: str, words: Iterable[str]) -> str:
    """Join *words* (each led by whitespace) into lines of at most 78 octets.

    RFC 5322 2.2.3: folding puts a CRLF before existing whitespace, so a reader
    gets the value back by deleting the CRLFs.
    """
    lines: list[str] = []
    line, width = f"{name}:", len(name) + 1
    for word in words:
        size = _octets(word)
        if width + size > _FOLD_AT and line != f"{name}:":
            lines.append(line)
            line, width = word, size
        else:
            line, width = line + word, width + size
    lines.append(line)
    return "\r\n".join(lines)


def _all_fit(text: str, words: Iterable[str]) -> bool:
    # A short value needs no word-by-word look.
    return _octets(text) <= _WORD_LIMIT or all(
        _octets(word) <= _WORD_LIMIT for word in words
    )


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _utf8(field: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        problem = Text(
            "holds text that is not valid Unicode: {reason}", reason=exc.reason
        )
        raise InputError(field, problem, Text("remove unpaired surrogates")) from exc


# ------------------------------------------------------------------ bodies


def _part(text: str, subtype: str, eight_bit: bool) -> bytes:
    """A text part: its Content-Type, its transfer encoding and its body."""
    data, encoding = _encode_body(_utf8(subtype, _crlf(text)), eight_bit)
    head = (
        f"Content-Type: text/{subtype}; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + data


def _crlf(text: str) -> str:
    # RFC 5322 2.3: a body's lines end in CRLF, and only there.  The last line
    # is ended too, as every MIME part delimiter expects (RFC 2046 5.1.1).
    fixed = _LINE_ENDS.sub(_CRLF, text) if "\r" in text else text.replace("\n", _CRLF)
    return fixed if fixed.endswith(_CRLF) else fixed + _CRLF


def _encode_body(data: bytes, eight_bit: bool) -> tuple[bytes, str]:
    # RFC 2045 2.7-2.8: 7bit and 8bit data have lines of at most 998 octets and
    # no NUL; 8bit also needs the server's 8BITMIME (RFC 6152).
    fits = len(data) <= _LINE_LIMIT or max(map(len, data.split(b"\r\n"))) <= _LINE_LIMIT
    if fits and b"\x00" not in data:
        if data.isascii():
            return data, "7bit"
        if eight_bit:
            return data, "8bit"

    # RFC 2045 6.7: quoted-printable lines are at most 76 characters.
    return binascii.b2a_qp(data, istext=True, header=False), "quoted-printable"


def _alternative(parts: Sequence[bytes]) -> bytes:
    """A multipart/alternative body holding *parts*, plainest first."""
    boundary = _boundary(parts)
    head = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'

    # RFC 2046 5.1.1: the CRLF before a delimiter belongs to the delimiter, so
    # each part's own final line end is kept.
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    body = delimiter[2:] + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return head.encode("ascii") + body


def _boundary(parts: Sequence[bytes]) -> str:
    # RFC 2046 5.1.1: the boundary must not occur in any part.  "=_" never
    # occurs in quoted-printable, and 7bit/8bit text would have to contain 128
    # random bits, so the second try is already out of reach.
    for _ in range(8):
        boundary = f"=_{os.urandom(16).hex()}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary
    raise InputError("text", Text("no multipart boundary fits the body"), Text("retry"))
