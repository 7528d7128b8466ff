"""`mailroom channel connect gmail|microsoft --owner ADDRESS`.

Prints the consent address (and opens it in a browser when asked), waits for
the answer on a loopback listener, and prints the outcome.  Nothing it prints
holds a token, a code, the PKCE verifier or the client secret: the consent
address carries only the client id, the state and the S256 challenge.
"""

from __future__ import annotations

import asyncio
import logging
import webbrowser
from collections.abc import Callable

from rich.console import Console

from mailroom.cli.context import pick_team
from mailroom.core import Mailroom
from mailroom.errors import InputError, MailroomError, NotFoundError
from mailroom.i18n import _
from mailroom.oauth.connect import Connected, Connector, ConnectRequest
from mailroom.oauth.providers import load_providers

log = logging.getLogger("mailroom.oauth")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def connect_command(
    mr: Mailroom,
    provider: str,
    owner: str,
    team: str | None,
    name: str | None,
    open_browser: bool,
    console: Console,
) -> int:
    """Connect (or reconnect) ``owner``'s mailbox; returns the exit status."""
    try:
        request = ConnectRequest(provider, owner, pick_team(mr, team, owner).id, name)
        connector = Connector(mr, load_providers())
        result = asyncio.run(
            connector.connect_loopback(request, _shower(console, owner, open_browser))
        )
    except (InputError, NotFoundError) as exc:
        _say(console, _("error: {error}").format(error=exc))
        return EXIT_USAGE
    except MailroomError as exc:
        _say(console, _("error: {error}").format(error=exc))
        return EXIT_FAILURE
    _report(console, result)
    return EXIT_OK


def _shower(console: Console, owner: str, open_browser: bool) -> Callable[[str], None]:
    def show(url: str) -> None:
        opening = _("Open this address and sign in as {owner}:")
        _say(console, opening.format(owner=owner))
        _say(console, url)
        if open_browser:
            _open(url)
        _say(console, _("Waiting for the answer..."))

    return show


def _open(url: str) -> None:
    # Without a graphical session ``webbrowser`` finds nothing; the printed
    # address is enough then (RFC 8252 allows any browser on this machine).
    try:
        webbrowser.open(url)
    except webbrowser.Error:
        log.debug("no browser to open the consent address in")


def _report(console: Console, result: Connected) -> None:
    channel = result.channel
    if result.reconnected:
        done = _("reconnected channel {name} ({kind}) for {owner}")
    else:
        done = _("connected channel {name} ({kind}) for {owner}")
    _say(
        console, done.format(name=channel.name, kind=channel.kind, owner=channel.owner)
    )
    if result.resumed:
        _say(console, _("{n} held message(s) queued again").format(n=result.resumed))


def _say(console: Console, text: str) -> None:
    # soft_wrap keeps the long consent address on one line, so it can be copied.
    console.print(text, markup=False, highlight=False, soft_wrap=True)
