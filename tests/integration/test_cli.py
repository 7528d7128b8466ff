"""The command line, as a person uses it, against the sandbox server."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailroom.cli.app import app
from mailroom.sandbox import SandboxServer
from tests.support.faults import FaultServer
from tests.support.plugin import FAULT_PASSWORD, FAULT_USERNAME, SANDBOX_PASSWORD
from tests.support.tls import TestCA

PASSWORD = SANDBOX_PASSWORD.reveal()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return cli_speaking("en", tmp_path, monkeypatch)


@pytest.fixture
def cli_ja(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same initialised home and team, for a user who reads Japanese."""
    return cli_speaking("ja", tmp_path, monkeypatch)


def cli_speaking(lang: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MAILROOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MAILROOM_DATABASE_URL", raising=False)
    monkeypatch.delenv("MAILROOM_SECRET_KEY", raising=False)
    monkeypatch.setenv("MAILROOM_LANG", lang)
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None):
        return runner.invoke(app, list(args), input=stdin)

    assert invoke("init").exit_code == 0
    result = invoke(
        "team",
        "add",
        "acme",
        "--domain",
        "example.com",
        "--member",
        "alice@example.com",
    )
    assert result.exit_code == 0, result.output
    return invoke


@pytest.fixture
def channel(cli, sandbox_server: SandboxServer):
    result = cli(
        "channel",
        "add",
        "sandbox",
        "--kind",
        "sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        str(sandbox_server.port),
        "--username",
        "sandbox",
        "--domain",
        "example.com",
        "--ca-bundle",
        str(sandbox_server.ca_path),
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    return "sandbox"


def send_one(cli, sender: str = "alice@example.com", *extra: str):
    """``mailroom send`` of a one-line message from ``sender`` to bob."""
    message = ["--from", sender, "--to", "bob@example.net", "--subject", "x"]
    return cli("send", *message, "--text", "y", *extra)


def test_init_writes_a_private_key(cli, tmp_path: Path) -> None:
    key = tmp_path / "home" / "secret.key"

    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_channel_json_shows_settings_and_never_the_secret(
    cli, channel, tmp_path: Path
) -> None:
    listed = cli("channel", "list", "--json")
    shown = cli("channel", "show", "sandbox", "--json")

    data = json.loads(listed.stdout)[0]
    assert data["kind"] == "sandbox"
    assert data["security"] == "starttls"
    assert data["status"] == "untested"  # no session has got through yet
    assert data["domains"] == ["example.com"]
    assert data["has_secret"] is True
    for output in (listed.output, shown.output):
        assert PASSWORD not in output
    assert PASSWORD.encode() not in (tmp_path / "home" / "mailroom.db").read_bytes()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--kind", "nope", "--host", "h", "--domain", "example.com"], "kind"),
        (
            [
                "--kind",
                "smtp",
                "--host",
                "h",
                "--port",
                "70000",
                "--domain",
                "example.com",
            ],
            "port",
        ),
        (["--kind", "smtp", "--host", "h"], "domains"),
        (["--kind", "office365"], "owner"),
        (
            [
                "--kind",
                "smtp",
                "--host",
                "h",
                "--domain",
                "example.com",
                "--per-minute",
                "0",
            ],
            "per_minute",
        ),
    ],
)
def test_bad_channel_input_names_the_field(cli, args: list[str], field: str) -> None:
    result = cli("channel", "add", "x", *args, "--password-stdin", stdin="pw\n")

    assert result.exit_code == 2
    assert field in result.output
    assert "Traceback" not in result.output


def test_password_is_never_taken_from_a_flag(cli) -> None:
    result = cli("channel", "add", "x", "--kind", "smtp", "--password", "secret")

    assert result.exit_code == 2


def test_send_wait_delivers_and_message_show_has_the_history(
    cli, channel, sandbox_server: SandboxServer
) -> None:
    result = cli(
        "send",
        "--from",
        "Alice 山田 <alice@example.com>",
        "--to",
        "bob@example.net",
        "--subject",
        "見積もりのご案内",
        "--text",
        "こんにちは",
        "--wait",
    )

    assert result.exit_code == 0, result.output
    assert "sent" in result.output
    proven = json.loads(cli("channel", "show", "sandbox", "--json").stdout)
    assert proven["status"] == "connected"  # by the delivery
    [delivered] = sandbox_server.delivered()
    assert list(delivered.envelope_rcpts) == ["bob@example.net"]
    shown = json.loads(cli("message", "show", "1", "--json").stdout)
    assert shown["state"] == "sent"
    assert [r["state"] for r in shown["recipients"]] == ["sent"]
    [attempt] = shown["history"]
    assert (attempt["stage"], attempt["code"], attempt["class"]) == (
        "data",
        250,
        "success",
    )


def test_send_from_an_address_no_channel_covers_is_refused(cli, channel) -> None:
    cli("team", "add-member", "acme", "mallory@example.org")
    result = send_one(cli, "mallory@example.org")

    assert result.exit_code == 2
    assert "no channel may send as mallory@example.org" in result.output


def test_header_injection_is_refused(cli, channel) -> None:
    result = cli(
        "send",
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.net",
        "--subject",
        "hi\r\nBcc: victim@example.net",
        "--text",
        "y",
    )

    assert result.exit_code == 2
    assert "subject" in result.output
    assert json.loads(cli("queue", "--json").stdout)["counts"] == {}


def write_contacts(path: Path, rows: int, extra: str = "") -> Path:
    lines = ["email,first_name"] + [f"c{i}@example.net,Name{i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def send_campaign(cli, contacts: Path, subject: str, text: str, *extra: str):
    return cli(
        "campaign",
        "send",
        "--contacts",
        str(contacts),
        "--from",
        "alice@example.com",
        "--subject",
        subject,
        "--text",
        text,
        *extra,
    )


def test_campaign_dry_run_previews_and_queues_nothing(
    cli, channel, tmp_path: Path
) -> None:
    contacts = write_contacts(
        tmp_path / "c.csv", 3, "bad-address,X\nc0@example.net,Dup\nc9@example.net,\n"
    )

    result = send_campaign(
        cli, contacts, "Hi {{ first_name }}", "Dear {{ first_name }}", "--dry-run"
    )

    assert result.exit_code == 0, result.output
    assert "3 ready, 2 with problems, 1 duplicate(s)" in result.output
    assert "line 5: email" in result.output
    assert "line 7: first_name" in result.output
    assert "Subject: Hi Name0" in result.output
    assert json.loads(cli("queue", "--json").stdout)["counts"] == {}


def test_campaign_send_wait_delivers_each_contact_once(
    cli, channel, tmp_path: Path, sandbox_server: SandboxServer
) -> None:
    contacts = write_contacts(tmp_path / "c.csv", 20)

    result = send_campaign(
        cli, contacts, "Hi {{ first_name }}", "Dear {{ first_name }}", "--wait"
    )

    assert result.exit_code == 0, result.output
    assert "sent 20" in result.output
    rcpts = sorted(r for m in sandbox_server.delivered() for r in m.envelope_rcpts)
    assert rcpts == sorted(f"c{i}@example.net" for i in range(20))
    status = json.loads(cli("campaign", "status", "1", "--json").stdout)
    assert status["states"] == {"sent": 20}


def test_campaign_larger_than_the_daily_quota_says_when_it_finishes(
    cli, tmp_path: Path
) -> None:
    cli(
        "channel",
        "add",
        "small",
        "--kind",
        "smtp",
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "--domain",
        "example.com",
        "--per-day",
        "10",
    )
    contacts = write_contacts(tmp_path / "c.csv", 25)

    result = send_campaign(cli, contacts, "Hi", "Dear {{ first_name }}")

    assert result.exit_code == 0, result.output
    status = json.loads(cli("campaign", "status", "1", "--json").stdout)
    queued_at = status["states"]["queued"]
    assert queued_at == 25
    assert status["waiting_reason"] == "waiting for its turn"  # as `queue` says
    # 25 recipients at 10 a day: the last goes out on the third day.
    finish = datetime.fromisoformat(status["estimated_finish"])
    assert finish - datetime.now(UTC) > timedelta(days=1, hours=23)
    assert f"estimated finish: {finish:%Y-%m-%d %H:%M}" in result.output


def test_a_command_before_init_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILROOM_HOME", str(tmp_path / "nowhere" / "home"))
    monkeypatch.delenv("MAILROOM_DATABASE_URL", raising=False)

    result = CliRunner().invoke(app, ["channel", "list"])

    assert result.exit_code == 2
    assert "mailroom init" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "nowhere").exists()


def test_an_unreachable_database_never_shows_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILROOM_HOME", str(tmp_path))
    url = "postgresql+psycopg://bob:fake-db-password@127.0.0.1:1/nothing"
    monkeypatch.setenv("MAILROOM_DATABASE_URL", url)

    result = CliRunner().invoke(app, ["queue"])

    assert result.exit_code == 1
    assert "cannot open the database" in result.output
    assert "fake-db-password" not in result.output


def test_cancel_withdraws_waiting_mail_and_not_sent_mail(
    cli, channel, tmp_path: Path, sandbox_server: SandboxServer
) -> None:
    sent = send_one(cli, "alice@example.com", "--wait")
    assert sent.exit_code == 0, sent.output
    contacts = write_contacts(tmp_path / "c.csv", 5)
    send_campaign(cli, contacts, "Hi", "Dear {{ first_name }}")

    late = cli("message", "cancel", "1")
    whole = cli("campaign", "cancel", "1")
    worked = cli("worker", "--until-idle")

    assert late.exit_code == 1
    assert "sent and can no longer be cancelled" in late.output
    assert whole.exit_code == 0
    assert "cancelled 5 message(s)" in whole.output
    assert worked.exit_code == 0
    assert "this run: -" in worked.output
    assert "the outbox: cancelled: 5, sent: 1" in worked.output
    assert len(sandbox_server.delivered()) == 1
    status = json.loads(cli("campaign", "status", "1", "--json").stdout)
    assert status["states"] == {"cancelled": 5}


def test_a_channel_must_send_from_the_teams_own_domains(cli) -> None:
    result = cli(
        "channel",
        "add",
        "x",
        "--kind",
        "smtp",
        "--host",
        "127.0.0.1",
        "--domain",
        "example.net",
    )

    assert result.exit_code == 2
    assert "example.net is not a sending domain of this team" in result.output
    assert "team add-domain" in result.output


def test_send_wait_gives_up_waiting_for_a_server_that_is_down(
    cli, caplog: pytest.LogCaptureFixture
) -> None:
    cli(
        "channel",
        "add",
        "down",
        "--kind",
        "smtp",
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "--security",
        "none",
        "--domain",
        "example.com",
    )

    result = send_one(cli, "alice@example.com", "--wait", "--wait-timeout", "5")

    assert result.exit_code == 1
    assert "cannot reach the server" in result.output
    assert "mailroom worker" in result.output
    # Said once, for the person waiting; not again as a log line.
    assert not [r for r in caplog.records if r.name == "mailroom.delivery"]
    history = json.loads(cli("message", "show", "1", "--json").stdout)["history"]
    assert history[0]["stage"] == "connect"
    assert "refused" in history[0]["text"] or "cannot connect" in history[0]["text"]
    worked = cli("worker", "--until-idle")
    assert "the next is due at" in worked.output


def test_the_password_based_office365_preset_warns_of_basic_auth_retirement(
    cli,
) -> None:
    result = cli(
        "channel",
        "add",
        "ava-mailbox",
        "--kind",
        "office365",
        "--team",
        "acme",
        "--owner",
        "alice@example.com",
        "--username",
        "alice@example.com",
        "--password-stdin",
        stdin="fake-password\n",
    )

    assert result.exit_code == 0, result.output
    assert "December 2026" in result.output
    assert "mailroom channel connect microsoft" in result.output
    shown = json.loads(cli("channel", "show", "ava-mailbox", "--json").stdout)
    assert shown["limits"]["per_minute"] == 30
    assert shown["limits"]["per_day"] == 10_000


def test_a_missing_ca_bundle_is_refused_when_the_channel_is_added(
    cli, tmp_path: Path
) -> None:
    result = cli(
        "channel",
        "add",
        "x",
        "--kind",
        "smtp",
        "--host",
        "127.0.0.1",
        "--domain",
        "example.com",
        "--ca-bundle",
        str(tmp_path / "none.pem"),
    )

    assert result.exit_code == 2
    assert "ca_bundle" in result.output
    assert "does not exist" in result.output


def test_removing_a_channel_that_carried_mail_retires_it(
    cli, channel, sandbox_server: SandboxServer
) -> None:
    sent = send_one(cli, "alice@example.com", "--wait")
    assert sent.exit_code == 0, sent.output

    removed = cli("channel", "remove", "sandbox")
    listed = json.loads(cli("channel", "list", "--json").stdout)
    shown = json.loads(cli("message", "show", "1", "--json").stdout)

    assert removed.exit_code == 0, removed.output
    assert "retired channel sandbox" in removed.output
    assert listed == []
    assert shown["state"] == "sent"
    assert shown["channel"] == "sandbox.retired-1"


def test_a_sender_outside_the_teams_domains_is_told_both_steps(cli) -> None:
    result = send_one(cli, "ava@other.example")

    assert result.exit_code == 2
    assert "team add-domain" in result.output
    assert "team add-member" in result.output


def test_a_sender_outside_the_teams_domains_is_told_in_japanese(cli_ja) -> None:
    result = send_one(cli_ja, "ava@other.example")

    assert result.exit_code == 2
    assert result.output.strip() == (
        "エラー: from: ava@other.example はチーム 'acme' のメンバーではありません "
        "(other.example はチームの送信ドメインでもありません。"
        "`mailroom team add-domain` でドメインを追加してから、"
        "`mailroom team add-member` でアドレスを追加してください)"
    )


def test_an_unknown_team_is_told_in_japanese(cli_ja) -> None:
    result = send_one(cli_ja, "alice@example.com", "--team", "nosuch")

    assert result.exit_code == 2
    assert result.output.strip() == (
        "エラー: チーム 'nosuch' はありません。`team add` で追加してください"
    )


def test_init_twice_says_so_and_keeps_the_key(cli, tmp_path: Path) -> None:
    key = (tmp_path / "home" / "secret.key").read_bytes()

    again = cli("init")

    assert again.exit_code == 0
    assert "already initialised" in again.output
    assert (tmp_path / "home" / "secret.key").read_bytes() == key


def test_with_several_teams_the_from_address_and_channel_name_find_the_team(
    cli, channel, sandbox_server: SandboxServer
) -> None:
    other = ["team", "add", "mkt", "--domain", "example.org"]
    assert cli(*other, "--member", "max@example.org").exit_code == 0

    sent = send_one(cli, "Alice <alice@example.com>", "--wait")
    shown = cli("channel", "show", channel, "--json")

    assert sent.exit_code == 0, sent.output
    assert len(sandbox_server.delivered()) == 1
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["team"] == "acme"


@pytest.mark.parametrize(
    ("member", "sender", "told"),
    [
        ("max@example.org", "eve@example.net", "several teams exist (acme, mkt)"),
        (
            "alice@example.com",
            "Alice <alice@example.com>",
            "alice@example.com belongs to several teams (acme, mkt)",
        ),
    ],
    ids=["in-no-team", "in-two-teams"],
)
def test_with_several_teams_a_sender_of_no_one_team_is_told_why(
    cli, member: str, sender: str, told: str
) -> None:
    other = ["team", "add", "mkt", "--domain", "example.org"]
    assert cli(*other, "--member", member).exit_code == 0

    result = send_one(cli, sender)

    assert result.exit_code == 2
    assert told in result.output
    assert "--team" in result.output


def test_correcting_a_paused_channels_port_sends_its_mail_at_once(
    cli, sandbox_server: SandboxServer
) -> None:
    add = ["channel", "add", "relay", "--kind", "sandbox", "--host", "127.0.0.1"]
    add += ["--port", "9", "--username", "sandbox", "--domain", "example.com"]
    add += ["--ca-bundle", str(sandbox_server.ca_path), "--password-stdin"]
    assert cli(*add, stdin=PASSWORD + "\n").exit_code == 0
    queued = send_one(cli, "alice@example.com", "--wait", "--wait-timeout", "3")
    assert queued.exit_code == 1
    paused = json.loads(cli("channel", "show", "relay", "--json").stdout)
    assert paused["status"] == "paused"

    fixed = cli("channel", "update", "relay", "--port", str(sandbox_server.port))
    worked = cli("worker", "--until-idle")

    assert "1 message(s) no longer wait for the channel" in fixed.output
    assert "this run: sent: 1" in worked.output
    shown = json.loads(cli("channel", "show", "relay", "--json").stdout)
    assert (shown["status"], shown["status_reason"]) == ("connected", "")
    assert json.loads(cli("message", "show", "1", "--json").stdout)["state"] == "sent"
    assert len(sandbox_server.delivered()) == 1


def test_channel_list_off_a_terminal_folds_long_cells_and_cuts_none(
    cli, channel, sandbox_server: SandboxServer
) -> None:
    # A second channel, paused with a long reason, squeezes the table.
    down = ["channel", "add", "down", "--kind", "smtp", "--host", "127.0.0.1"]
    down += ["--port", "9", "--security", "none", "--domain", "example.com"]
    assert cli(*down).exit_code == 0
    send_one(
        cli, "alice@example.com", "--channel", "down", "--wait", "--wait-timeout", "2"
    )

    listed = cli("channel", "list")

    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    assert f"127.0.0.1:{sandbox_server.port}" in column(listed.output, "server")


def column(table: str, header: str) -> str:
    """One column of a Rich table as printed, its folded lines joined."""
    lines = table.splitlines()
    heads = next(line for line in lines if header in line).split("┃")
    index = next(i for i, cell in enumerate(heads) if cell.strip() == header)
    rows = [line.split("│") for line in lines if "│" in line]
    return "".join(cells[index].strip() for cells in rows)


def test_a_sandbox_channel_trusts_the_sandbox_of_its_own_data_folder(
    cli, tmp_path: Path
) -> None:
    # Where `mailroom sandbox` keeps its files for this MAILROOM_HOME.
    folder = tmp_path / "home" / "sandbox"
    with SandboxServer(folder, username="sandbox", password=SANDBOX_PASSWORD) as box:
        add = ["channel", "add", "try", "--kind", "sandbox", "--host", "127.0.0.1"]
        add += ["--port", str(box.port), "--domain", "example.com"]
        added = cli(*add, "--password-stdin", stdin=PASSWORD + "\n")
        tested = cli("channel", "test", "try")

    assert added.exit_code == 0, added.output
    assert "trusting the sandbox's own CA" in added.output
    assert tested.exit_code == 0, tested.output


def test_channel_test_disconnects_on_refused_credentials_and_reconnects_when_through(
    cli, fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    add = ["channel", "add", "relay", "--kind", "smtp", "--host", "127.0.0.1"]
    add += ["--port", str(fault_server_tls.port), "--username", FAULT_USERNAME]
    add += ["--domain", "example.com", "--ca-bundle", str(tls_ca.ca_path)]
    assert cli(*add, "--password-stdin", stdin=FAULT_PASSWORD.reveal()).exit_code == 0
    # Exchange Online's answer to a password it does not take, once.
    fault_server_tls.script("AUTH", "535 5.7.139 Authentication unsuccessful", times=1)
    send_one(cli)  # queued, to be held while the channel is disconnected

    refused = cli("channel", "test", "relay")
    held = json.loads(cli("message", "show", "1", "--json").stdout)
    through = cli("channel", "test", "relay")
    shown = json.loads(cli("channel", "show", "relay", "--json").stdout)

    assert refused.exit_code == 1
    assert "channel relay is now disconnected" in refused.output
    assert held["state"] == "held"
    assert through.exit_code == 0, through.output
    assert "channel relay is now connected" in through.output
    assert "1 message(s) no longer wait for the channel" in through.output
    assert (shown["status"], shown["status_reason"]) == ("connected", "")


def database_trigger(tmp_path: Path, sql: str) -> None:
    """Make this data folder's SQLite database refuse some writes."""
    with sqlite3.connect(tmp_path / "home" / "mailroom.db") as db:
        db.execute(sql)


def test_a_worker_whose_outcomes_cannot_be_recorded_fails_and_claims_nothing(
    cli, channel, tmp_path: Path
) -> None:
    send_one(cli)
    database_trigger(
        tmp_path,
        "CREATE TRIGGER refuse BEFORE UPDATE ON messages WHEN NEW.state = 'sent' "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )

    worked = cli("worker", "--until-idle")

    assert worked.exit_code == 1
    assert "this run: -" in worked.output  # nothing it could not record
    assert "1 outcome(s) could not be recorded" in worked.output


def test_a_database_failing_mid_run_ends_the_worker_in_one_line(
    cli, channel, tmp_path: Path
) -> None:
    send_one(cli)
    database_trigger(
        tmp_path,
        "CREATE TRIGGER refuse BEFORE UPDATE ON messages "
        "WHEN NEW.state = 'sending' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )

    worked = cli("worker", "--until-idle")

    assert worked.exit_code == 1
    assert "the database failed: disk I/O error" in worked.output
    assert "Traceback" not in worked.output


def test_a_platform_relay_named_like_a_team_channel_is_reached_with_platform(
    cli,
) -> None:
    add = ["channel", "add", "main", "--kind", "smtp", "--host", "127.0.0.1"]
    add += ["--port", "9", "--security", "none"]
    assert cli(*add, "--platform-default").exit_code == 0
    assert cli(*add, "--domain", "example.com").exit_code == 0

    unclear = cli("channel", "show", "main")
    platform = json.loads(cli("channel", "show", "main", "--platform", "--json").stdout)
    team = json.loads(cli("channel", "show", "main", "--team", "acme", "--json").stdout)

    assert unclear.exit_code == 2
    assert "--platform" in unclear.output
    assert (platform["scope"], team["scope"]) == ("platform", "team")


def test_a_campaign_on_a_paused_channel_says_so_and_finishes_after_the_pause(
    cli, tmp_path: Path
) -> None:
    down = ["channel", "add", "down", "--kind", "smtp", "--host", "127.0.0.1"]
    down += ["--port", "9", "--security", "none", "--domain", "example.com"]
    assert cli(*down).exit_code == 0
    send_one(cli, "alice@example.com", "--wait", "--wait-timeout", "2")
    paused = json.loads(cli("channel", "show", "down", "--json").stdout)

    result = send_campaign(
        cli, write_contacts(tmp_path / "c.csv", 3), "Hi", "Dear {{ first_name }}"
    )

    assert paused["status"] == "paused"
    assert "channel down is paused until" in result.output
    queued = cli("queue").output
    assert "next try (UTC)" in queued
    assert column(queued, "channel").count("down") == 4  # one row per message
    status = json.loads(cli("campaign", "status", "1", "--json").stdout)
    finish = datetime.fromisoformat(status["estimated_finish"])
    assert finish >= datetime.fromisoformat(paused["paused_until"])


def test_sending_through_another_teams_channel_names_its_team(cli) -> None:
    other = ["team", "add", "ops", "--domain", "example.org"]
    assert cli(*other, "--member", "max@example.org").exit_code == 0
    add = ["channel", "add", "opsbox", "--team", "ops", "--kind", "smtp"]
    add += ["--host", "127.0.0.1", "--port", "9", "--domain", "example.org"]
    assert cli(*add).exit_code == 0

    result = send_one(cli, "alice@example.com", "--channel", "opsbox")

    assert result.exit_code == 2
    assert "channel 'opsbox' belongs to team ops, not to acme" in result.output
