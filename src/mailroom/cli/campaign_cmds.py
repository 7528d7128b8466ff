"""`mailroom campaign send|status`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from mailroom.campaigns.launch import (
    CampaignPlan,
    CampaignRequest,
    estimate_finish,
    launch,
    plan_campaign,
)
from mailroom.campaigns.template import MessageTemplate
from mailroom.cli.context import (
    console,
    fail,
    friendly_errors,
    opened,
    pick_team,
    print_fields,
    print_json,
)
from mailroom.cli.send_cmds import WaitTimeout, deliver, read_text, worker_notice
from mailroom.core import Mailroom
from mailroom.errors import InputError
from mailroom.i18n import _
from mailroom.reports import campaign_view

app = typer.Typer(help=_("Campaigns: one template, a list of contacts."))

File = Annotated[Path | None, typer.Option(exists=True, dir_okay=False)]


@app.command("send")
def send(
    contacts: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help=_("CSV with an email column.")),
    ],
    sender: Annotated[str, typer.Option("--from", help=_("Name <address>."))],
    subject: Annotated[str, typer.Option(help=_("Subject template."))],
    text_file: File = None,
    html_file: File = None,
    text: Annotated[str | None, typer.Option(help=_("Text template."))] = None,
    name: Annotated[str | None, typer.Option(help=_("Campaign name."))] = None,
    channel: Annotated[str | None, typer.Option()] = None,
    team: Annotated[str | None, typer.Option()] = None,
    dry_run: Annotated[bool, typer.Option(help=_("Preview, send nothing."))] = False,
    previews: Annotated[int, typer.Option(help=_("Previews in a dry run."))] = 3,
    wait: Annotated[bool, typer.Option(help=_("Deliver now and wait."))] = False,
    wait_timeout: WaitTimeout = 600.0,
) -> None:
    """Queue a personalized message to every good row of a contact list."""
    with opened() as mr, friendly_errors():
        body_text = read_text(text_file, "text_file") if text_file else text
        body_html = read_text(html_file, "html_file") if html_file else None
        if body_text is None and body_html is None:
            raise InputError(
                "body", _("is empty"), _("pass --text-file or --html-file")
            )
        template = MessageTemplate(subject, body_text, body_html)
        request = CampaignRequest(
            name or contacts.stem, sender, contacts, template, channel
        )
        plan = plan_campaign(mr, pick_team(mr, team, sender), request)
        _report_plan(plan)
        if dry_run:
            _show_previews(plan, previews)
            return
        launched = launch(mr, plan)
        console.print(
            _("campaign {id} queued: {n} message(s) via channel {channel}").format(
                id=launched.campaign_id,
                n=len(launched.message_ids),
                channel=plan.channel.name,
            )
        )
        _report_finish(plan, launched.finish_at)
        if not wait:
            console.print(worker_notice())
            return
        progress = deliver(mr, launched.message_ids, wait_timeout)
        _summary(mr, launched.campaign_id, progress.elapsed)


def _report_plan(plan: CampaignPlan) -> None:
    console.print(
        _(
            "{rows} row(s): {ready} ready, {bad} with problems, "
            "{dup} duplicate(s), {sup} suppressed"
        ).format(
            rows=plan.total_rows,
            ready=len(plan.renders),
            bad=len({p.line for p in plan.problems}),
            dup=plan.duplicates,
            sup=plan.suppressed,
        )
    )
    for problem in plan.problems:
        console.print(
            _("  line {line}: {field}: {problem}").format(
                line=problem.line, field=problem.field, problem=problem.problem
            ),
            markup=False,
        )


def _report_finish(plan: CampaignPlan, finish_at: datetime | None) -> None:
    if finish_at is None:
        console.print(
            _(
                "channel {name} is disconnected: the campaign is held until its "
                "credentials are updated"
            ).format(name=plan.channel.name)
        )
        return
    if plan.channel.status == "paused" and plan.channel.paused_until:
        console.print(
            _("channel {name} is paused until {at:%H:%M:%S} UTC: {reason}").format(
                name=plan.channel.name,
                at=plan.channel.paused_until,
                reason=plan.channel.status_reason,
            ),
            markup=False,
        )
    console.print(
        _("estimated finish: {at:%Y-%m-%d %H:%M:%S} UTC ({limits})").format(
            at=finish_at, limits=plan.channel.limits.describe()
        )
    )


def _show_previews(plan: CampaignPlan, count: int) -> None:
    for preview in plan.renders[:count]:
        console.rule(_("line {line}: {to}").format(line=preview.line, to=preview.to))
        console.print(
            _("Subject: {subject}").format(subject=preview.rendered.subject),
            markup=False,
        )
        console.print(
            preview.rendered.text or preview.rendered.html or "", markup=False
        )
    console.print(_("dry run: nothing was queued or sent"))


def _summary(mr: Mailroom, campaign_id: int, elapsed: float) -> None:
    view = campaign_view(mr, campaign_id) or {}
    states = view.get("states", {})
    sent = states.get("sent", 0)
    console.print(
        _(
            "sent {sent}, deferred {deferred}, held {held}, failed {failed}, "
            "bounced recipients {bounced}, suppressed {sup}; "
            "{elapsed:.1f}s, {rate:.1f} msg/s"
        ).format(
            sent=sent,
            deferred=states.get("deferred", 0) + states.get("queued", 0),
            held=states.get("held", 0),
            failed=states.get("failed", 0),
            bounced=view.get("bounced_recipients", 0),
            sup=view.get("suppressed", 0),
            elapsed=elapsed,
            rate=sent / elapsed if elapsed else 0.0,
        )
    )


@app.command("cancel")
def cancel(campaign_id: int) -> None:
    """Withdraw every message of a campaign that has not gone out yet."""
    with opened() as mr, friendly_errors():
        if campaign_view(mr, campaign_id) is None:
            fail(_("no campaign {id}").format(id=campaign_id), 2)
        count = mr.outbox.cancel(campaign_id=campaign_id)
    console.print(_("cancelled {n} message(s)").format(n=count))


@app.command("status")
def status(
    campaign_id: int,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Counts by state, why mail waits and when the campaign should finish."""
    with opened() as mr, friendly_errors():
        view = campaign_view(mr, campaign_id)
        if view is None:
            fail(_("no campaign {id}").format(id=campaign_id), 2)
        channel = mr.channels.get(view["channel_id"])
        view["channel"] = channel.name
        waiting = {"queued", "deferred", "sending"} & set(view["states"])
        view["estimated_finish"] = estimate_finish(mr, channel) if waiting else None
    if json:
        print_json(view)
        return
    print_fields(view, [key for key in view if key != "channel_id"])
