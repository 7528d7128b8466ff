"""`mailroom channel ...`: add, list, show, test, update, remove, connect."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from mailroom.channels.model import Channel, Scope, Security
from mailroom.channels.presets import PRESETS, get_preset
from mailroom.channels.registry import ChannelSpec
from mailroom.cli.context import (
    EXIT_FAILURE,
    console,
    errors,
    friendly_errors,
    label,
    opened,
    pick_team,
    print_fields,
    print_json,
    read_secret,
)
from mailroom.core import Mailroom
from mailroom.errors import InputError
from mailroom.i18n import _
from mailroom.reports import channel_view
from mailroom.sandbox.certs import CA_FILE, tls_folder
from mailroom.secrets import Secret

app = typer.Typer(help=_("Delivery channels: your own SMTP servers and services."))

TeamOpt = Annotated[str | None, typer.Option("--team", help=_("Team name."))]
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Print JSON."))]
PlatformOpt = Annotated[
    bool, typer.Option("--platform", help=_("The platform's own channel."))
]
StdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help=_("Read the password from standard input.")),
]


def _find(mr: Mailroom, team: str | None, name: str, platform: bool) -> Channel:
    if platform:
        return mr.channels.find(None, name)
    if team is None:
        return mr.channels.find_anywhere(name)
    return mr.channels.find(pick_team(mr, team).id, name)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help=_("A short name for the channel."))],
    kind: Annotated[
        str, typer.Option(help=_("One of: {kinds}.").format(kinds=", ".join(PRESETS)))
    ],
    team: TeamOpt = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    security: Annotated[Security | None, typer.Option()] = None,
    scope: Annotated[Scope | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option(help=_("Mailbox owner."))] = None,
    domain: Annotated[list[str] | None, typer.Option(help=_("Sending domain."))] = None,
    alias: Annotated[list[str] | None, typer.Option(help=_("Owner alias."))] = None,
    per_minute: Annotated[int | None, typer.Option()] = None,
    per_day: Annotated[int | None, typer.Option(help=_("Recipients/24h."))] = None,
    min_interval: Annotated[float | None, typer.Option(help=_("Seconds."))] = None,
    max_recipients: Annotated[int | None, typer.Option()] = None,
    connections: Annotated[int, typer.Option(help=_("Parallel sessions."))] = 1,
    ca_bundle: Annotated[str | None, typer.Option(help=_("PEM file of CAs."))] = None,
    insecure_skip_verify: Annotated[
        bool, typer.Option(help=_("Accept any certificate (self-signed servers)."))
    ] = False,
    platform_default: Annotated[
        bool, typer.Option(help=_("The platform's default relay (operators)."))
    ] = False,
    password_stdin: StdinOpt = False,
) -> None:
    """Add a delivery channel; the password comes from stdin or a prompt."""
    with opened() as mr, friendly_errors():
        preset = get_preset(kind)
        team_id = None if platform_default else pick_team(mr, team).id
        user = username if username is not None else preset.username
        secret = None
        if user or password_stdin:
            secret = Secret(read_secret(password_stdin, _("Password")))
        limits = _limits(per_minute, per_day, min_interval, max_recipients)
        own_ca = _own_sandbox_ca(mr) if kind == "sandbox" and not ca_bundle else None
        spec = ChannelSpec(
            name=name,
            kind=kind,
            team_id=team_id,
            host=host,
            port=port,
            security=security,
            scope=Scope.platform if platform_default else scope,
            username=username,
            secret=secret,
            owner=owner,
            domains=domain or [],
            aliases=alias or [],
            limits=limits,
            ca_bundle=ca_bundle or own_ca,
            verify_tls=not insecure_skip_verify,
            connections=connections,
        )
        channel = mr.channels.add(spec)
    _warn(channel, preset.note)
    if kind == "sandbox" and not ca_bundle:
        _say_sandbox_ca(own_ca)
    console.print(
        _("added channel {name} ({kind}, {host}:{port})").format(
            name=channel.name, kind=channel.kind, host=channel.host, port=channel.port
        )
    )


def _limits(*values: Any) -> dict[str, Any]:
    names = ("per_minute", "per_day", "min_interval", "max_recipients")
    return {n: v for n, v in zip(names, values, strict=True) if v is not None}


def _warn(channel: Channel, note: str) -> None:
    if not channel.verify_tls:
        errors.print(
            _(
                "warning: certificate checks are off for {name}; anyone on "
                "the path can read its mail and password"
            ).format(name=channel.name)
        )
    if note:
        errors.print(_("note: {note}").format(note=_(note)))


@app.command("list")
def list_(team: TeamOpt = None, json: JsonOpt = False) -> None:
    """List channels with their connection status."""
    with opened() as mr, friendly_errors():
        team_id = pick_team(mr, team).id if (team or mr.teams.only()) else None
        channels = mr.channels.list(team_id, everything=team_id is None)
        teams = _team_names(mr, channels)
    if json:
        print_json([channel_view(c, teams.get(c.team_id)) for c in channels])
        return
    headers = [_("name"), _("team"), _("kind"), _("scope"), _("server")]
    headers += [_("limits"), _("status")]
    # Folded, never cut short: a port hidden behind "…" is no help.
    table = Table(*(Column(h, overflow="fold") for h in headers))
    for c in channels:
        # The reason is for `channel show`; a paused channel says until when.
        status = label(c.status)
        if c.status == "paused" and c.paused_until:
            status += _(" until {at:%H:%M} UTC").format(at=c.paused_until)
        table.add_row(
            c.name,
            teams.get(c.team_id) or _("(platform)"),
            c.kind,
            str(c.scope),
            f"{c.host}:{c.port} ({c.security})",
            c.limits.describe(),
            status,
        )
    console.print(table)
    for c in channels:
        if c.status == "disconnected":
            errors.print(
                _(
                    "notice: channel {name} is disconnected and holds its "
                    "mail: {reason}"
                ).format(name=c.name, reason=c.status_reason)
            )


def _own_sandbox_ca(mr: Mailroom) -> str | None:
    """The CA of the sandbox `mailroom sandbox` runs from this data folder."""
    ca = tls_folder(mr.settings.home / "sandbox") / CA_FILE
    return str(ca) if ca.is_file() else None


def _say_sandbox_ca(ca: str | None) -> None:
    if ca is not None:
        console.print(_("trusting the sandbox's own CA: {ca}").format(ca=ca))
        return
    errors.print(
        _(
            "note: no sandbox has run from this data folder, so no CA is known; "
            "pass --ca-bundle with the CA file the sandbox printed"
        )
    )


def _team_names(mr: Mailroom, channels: list[Channel]) -> dict[int | None, str]:
    ids = {c.team_id for c in channels if c.team_id is not None}
    return {team_id: mr.teams.by_id(team_id).name for team_id in ids}


@app.command("show")
def show(
    name: str,
    team: TeamOpt = None,
    platform: PlatformOpt = False,
    json: JsonOpt = False,
) -> None:
    """Show one channel's settings and status (never its secret)."""
    with opened() as mr, friendly_errors():
        channel = _find(mr, team, name, platform)
        view = channel_view(channel, _team_names(mr, [channel]).get(channel.team_id))
    if json:
        print_json(view)
        return
    print_fields(view)


@app.command("update")
def update(
    name: str,
    team: TeamOpt = None,
    platform: PlatformOpt = False,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    security: Annotated[Security | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    per_minute: Annotated[int | None, typer.Option()] = None,
    per_day: Annotated[int | None, typer.Option()] = None,
    min_interval: Annotated[float | None, typer.Option()] = None,
    max_recipients: Annotated[int | None, typer.Option()] = None,
    connections: Annotated[int | None, typer.Option()] = None,
    ca_bundle: Annotated[str | None, typer.Option()] = None,
    password_stdin: StdinOpt = False,
    new_password: Annotated[
        bool, typer.Option("--password", help=_("Prompt for a new password."))
    ] = False,
) -> None:
    """Change settings; new credentials reconnect a disconnected channel."""
    with opened() as mr, friendly_errors():
        channel = _find(mr, team, name, platform)
        changes = _changes(
            channel,
            host=host,
            port=port,
            security=security,
            username=username,
            ca_bundle=ca_bundle,
            connections=connections,
        )
        limits = _limits(per_minute, per_day, min_interval, max_recipients)
        if limits:
            changes["limits"] = type(channel.limits)(
                **{**channel_view(channel)["limits"], **limits}
            )
        if password_stdin or new_password:
            changes["secret"] = Secret(read_secret(password_stdin, _("Password")))
        result = mr.update_channel(channel, **changes)
    console.print(_("updated channel {name}").format(name=name))
    if result.queued:
        console.print(
            _(
                "{n} message(s) no longer wait for the channel; a running worker "
                "sends them now"
            ).format(n=result.queued)
        )


def _changes(channel: Channel, **values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("remove")
def remove(name: str, team: TeamOpt = None, platform: PlatformOpt = False) -> None:
    """Remove a channel (one that carried mail is retired, its history kept)."""
    with opened() as mr, friendly_errors():
        deleted = mr.channels.remove(_find(mr, team, name, platform))
    if deleted:
        console.print(_("removed channel {name}").format(name=name))
    else:
        console.print(
            _("retired channel {name}: its past mail keeps its history").format(
                name=name
            )
        )


@app.command("test")
def test(
    name: str,
    team: TeamOpt = None,
    platform: PlatformOpt = False,
    sender: Annotated[str | None, typer.Option(help=_("From address to try."))] = None,
    recipient: Annotated[str | None, typer.Option(help=_("RCPT address."))] = None,
) -> None:
    """Connect, secure, log in and check the sender; sends nothing."""
    from mailroom.delivery.probe import probe, render_transcript
    from mailroom.delivery.transport import Endpoint

    with opened() as mr, friendly_errors():
        channel = _find(mr, team, name, platform)
        source = mr.token_sources(channel) if mr.token_sources else None
        endpoint = Endpoint.for_channel(channel, source)
        address = sender or channel.owner or _any_sender(channel)
        report = asyncio.run(probe(endpoint, address, recipient))
        applied = mr.apply_test(channel, report)
    for line in render_transcript(report):
        console.print(line, markup=False)
    note = get_preset(channel.kind).note
    if note:
        errors.print(_("note: {note}").format(note=_(note)))
    if applied.channel.status is not channel.status:
        console.print(
            _("channel {name} is now {status}").format(
                name=channel.name, status=label(applied.channel.status)
            )
        )
    if applied.queued:
        console.print(
            _(
                "{n} message(s) no longer wait for the channel; a running worker "
                "sends them now"
            ).format(n=applied.queued)
        )
    if not report.ok:
        console.print(_("FAILED: {diagnosis}").format(diagnosis=report.diagnosis))
        raise typer.Exit(EXIT_FAILURE)
    console.print(
        _("OK: {name} accepts mail from {sender}").format(
            name=channel.name, sender=address
        )
    )


def _any_sender(channel: Channel) -> str:
    if not channel.domains:
        raise InputError("sender", _("cannot guess a sender"), _("pass --sender"))
    return f"postmaster@{channel.domains[0]}"


@app.command("connect")
def connect(
    provider: Annotated[str, typer.Argument(help=_("gmail or microsoft."))],
    owner: Annotated[str, typer.Option(help=_("The mailbox to connect."))],
    team: TeamOpt = None,
    name: Annotated[str | None, typer.Option(help=_("Channel name."))] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser")] = False,
) -> None:
    """Connect a Gmail or Microsoft 365 mailbox with OAuth (no password)."""
    from mailroom.cli.oauth_commands import connect_command

    with opened() as mr, friendly_errors():
        code = connect_command(mr, provider, owner, team, name, not no_browser, console)
    raise typer.Exit(code)
