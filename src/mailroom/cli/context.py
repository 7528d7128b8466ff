"""What every command shares: settings, the opened core, the console, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from mailroom.addresses import parse_address
from mailroom.config import Settings
from mailroom.core import Mailroom, NotInitialisedError
from mailroom.errors import InputError, MailroomError, NotFoundError, RoutingError
from mailroom.i18n import _
from mailroom.teams import Team

# soft_wrap: long lines stay whole in logs and pipes instead of breaking at 80.
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

# Exit statuses: 0 success, 1 a failure to do the job, 2 bad input.
EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass(slots=True)
class State:
    home: Path | None = None
    database_url: str | None = None

    def settings(self) -> Settings:
        return Settings.from_env(self.home, self.database_url)


STATE = State()


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    label = _("error:")
    errors.print(f"[red]{label}[/red] {message}", markup=True)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn mailroom's errors into a message and an exit status, no traceback."""
    try:
        yield
    except InputError as exc:
        fail(str(exc), EXIT_USAGE)
    except (NotFoundError, RoutingError, NotInitialisedError) as exc:
        fail(str(exc), EXIT_USAGE)
    except MailroomError as exc:
        fail(str(exc))
    except DBAPIError as exc:
        # Mid-run (a server gone, a disk full): one line, not a traceback.
        # The driver's first line names the problem, never a password.
        first_line = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        fail(
            _(
                "the database failed: {problem}; what it had recorded is kept, "
                "and mail being sent is taken back when its lease runs out"
            ).format(problem=first_line)
        )


@contextmanager
def opened() -> Iterator[Mailroom]:
    with friendly_errors():
        mr = Mailroom(STATE.settings())
        try:
            yield mr
        finally:
            mr.close()


def label(word: str) -> str:
    """A message state or channel status as a person reads it (JSON keeps
    the English word, which scripts match on)."""
    labels = {
        "queued": _("queued"),
        "sending": _("sending"),
        "sent": _("sent"),
        "deferred": _("deferred"),
        "held": _("held"),
        "failed": _("failed"),
        "bounced": _("bounced"),
        "cancelled": _("cancelled"),
        "untested": _("untested"),
        "connected": _("connected"),
        "paused": _("paused"),
        "disconnected": _("disconnected"),
        "retired": _("retired"),
    }
    return labels.get(str(word), str(word))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    sys.stdout.write("\n")


def print_fields(view: dict[str, Any], keys: Iterable[str] | None = None) -> None:
    """A report as "key: value" lines a person can read."""
    for key in keys or view:
        console.print(f"{key}: {_shown(view[key])}", markup=False)


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value) or "-"
    return str(value)


def read_secret(from_stdin: bool, prompt: str) -> str:
    """A password from standard input or a hidden prompt, never from a flag."""
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        value = typer.prompt(prompt, hide_input=True)
    else:
        raise InputError(
            "password",
            _("no terminal to prompt on"),
            _("pipe it in and pass --password-stdin"),
        )
    if not value:
        raise InputError("password", _("is empty"), _("give the channel's password"))
    return value


def pick_team(mr: Mailroom, name: str | None, sender: str | None = None) -> Team:
    """The team named, the only one, or the one the From address belongs to."""
    if name:
        return mr.teams.get(name)
    only = mr.teams.only()
    if only is not None:
        return only
    if sender is not None:
        address = parse_address(sender, "from").addr_spec
        teams = mr.teams.for_sender(address)
        if len(teams) == 1:
            return teams[0]
        if teams:
            problem = _("{address} belongs to several teams ({names})").format(
                address=address, names=", ".join(team.name for team in teams)
            )
            raise InputError("team", problem, _("pass --team NAME"))
    names = mr.teams.names()
    if not names:
        raise InputError("team", _("no team exists"), _("add one with `team add`"))
    problem = _("several teams exist ({names})").format(names=", ".join(names))
    raise InputError("team", problem, _("pass --team NAME"))
