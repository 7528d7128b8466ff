"""Sustained send rate of a personalized campaign, next to two baselines.

Every contender sends the same number of ~2 KB personalized messages to
Postfix's ``smtp-sink`` on loopback, in the same run:

- ``smtplib``: Python's smtplib on one reused connection, building each message
  with the ``email`` package (EmailMessage), the way a script would.
- ``smtp-source``: Postfix's own load generator with one session, a new
  connection per message (the issue's yardstick) and, with ``-d``, one
  connection for all: what this machine and smtp-sink allow one session.
- ``mailroom``: one worker on SQLite with no limit set, delivering a campaign
  already accepted (rendered and committed to the outbox), every outcome
  committed as it happens; once with 1 connection and once per
  ``--connections`` value.

Run: ``python bench/send_rate.py`` (needs Debian's postfix for the sink).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine, text

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


@dataclass
class Run:
    """One contender's result: messages per second and CPU per message."""

    rate: float
    cpu_us: float


def timed(n: int, work: Callable[[], None], cpu: Callable[[], float]) -> Run:
    wall, cpu0 = time.perf_counter(), cpu()
    work()
    wall, used = time.perf_counter() - wall, cpu() - cpu0
    return Run(n / wall, used / n * 1e6)


def bench_smtplib(port: int, rows: list[dict[str, str]]) -> Run:
    template = MessageTemplate(SUBJECT, BODY, None)

    def work() -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for row in rows:
                rendered = template.render(row)
                message = EmailMessage()
                message["From"] = "Ava <ava@example.com>"
                message["To"] = row["email"]
                message["Subject"] = rendered.subject
                message.set_content(rendered.text or "")
                client.send_message(message)

    return timed(len(rows), work, time.process_time)


def bench_smtp_source(port: int, n: int, *, reuse: bool = False) -> Run:
    """Postfix's load generator, one session at a time.

    By default it opens a new connection for every message, as the issue's
    figure of about 3,000 messages/s does; ``reuse`` (its ``-d``) keeps one.
    """
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    command = [source, *(["-d"] if reuse else []), "-s", "1", "-m", str(n)]
    command += ["-l", "2048", "-f", "ava@example.com", "-t", "lead@example.net"]
    command.append(f"127.0.0.1:{port}")
    return timed(n, lambda: _run(command), _children_cpu)


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_mailroom(
    port: int,
    rows: list[dict[str, str]],
    connections: int,
    postgresql: str | None = None,
) -> Run:
    """Delivery of an accepted campaign, every outcome committed."""
    home = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    try:
        with _database(home, postgresql) as url:
            mr = Mailroom.init(Settings(home, url))
            try:
                _queue_campaign(mr, home, port, rows, connections)
                engine = mr.delivery(EngineOptions(batch=200))
                run = timed(
                    len(rows),
                    lambda: asyncio.run(engine.run(until_idle=True)),
                    time.process_time,
                )
                unsent = mr.outbox.count_unsettled()
            finally:
                mr.close()
    finally:
        shutil.rmtree(home)
    assert unsent == 0, f"{unsent} messages were not delivered"
    return run


@contextlib.contextmanager
def _database(home: Path, postgresql: str | None) -> Iterator[str]:
    """SQLite in ``home``; or a schema of its own in that PostgreSQL database."""
    if postgresql is None:
        yield f"sqlite:///{home / 'mailroom.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgresql)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgresql}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _queue_campaign(
    mr: Mailroom, home: Path, port: int, rows: list[dict[str, str]], connections: int
) -> None:
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
    template = MessageTemplate(SUBJECT, BODY, None)
    request = CampaignRequest("bench", "Ava <ava@example.com>", csv, template)
    launch(mr, plan_campaign(mr, team, request))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[8, 16],
        help="the channel's connections, one mailroom contender each",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        help="a PostgreSQL database for the mailroom contenders (each run gets "
        "a schema of its own), instead of SQLite",
    )
    args = parser.parse_args()

    port = free_port()
    sink = start_sink(port)
    rows = contacts(args.messages)
    contenders: dict[str, Callable[[], Run]] = {
        "smtplib + email package, 1 connection": lambda: bench_smtplib(port, rows),
        "smtp-source, 1 session": lambda: bench_smtp_source(port, args.messages),
        "smtp-source, 1 connection (-d)": lambda: bench_smtp_source(
            port, args.messages, reuse=True
        ),
    }
    for count in [1, *args.connections]:
        plural = "s" if count > 1 else ""
        name = f"mailroom worker, {count} connection{plural}"
        contenders[name] = functools.partial(
            bench_mailroom, port, rows, count, args.postgresql
        )
    results: dict[str, list[Run]] = {name: [] for name in contenders}
    try:
        # Interleaved rounds: a slow moment of the machine hits every
        # contender alike, and the medians compare like with like.
        for _ in range(args.rounds):
            for name, contender in contenders.items():
                results[name].append(contender())
    finally:
        sink.terminate()
        sink.wait()
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[Run]]) -> None:
    baseline = statistics.median(r.rate for r in next(iter(results.values())))
    database = "PostgreSQL" if args.postgresql else "SQLite"
    print(
        f"{args.messages} messages of ~2 KB to smtp-sink on loopback, "
        f"{args.rounds} interleaved rounds, medians; mailroom on {database}"
    )
    print(f"{'contender':<42} {'msg/s':>8} {'x smtplib':>10} {'CPU us/msg':>11}")
    for name, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_us for r in runs)
        print(f"{name:<42} {rate:8.0f} {rate / baseline:10.2f} {cpu:11.0f}")
    every = {name: [round(r.rate) for r in runs] for name, runs in results.items()}
    print("every round (msg/s):", every)


if __name__ == "__main__":
    main()
