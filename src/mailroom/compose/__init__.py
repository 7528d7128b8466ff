"""Message composition: a draft in, RFC 5322 wire bytes out."""

from mailroom.compose.html_text import html_to_text
from mailroom.compose.message import Draft, build_message, make_message_id

__all__ = ["Draft", "build_message", "html_to_text", "make_message_id"]
