"""The `mailroom` command."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer

from mailroom.cli import campaign_cmds, channel_cmds, send_cmds, team_cmds
from mailroom.cli.context import STATE, console, friendly_errors
from mailroom.config import DATABASE_ENV, HOME_ENV
from mailroom.core import Mailroom
from mailroom.i18n import _

app = typer.Typer(
    help=_("Send sales and outbound email through your team's own channel."),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(team_cmds.app, name="team")
app.add_typer(channel_cmds.app, name="channel")
app.add_typer(campaign_cmds.app, name="campaign")
app.add_typer(send_cmds.message_app, name="message")
app.command("send")(send_cmds.send)
app.command("queue")(send_cmds.queue)
app.command("worker")(send_cmds.worker)


@app.callback()
def main_options(
    home: Annotated[
        Path | None, typer.Option(envvar=HOME_ENV, help=_("Data folder."))
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar=DATABASE_ENV, help=_("SQLAlchemy URL."))
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    STATE.home = home
    STATE.database_url = database_url
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aiosmtpd's own logger (the sandbox server) logs envelope addresses at
    # INFO and a deprecation notice at WARNING on every login.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


@app.command()
def init() -> None:
    """Create the data folder, the secret key (mode 0600) and the database."""
    settings = STATE.settings()
    existed = settings.key_file.exists()
    with friendly_errors():
        Mailroom.init(settings).close()
    if existed:
        console.print(
            _("{home} was already initialised; the schema is up to date").format(
                home=settings.home
            )
        )
        return
    console.print(_("initialised {home}").format(home=settings.home))
    if not os.environ.get("MAILROOM_SECRET_KEY"):
        console.print(
            _("secret key: {path} (keep it safe; back it up)").format(
                path=settings.key_file
            )
        )


@app.command()
def sandbox(
    port: Annotated[int, typer.Option()] = 2525,
    folder: Annotated[Path | None, typer.Option(help=_("Where mail is kept."))] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Run the built-in sandbox SMTP server (STARTTLS, AUTH, Maildir)."""
    from mailroom.cli.sandbox_cmd import run_sandbox

    run_sandbox(port, folder or STATE.settings().home / "sandbox", password_stdin)


@app.command()
def demo() -> None:
    """Run the main job end to end with nothing configured (the data folder is
    kept, so the delivered messages can be opened)."""
    from mailroom.cli.demo import run_demo

    raise typer.Exit(run_demo(console))


def main() -> None:
    _quiet_dependency_warnings()
    app()


def _quiet_dependency_warnings() -> None:
    # Authlib announces on import a move to a package not yet released; it is
    # noise for a person at a terminal.  Its module sets an "always" filter
    # for its own warnings when imported, so ours must come after that.
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
