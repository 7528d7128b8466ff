"""`mailroom team ...`: teams, their domains, members and suppression list."""

from __future__ import annotations

from typing import Annotated

import typer

from mailroom.addresses import parse_address
from mailroom.cli.context import (
    console,
    friendly_errors,
    opened,
    print_fields,
    print_json,
)
from mailroom.errors import InputError
from mailroom.i18n import _

app = typer.Typer(help=_("Teams, their sending domains and members."))


def _domains(values: list[str]) -> list[str]:
    checked = []
    for value in values:
        if "@" in value or "." not in value or " " in value:
            raise InputError(
                "domain",
                _("{value!r} is not a domain").format(value=value),
                _("e.g. example.com"),
            )
        checked.append(value.lower())
    return checked


def _members(values: list[str]) -> list[str]:
    return [parse_address(v, "member").addr_spec.lower() for v in values]


@app.command("add")
def add(
    name: str,
    domain: Annotated[list[str], typer.Option(help=_("A sending domain."))],
    member: Annotated[list[str], typer.Option(help=_("A member's address."))],
) -> None:
    """Add a team with its sending domains and members."""
    with opened() as mr, friendly_errors():
        team = mr.teams.add(name, _domains(domain), _members(member))
    console.print(
        _("added team {name}: {domains}; {n} member(s)").format(
            name=team.name, domains=", ".join(team.domains), n=len(team.members)
        )
    )


@app.command("add-member")
def add_member(name: str, member: list[str]) -> None:
    """Add members (by email address) to a team."""
    with opened() as mr, friendly_errors():
        team = mr.teams.get(name)
        mr.teams.add_members(
            team.id, [m for m in _members(member) if m not in team.members]
        )
    console.print(_("updated team {name}").format(name=name))


@app.command("add-domain")
def add_domain(name: str, domain: list[str]) -> None:
    """Add sending domains to a team."""
    with opened() as mr, friendly_errors():
        team = mr.teams.get(name)
        new = [d for d in _domains(domain) if d not in team.domains]
        mr.teams.add_domains(team.id, new)
    console.print(_("updated team {name}").format(name=name))


@app.command("show")
def show(name: str, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a team's domains, members and suppression list size."""
    with opened() as mr, friendly_errors():
        team = mr.teams.get(name)
        view = {
            "name": team.name,
            "domains": team.domains,
            "members": team.members,
            "suppressed": sorted(mr.teams.suppressed(team.id)),
        }
    if json:
        print_json(view)
        return
    print_fields(view)


@app.command("unsuppress")
def unsuppress(name: str, address: str) -> None:
    """Take an address off the team's suppression list."""
    with opened() as mr, friendly_errors():
        removed = mr.teams.unsuppress(mr.teams.get(name).id, address)
    console.print(_("removed") if removed else _("not on the list"))
