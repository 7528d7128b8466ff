"""`mailroom demo`: the main job end to end, with nothing configured.

A throwaway data folder with SQLite, the sandbox SMTP server on loopback
(STARTTLS, AUTH, a Maildir), a sample team and channel with a visible limit,
and a campaign to the sample contacts in ``examples/``.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path

from rich.console import Console

from mailroom.campaigns.launch import CampaignRequest, launch, plan_campaign
from mailroom.campaigns.template import MessageTemplate
from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.config import Settings
from mailroom.core import Mailroom
from mailroom.i18n import _
from mailroom.sandbox import SandboxServer
from mailroom.secrets import Secret

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SENDER = "Demo Sales <sales@example.com>"
SUBJECT = "{{ company }} × mailroom: ご案内 / an introduction"
# Visible pacing: the sandbox channel sends at most one message every 0.2 s.
LIMITS = {"per_minute": 300, "min_interval": 0.2}


def run_demo(console: Console, examples: Path = EXAMPLES) -> int:
    """Run the demo; returns the exit status."""
    home = Path(tempfile.mkdtemp(prefix="mailroom-demo-"))
    console.print(_("data folder: {home}").format(home=home))
    password = Secret(secrets.token_urlsafe(18))
    with SandboxServer(home / "sandbox", password=password) as sandbox:
        console.print(
            _("sandbox SMTP server on {host}:{port} (STARTTLS, AUTH)").format(
                host=sandbox.host, port=sandbox.port
            )
        )
        mr = Mailroom.init(Settings(home, f"sqlite:///{home / 'mailroom.db'}"))
        try:
            return _campaign(mr, sandbox, password, examples, console)
        finally:
            mr.close()


def _campaign(
    mr: Mailroom,
    sandbox: SandboxServer,
    password: Secret,
    examples: Path,
    console: Console,
) -> int:
    from mailroom.cli.campaign_cmds import _report_plan, _summary
    from mailroom.cli.progress import DeliveryProgress

    team = mr.teams.add("Demo Sales", ["example.com"], ["sales@example.com"])
    channel = mr.channels.add(_channel_spec(team.id, sandbox, password))
    console.print(
        _("channel {name}: {limits}").format(
            name=channel.name, limits=channel.limits.describe()
        )
    )

    template = MessageTemplate(
        SUBJECT,
        (examples / "template.txt").read_text("utf-8"),
        (examples / "template.html").read_text("utf-8"),
    )
    request = CampaignRequest("demo", SENDER, examples / "contacts.csv", template)
    plan = plan_campaign(mr, team, request)
    _report_plan(plan)
    launched = launch(mr, plan)

    started = time.monotonic()
    with DeliveryProgress(len(launched.message_ids), set(launched.message_ids)) as p:
        asyncio.run(mr.delivery(on_outcome=p).run(watch=launched.message_ids))
    _summary(mr, launched.campaign_id, time.monotonic() - started)
    console.print(_("delivered messages: {path}").format(path=sandbox.maildir_path))
    return 0


def _channel_spec(
    team_id: int, sandbox: SandboxServer, password: Secret
) -> ChannelSpec:
    return ChannelSpec(
        name="sandbox",
        kind="sandbox",
        team_id=team_id,
        host=sandbox.host,
        port=sandbox.port,
        security=Security.starttls,
        username=sandbox.username,
        secret=password,
        domains=["example.com"],
        limits=LIMITS,
        ca_bundle=str(sandbox.ca_path),
    )
