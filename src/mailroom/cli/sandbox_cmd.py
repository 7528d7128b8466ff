"""`mailroom sandbox`: the built-in SMTP server, in the foreground."""

from __future__ import annotations

import secrets
import signal
import threading
from pathlib import Path

from mailroom.cli.context import EXIT_USAGE, console, fail, read_secret
from mailroom.i18n import _
from mailroom.sandbox import SandboxServer
from mailroom.secrets import Secret


def run_sandbox(port: int, folder: Path, password_stdin: bool) -> None:
    """Serve until Ctrl-C or SIGTERM; prints how to point a channel at it."""
    generated = not password_stdin
    password = Secret(
        read_secret(True, "") if password_stdin else secrets.token_urlsafe(18)
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = SandboxServer(folder, port=port, password=password)
    try:
        server.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fail(
            _("cannot listen on port {port}: {reason}; pass another --port").format(
                port=port, reason=reason
            ),
            EXIT_USAGE,
        )
    try:
        _announce(server, password, generated)
        stop.wait()
    finally:
        server.stop()


def _announce(server: SandboxServer, password: Secret, generated: bool) -> None:
    console.print(
        _("sandbox SMTP on {host}:{port}, STARTTLS then AUTH as {user}").format(
            host=server.host, port=server.port, user=server.username
        )
    )
    console.print(_("CA certificate: {ca}").format(ca=server.ca_path))
    console.print(_("Maildir: {path}").format(path=server.maildir_path))
    if generated:
        # Shown once on the operator's own terminal: it was made just now and
        # exists nowhere else.  It changes on every start; update the channel
        # with `channel update NAME --password`.
        console.print(_("password (this run only): {pw}").format(pw=password.reveal()))
