"""Email addresses and header values, checked at the boundary.

Everything that ends up in an SMTP command or a message header passes through
here first.  Addresses are validated with ``email-validator`` and their domain is
kept in its IDNA (ASCII) form, so the envelope and the headers never carry a
U-label.  Header values are refused when they hold a line break or a NUL, which
would let a person smuggle extra headers into a message (RFC 5322 2.2).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.errors import InvalidHeaderDefect
from email.headerregistry import AddressHeader, HeaderRegistry
from typing import Final, cast

import idna
from email_validator import EmailNotValidError, validate_email

from mailroom.errors import InputError
from mailroom.i18n import Text

# C0 controls and DEL; RFC 5322 3.2.3 has no room for them in a phrase or an
# addr-spec, and RFC 6532 3.2 does not add any.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

# RFC 5322 2.2: a header field is one logical line; CR and LF end it, and NUL is
# not allowed anywhere in a message (RFC 5322 3.5).
_HEADER_BREAKERS: Final = re.compile(r"[\r\n\x00]")

_ADDRESS_FIX: Final = Text("write it as name@example.com or Name <name@example.com>")

# Parses a mailbox the way a received header would be read (RFC 5322 3.4),
# decoding RFC 2047 encoded words in the display name.
_REGISTRY: Final = HeaderRegistry()


@dataclass(frozen=True)
class Address:
    """A mailbox: an addr-spec and an optional display name."""

    addr_spec: str
    display_name: str = ""

    @property
    def local_part(self) -> str:
        """The part before the last ``@``, as written."""
        return self.addr_spec.rpartition("@")[0]

    @property
    def domain(self) -> str:
        """The domain, lowercased, in its ASCII (IDNA A-label) form."""
        return ascii_domain(self.addr_spec.rpartition("@")[2])

    def __str__(self) -> str:
        if not self.display_name:
            return self.addr_spec
        return f"{quote_phrase(self.display_name)} <{self.addr_spec}>"


def parse_address(text: str, field: str) -> Address:
    """Parse ``Name <a@example.com>`` or ``a@example.com`` into an ``Address``.

    The domain is lowercased and converted to IDNA; the local part is kept as
    written (RFC 5321 2.4 makes it case-sensitive).  Raises ``InputError``
    naming *field* when the text is not a single valid mailbox.
    """
    _refuse_controls(field, text)
    name, spec = _split_mailbox(field, text)

    try:
        valid = validate_email(spec, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        # email-validator's own words, in English: it has no Japanese.
        raise InputError(field, str(exc), _ADDRESS_FIX) from exc

    return Address(f"{valid.local_part}@{valid.ascii_domain}", name)


def check_header_value(field: str, value: str) -> str:
    """Return *value* unchanged, or raise ``InputError`` if it holds CR, LF or NUL.

    A line break in a header value would start a new header (RFC 5322 2.2), which
    is how header injection works.
    """
    found = _HEADER_BREAKERS.search(value)
    if found is not None:
        problem = Text("contains a line break or NUL ({found!r})", found=found.group())
        raise InputError(field, problem, Text("put the value on one line"))
    return value


def needs_smtputf8(addr: Address) -> bool:
    """True when the local part is not ASCII (RFC 6531 3.2 needs SMTPUTF8).

    The domain never needs it, since it is always sent in its A-label form.
    """
    return not addr.local_part.isascii()


def address_key(addr_spec: str) -> str:
    """A comparison key for an addr-spec: case folded on both sides of the ``@``.

    RFC 5321 2.4 lets a server treat local parts case-sensitively, but no mail
    system in practice does, so two rows that differ only in case are one person.
    Text that is not an address is simply lowercased.
    """
    local, at, domain = addr_spec.strip().rpartition("@")
    if not at:
        return addr_spec.strip().lower()
    try:
        domain = ascii_domain(domain)
    except InputError:
        domain = domain.lower()
    return f"{local.lower()}@{domain}"


@functools.lru_cache(maxsize=1024)
def ascii_domain(domain: str) -> str:
    """The IDNA A-label form of *domain*, lowercased (RFC 5890 2.3.2.1)."""
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        problem = Text("not a valid domain name: {reason}", reason=str(exc))
        fix = Text("check the domain's spelling")
        raise InputError("domain", problem, fix) from exc


def _refuse_controls(field: str, text: str) -> None:
    found = _CONTROL.search(text)
    if found is not None:
        problem = Text("contains a control character ({found!r})", found=found.group())
        fix = Text("remove line breaks and control characters")
        raise InputError(field, problem, fix)


def _split_mailbox(field: str, text: str) -> tuple[str, str]:
    # A bare address needs no header parsing; contact files are mostly these.
    text = text.strip()
    if "<" not in text and " " not in text and "," not in text:
        return "", text

    try:
        parsed = _REGISTRY("to", text)
        addresses = cast(AddressHeader, parsed).addresses
    except ValueError as exc:
        problem = Text("not an email address: {reason}", reason=str(exc))
        raise InputError(field, problem, _ADDRESS_FIX) from None
    broken = any(isinstance(d, InvalidHeaderDefect) for d in parsed.defects)
    if broken or len(addresses) != 1:
        problem = Text("not a single email address: {text!r}", text=text)
        raise InputError(field, problem, _ADDRESS_FIX)

    mailbox = addresses[0]
    # An encoded word (RFC 2047) can smuggle in what the raw text did not show.
    _refuse_controls(field, mailbox.display_name)
    return " ".join(mailbox.display_name.split()), mailbox.addr_spec


# RFC 5322 3.2.3: characters that may stand in an atom, plus the space between
# the atoms of a phrase.  RFC 6532 3.2 adds every non-ASCII character.
_PHRASE_SAFE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ \x80-\U0010ffff]*")


def quote_phrase(name: str) -> str:
    if _PHRASE_SAFE.fullmatch(name) and name.strip() == name and "  " not in name:
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
