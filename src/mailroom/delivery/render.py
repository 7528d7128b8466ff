"""From a stored message to the bytes on the wire, for one server's extensions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailroom.addresses import Address
from mailroom.compose.message import Draft, build_message
from mailroom.store.records import Pending


def render_message(message: Pending, smtputf8: bool, eight_bit: bool) -> bytes:
    """Build the message as accepted, encoded for what the server offers."""
    return build_message(
        to_draft(message.sender, message.message_id, message.content),
        smtputf8=smtputf8,
        eight_bit=eight_bit,
    )


def to_draft(sender: str, message_id: str, content: dict[str, Any]) -> Draft:
    return Draft(
        sender=Address(sender, content.get("from_name", "")),
        to=_addresses(content.get("to", [])),
        cc=_addresses(content.get("cc", [])),
        reply_to=_address(content.get("reply_to")),
        subject=content.get("subject", ""),
        text=content.get("text"),
        html=content.get("html"),
        headers=dict(content.get("headers", {})),
        message_id=message_id,
        date=datetime.fromisoformat(content["date"]) if "date" in content else None,
    )


def _addresses(pairs: list[list[str]]) -> list[Address]:
    return [Address(addr, name) for name, addr in pairs]


def _address(pair: list[str] | None) -> Address | None:
    return Address(pair[1], pair[0]) if pair else None
