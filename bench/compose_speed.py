"""Micro benchmark: build_message against EmailMessage, per message.

Informational only.  Each message is one contact of a personalized campaign,
with a text and an HTML body of about 2 KB each; the stdlib side builds the
same content with ``EmailMessage`` and ``as_bytes``.

    PYTHONPATH=src python bench/compose_speed.py
"""

from __future__ import annotations

import email.policy
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address as StdAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailroom.addresses import Address
from mailroom.compose import Draft, build_message, make_message_id

ROUNDS = 2000
WHEN = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SENDER = Address("sales@example.com", "Équipe Ventes")

PARAGRAPH = (
    "We help teams like {company} send fewer, better emails. Our customers "
    "cut their bounce rate in half within a month, and kept it there. "
)
SUBJECTS = {
    "ascii": "{name}, a quick question about {company}",
    "japanese": "{name}様、{company}の新製品のご案内",
}


def contact(i: int) -> dict[str, str]:
    """The fields of the i-th contact."""
    return {"name": f"Person{i}", "company": f"Company {i % 97}", "i": str(i)}


def bodies(fields: dict[str, str]) -> tuple[str, str]:
    """A personalized text body and HTML body of about 2 KB each."""
    paragraph = PARAGRAPH.format(**fields)
    text = f"Hi {fields['name']},\n\n" + f"{paragraph}\n\n" * 14
    html = f"<p>Hi {fields['name']},</p>\n" + f"<p>{paragraph}</p>\n" * 13
    return text, html


def ours(i: int, subject: str, smtputf8: bool) -> bytes:
    """One message through build_message."""
    fields = contact(i)
    text, html = bodies(fields)
    draft = Draft(
        sender=SENDER,
        to=[Address(f"person{i}@example.org", fields["name"])],
        subject=subject.format(**fields),
        text=text,
        html=html,
        date=WHEN,
        message_id=make_message_id("example.com"),
    )
    return build_message(draft, smtputf8=smtputf8, eight_bit=smtputf8)


def stdlib(i: int, subject: str, smtputf8: bool) -> bytes:
    """The same message through EmailMessage and its generator."""
    fields = contact(i)
    text, html = bodies(fields)
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    msg["Date"] = format_datetime(WHEN)
    msg["From"] = StdAddress(SENDER.display_name, addr_spec=SENDER.addr_spec)
    msg["To"] = StdAddress(fields["name"], addr_spec=f"person{i}@example.org")
    msg["Subject"] = subject.format(**fields)
    msg["Message-ID"] = make_message_id("example.com")
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def per_message(build: Callable[[int, str, bool], bytes], *args: object) -> float:
    """Microseconds per message, best of three runs."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(ROUNDS):
            build(i, *args)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - start)
    return best / ROUNDS * 1e6


def main() -> None:
    """Print one line per case."""
    print(f"{'case':<22}{'build_message':>15}{'EmailMessage':>15}{'ratio':>8}")
    for label, subject in SUBJECTS.items():
        for smtputf8 in (False, True):
            case = f"{label}{' smtputf8' if smtputf8 else ''}"
            fast = per_message(ours, subject, smtputf8)
            slow = per_message(stdlib, subject, smtputf8)
            print(f"{case:<22}{fast:>12.1f} µs{slow:>12.1f} µs{slow / fast:>7.1f}x")


if __name__ == "__main__":
    main()
