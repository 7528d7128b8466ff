"""Sustained send rate of a personalized campaign, next to two baselines.

All three send the same number of ~2 KB personalized messages to Postfix's
``smtp-sink`` on loopback, in the same run:

- ``smtplib``: Python's smtplib on one reused connection, building each message
  with the ``email`` package (EmailMessage), the way a script would.
- ``smtp-source``: Postfix's own load generator with one session, the limit of
  this machine and of smtp-sink.
- ``mailroom``: one worker on SQLite with no limit set: the campaign is
  rendered and committed to the outbox, then delivered with every outcome
  committed as it happens.

Run: ``python bench/send_rate.py --messages 5000`` (needs Debian's postfix).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from mailroom.campaigns.launch import CampaignRequest, launch, plan_campaign
from mailroom.campaigns.template import MessageTemplate
from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.config import Settings
from mailroom.core import Mailroom
from mailroom.delivery.engine import EngineOptions

SUBJECT = "{{ first_name }}, a quick question about {{ company }}"
# About 2 KB once rendered, like a typical plain sales email.
PARAGRAPH = (
    "I noticed {{ company }} has been growing its sales team, and I wanted to "
    "share how teams like yours send outbound email through their own domain. "
)
BODY = "Hi {{ first_name }},\n\n" + (PARAGRAPH + "\n\n") * 11 + "Best,\nAva\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    process = subprocess.Popen(
        [sink, "-u", "postfix", "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtp-sink did not start")


def contacts(n: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"lead{i}@example.net",
            "first_name": f"Name{i}",
            "company": f"Company {i}",
        }
        for i in range(n)
    ]


def bench_smtplib(port: int, rows: list[dict[str, str]]) -> float:
    template = MessageTemplate(SUBJECT, BODY, None)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for row in rows:
            rendered = template.render(row)
            message = EmailMessage()
            message["From"] = "Ava <ava@example.com>"
            message["To"] = row["email"]
            message["Subject"] = rendered.subject
            message.set_content(rendered.text)
            client.send_message(message)
    return len(rows) / (time.perf_counter() - started)


def bench_smtp_source(port: int, n: int) -> float:
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    started = time.perf_counter()
    subprocess.run(
        [
            source,
            "-s",
            "1",
            "-m",
            str(n),
            "-l",
            "2048",
            "-f",
            "ava@example.com",
            "-t",
            "lead@example.net",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    return n / (time.perf_counter() - started)


def bench_mailroom(port: int, rows: list[dict[str, str]], connections: int):
    home = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    mr = Mailroom.init(Settings(home, f"sqlite:///{home / 'mailroom.db'}"))
    team = mr.teams.add("bench", ["example.com"], ["ava@example.com"])
    mr.channels.add(
        ChannelSpec(
            name="sink",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=port,
            security=Security.none,
            domains=["example.com"],
            connections=connections,
        )
    )
    csv = home / "contacts.csv"
    csv.write_text(
        "email,first_name,company\n"
        + "".join(f"{r['email']},{r['first_name']},{r['company']}\n" for r in rows),
        encoding="utf-8",
    )

    started = time.perf_counter()
    request = CampaignRequest(
        "bench", "Ava <ava@example.com>", csv, MessageTemplate(SUBJECT, BODY, None)
    )
    launched = launch(mr, plan_campaign(mr, team, request))
    accepted = time.perf_counter()
    engine = mr.delivery(EngineOptions(batch=200))
    asyncio.run(engine.run(until_idle=True))
    done = time.perf_counter()

    sent = mr.outbox.count_unsettled()
    mr.close()
    shutil.rmtree(home)
    assert sent == 0, f"{sent} messages were not delivered"
    n = len(launched.message_ids)
    return n / (done - accepted), n / (done - started), accepted - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    sink = start_sink(port)
    try:
        rows = contacts(args.messages)
        plain = bench_smtplib(port, rows)
        source = bench_smtp_source(port, args.messages)
        one = bench_mailroom(port, rows, 1)
        many = bench_mailroom(port, rows, args.connections)
    finally:
        sink.terminate()
        sink.wait()

    print(f"messages: {args.messages}")
    print(f"smtplib + email package, one connection: {plain:8.0f} msg/s")
    print(f"smtp-source, one session:                {source:8.0f} msg/s")
    for label, (send, total, accept) in (
        ("mailroom, 1 connection", one),
        (f"mailroom, {args.connections} connections", many),
    ):
        print(
            f"{label:<40} {send:8.0f} msg/s delivering "
            f"({send / plain:.2f}x smtplib), {total:.0f} msg/s including "
            f"accepting the campaign ({accept:.2f}s)"
        )


if __name__ == "__main__":
    main()
