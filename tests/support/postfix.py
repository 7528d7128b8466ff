"""A private Debian Postfix instance on loopback, for integration tests.

``PostfixInstance`` writes its own ``main.cf`` and ``master.cf`` into a
temporary folder and runs ``postfix -c DIR start``; it never reads or starts
the system instance in ``/etc/postfix``.  The instance:

* listens on ``127.0.0.1`` only, on a free port, and never relays: every
  transport except ``virtual`` is Postfix's ``error`` service and DNS is off;
* offers STARTTLS with a certificate from a throwaway ``trustme`` CA and SMTP
  AUTH (PLAIN, LOGIN) through Cyrus SASL with a private sasldb, only after TLS;
* delivers ``example.com``, ``example.org`` and ``example.net`` into one
  Maildir, where ``delivered()`` reads each recipient from the
  ``Delivered-To:`` header that virtual(8) prepends.

``SmtpSink`` and ``smtp_source()`` wrap Postfix's benchmark tools.
Everything here needs root, because Postfix's master and smtp-sink do.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import trustme

HOST: Final = "127.0.0.1"
DOMAINS: Final = ("example.com", "example.org", "example.net")
USERNAME: Final = "sender@example.com"
# A fixed, obviously fake credential: it only ever guards a throwaway instance.
PASSWORD: Final = "fake-postfix-password"
POSTFIX: Final = "/usr/sbin/postfix"
POSTSUPER: Final = "/usr/sbin/postsuper"
SASLPASSWD: Final = "/usr/sbin/saslpasswd2"
SMTP_SINK: Final = "/usr/sbin/smtp-sink"
SMTP_SOURCE: Final = "/usr/sbin/smtp-source"
INSTALL_HINT: Final = (
    "run .ci/run, or as root: apt-get install postfix sasl2-bin libsasl2-modules swaks"
)
# Maildir deliveries run as "nobody": an account every Debian has, above
# virtual(8)'s virtual_minimum_uid (100), and apart from the daemons' own.
MAILBOX_USER: Final = "nobody"
STOP_TIMEOUT: Final = 10.0
START_ATTEMPTS: Final = 3


class PostfixError(RuntimeError):
    """The harness could not start, stop or read its Postfix instance."""


@dataclass(frozen=True)
class Delivered:
    """One message in the Maildir, for one envelope recipient."""

    recipient: str
    message_bytes: bytes


def postfix_available() -> bool:
    """Whether this machine can run a private Postfix instance with SASL."""
    tools = (POSTFIX, SASLPASSWD, SMTP_SINK, SMTP_SOURCE)
    if not all(os.access(tool, os.X_OK) for tool in tools):
        return False
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return os.geteuid() == 0


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostfixInstance:
    """A Postfix master, its config, queue, Maildir and log in one temp folder.

    ``require_auth`` makes the RCPT stage refuse clients that have not
    authenticated; ``message_rate`` caps messages per client per minute
    (anvil(8)), so tests can provoke Postfix's own 4.7.1 throttling reply.
    """

    def __init__(
        self, *, require_auth: bool = True, message_rate: int | None = None
    ) -> None:
        self.require_auth = require_auth
        self.message_rate = message_rate
        self.host = HOST
        self.port = 0
        self.username = USERNAME
        self.password = PASSWORD
        self.root = Path()
        self.ca_path = Path()
        self.maildir_root = Path()
        self.log_path = Path()
        self._master_pid: int | None = None

    def __repr__(self) -> str:
        return f"PostfixInstance(host={self.host!r}, port={self.port})"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    def start(self) -> None:
        """Lay out the temp folder and start the master; returns when it listens.

        Another process may take the free port before the master binds it,
        so a failed start is retried on a new port, twice at most.
        """
        if not postfix_available():
            raise PostfixError(f"Postfix is not usable here; {INSTALL_HINT}")
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
                return
            except PostfixError:
                self.stop()
                if attempt + 1 == START_ATTEMPTS:
                    raise

    def stop(self) -> None:
        """Stop the master and its children, then delete the temp folder."""
        if self.root == Path():
            return
        self._postfix("stop", check=False)
        pid = self._master_pid or self._read_master_pid()
        if pid is not None and not _wait_gone(pid, STOP_TIMEOUT):
            _kill_group(pid)
        self._master_pid = None
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = Path()

    def _start_once(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailroom-postfix-"))
        # Postfix's unprivileged daemons must traverse the folder to reach it.
        self.root.chmod(0o755)
        self.port = free_port()
        self.maildir_root = self.root / "mail" / "mailbox"
        self.log_path = self.root / "maillog"

        self._write_tls()
        self._write_sasl()
        self._write_mail_dirs()
        self._write_config()

        self._postfix("start")
        self._master_pid = self._read_master_pid()
        self._wait_listening()

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def delivered(self) -> list[Delivered]:
        """Every delivered message, oldest first, read from ``new`` and ``cur``."""
        files = [
            path
            for sub in ("new", "cur")
            for path in (self.maildir_root / sub).iterdir()
            if path.is_file()
        ]
        files.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
        return [_read_delivery(path) for path in files]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivered]:
        """Wait until exactly ``count`` messages are delivered, else raise.

        Returns the deliveries once the count matches and no message is in
        flight, so a late extra delivery cannot slip past.  The error
        carries the maillog tail, which says why mail went astray.
        """
        deadline = time.monotonic() + timeout
        while True:
            in_flight = self.in_flight()
            found = self.delivered()
            if len(found) > count:
                raise PostfixError(self._diagnose(count, found))
            if len(found) == count and in_flight == 0:
                return found
            if time.monotonic() >= deadline:
                raise PostfixError(self._diagnose(count, found))
            time.sleep(0.05)

    def in_flight(self) -> int:
        """Messages that Postfix has accepted but not yet delivered or deferred."""
        return sum(
            1
            for name in ("maildrop", "incoming", "active")
            for path in (self.queue_dir / name).rglob("*")
            if path.is_file()
        )

    def clear(self) -> None:
        """Drop queued mail, delivered mail and the log.

        The next test then counts from zero, and no late delivery from the
        last one can land in its Maildir.
        """
        subprocess.run(
            [POSTSUPER, "-c", str(self.config_dir), "-d", "ALL"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        for path in self._maildir_subdirs():
            for item in path.iterdir():
                item.unlink()
        # postlogd(8) appends, so it writes on at the new end of the file.
        if self.log_path.exists():
            self.log_path.write_bytes(b"")

    def smtpd_log(self) -> str:
        """The instance's whole maillog: smtpd, cleanup, qmgr and virtual lines."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_shows(self, text: str, timeout: float = 10.0) -> bool:
        """Whether the maillog comes to hold ``text`` within ``timeout`` seconds.

        Postfix writes its log through postlogd, a moment after the client
        has had its reply.
        """
        deadline = time.monotonic() + timeout
        while text not in self.smtpd_log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _diagnose(self, count: int, found: list[Delivered]) -> str:
        recipients = [item.recipient for item in found]
        tail = "\n".join(self.smtpd_log().splitlines()[-30:])
        return (
            f"wanted {count} deliveries, found {recipients}, "
            f"{self.in_flight()} in flight; maillog tail:\n{tail}"
        )

    def _write_tls(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", HOST)
        self.ca_path = self.root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        # smtpd(8) reads the key as root before it drops privileges.
        self.config_dir.mkdir(mode=0o755)
        chain = self.config_dir / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
        chain.chmod(0o600)

    def _write_sasl(self) -> None:
        sasl_dir = self.config_dir / "sasl"
        sasl_dir.mkdir(mode=0o755)
        sasldb = self.root / "sasldb2"
        user, realm = self.username.split("@")
        subprocess.run(
            [SASLPASSWD, "-f", str(sasldb), "-c", "-p", "-u", realm, user],
            input=self.password.encode(),
            check=True,
            capture_output=True,
        )
        # smtpd runs as mail_owner when it opens the sasldb.
        postfix_user = pwd.getpwnam("postfix")
        os.chown(sasldb, postfix_user.pw_uid, postfix_user.pw_gid)
        sasldb.chmod(0o600)
        (sasl_dir / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            "mech_list: PLAIN LOGIN\n"
            f"sasldb_path: {sasldb}\n"
        )

    def _write_mail_dirs(self) -> None:
        owner = pwd.getpwnam(MAILBOX_USER)
        postfix_user = pwd.getpwnam("postfix")
        base = self.root / "mail"
        for path in (base, self.maildir_root, *self._maildir_subdirs()):
            path.mkdir(mode=0o755)
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # postfix start lays out the queue's subfolders (post-install(1)).
        self.queue_dir.mkdir(mode=0o755)
        data = self.root / "data"
        data.mkdir(mode=0o700)
        os.chown(data, postfix_user.pw_uid, postfix_user.pw_gid)

    def _maildir_subdirs(self) -> list[Path]:
        return [self.maildir_root / sub for sub in ("new", "cur", "tmp")]

    def _write_config(self) -> None:
        main_cf = self.config_dir / "main.cf"
        main_cf.write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(_master_cf(self.port))
        # Postfix rereads a main.cf younger than two seconds, after a 300 ms
        # nap each time, in case an editor is still writing it; backdate it.
        past = time.time() - 60
        os.utime(main_cf, (past, past))

    def _main_cf(self) -> str:
        owner = pwd.getpwnam(MAILBOX_USER)
        settings = {
            **_BASE_SETTINGS,
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.root / "data"),
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.root),
            "smtpd_tls_chain_files": str(self.config_dir / "server.pem"),
            "cyrus_sasl_config_path": str(self.config_dir / "sasl"),
            "virtual_mailbox_base": str(self.root / "mail"),
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "smtpd_recipient_restrictions": (
                "permit_sasl_authenticated, reject" if self.require_auth else "permit"
            ),
        }
        if self.message_rate is not None:
            settings["smtpd_client_message_rate_limit"] = str(self.message_rate)
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def _postfix(self, command: str, *, check: bool = True) -> None:
        result = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and result.returncode != 0:
            raise PostfixError(
                f"postfix {command} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.smtpd_log()}"
            )

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _wait_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise PostfixError(f"Postfix did not listen on {self.host}:{self.port}")


def _read_delivery(path: Path) -> Delivered:
    data = path.read_bytes()
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    recipient = parser.parsebytes(data).get("Delivered-To", "")
    return Delivered(recipient=str(recipient).strip().lower(), message_bytes=data)


def _kill_group(pid: int) -> None:
    """Kill the master's process group: master(8) leads its own session."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, STOP_TIMEOUT)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` exited within ``timeout`` (master is not our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not, though init may reap it late."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # proc(5): the state letter follows the parenthesised command name.
    return stat.rpartition(")")[2].split()[0] != "Z"


# Settings that do not depend on the instance's folder.  Each keeps the
# instance sealed: no DNS, no relaying, no outbound SMTP client at all.
_BASE_SETTINGS: Final = {
    "compatibility_level": "3.6",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "myhostname": "postfix-harness.localhost",
    "mydomain": "localhost",
    "mydestination": "",
    "relay_domains": "",
    "mynetworks": "127.0.0.0/8",
    "inet_interfaces": HOST,
    "inet_protocols": "ipv4",
    "smtp_dns_support_level": "disabled",
    "smtpd_peername_lookup": "no",
    "default_transport": "error:5.7.1 the test harness never relays",
    "relay_transport": "error:5.7.1 the test harness never relays",
    "local_transport": "error:5.7.1 the test harness has no local users",
    "alias_maps": "",
    "alias_database": "",
    "notify_classes": "",
    "biff": "no",
    "smtpd_banner": "$myhostname ESMTP",
    "smtpd_relay_restrictions": "reject_unauth_destination",
    # Exemptions default to $mynetworks, which would exempt every test client.
    "smtpd_client_event_limit_exceptions": "",
    "virtual_mailbox_domains": " ".join(DOMAINS),
    # One shared Maildir: virtual(8) forbids $1 substitution in regexp maps,
    # so per-recipient folders would need every address listed up front.
    "virtual_mailbox_maps": "static:mailbox/",
    "smtpd_tls_security_level": "may",
    "smtpd_tls_auth_only": "yes",
    "smtpd_tls_loglevel": "1",
    "smtpd_tls_session_cache_database": "",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_sasl_type": "cyrus",
    "smtpd_sasl_path": "smtpd",
    "smtpd_sasl_security_options": "noanonymous",
    "smtpd_sasl_authenticated_header": "yes",
}

# Only the services this instance uses, none chrooted.  There is no smtp or
# lmtp client service, so nothing can leave the machine even by mistake.
_MASTER_CF: Final = """\
{host}:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def _master_cf(port: int) -> str:
    return _MASTER_CF.format(host=HOST, port=port)


class SmtpSink:
    """Postfix's smtp-sink(1) on a free loopback port: accepts and drops mail.

    ``options`` go to smtp-sink before the address, e.g. ``("-c",)`` for a
    running count.  smtp-sink has no TLS or AUTH; it measures our own speed.
    """

    def __init__(self, *options: str, backlog: int = 256) -> None:
        self.host = HOST
        self.port = 0
        self.options = options
        self.backlog = backlog
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._error_text = ""

    def __repr__(self) -> str:
        return f"SmtpSink(host={self.host!r}, port={self.port})"

    def start(self) -> None:
        if not postfix_available():
            raise PostfixError(f"smtp-sink is not usable here; {INSTALL_HINT}")
        self.port = free_port()
        # A file, not a pipe: a pipe nobody reads would stall a chatty sink.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - stop() closes it
        # smtp-sink(1) refuses to keep root privileges after binding.
        self._process = subprocess.Popen(
            [
                SMTP_SINK,
                "-u",
                "postfix",
                *self.options,
                f"{self.host}:{self.port}",
                str(self.backlog),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
        )
        self._wait_listening()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._errors is not None:
            self._error_text = self.errors()
            self._errors.close()
            self._errors = None

    def errors(self) -> str:
        """What smtp-sink wrote to stderr, kept after ``stop()``."""
        if self._errors is None:
            return self._error_text
        self._errors.seek(0)
        return self._errors.read().decode(errors="replace")

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_listening(self, timeout: float = 5.0) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise PostfixError(f"smtp-sink exited: {self.errors().strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise PostfixError(f"smtp-sink did not listen on {self.host}:{self.port}")


def smtp_source(
    port: int,
    *,
    messages: int = 100,
    sessions: int = 10,
    recipients: int = 1,
    size: int | None = None,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run smtp-source(1) against loopback ``port``; raise if it fails.

    ``messages`` in total over ``sessions`` parallel connections, each message
    to ``recipients`` recipients, ``size`` bytes of body if given.
    """
    command = [
        SMTP_SOURCE,
        "-m", str(messages),
        "-s", str(sessions),
        "-r", str(recipients),
        "-f", USERNAME,
        "-t", "rcpt@example.com",
    ]  # fmt: skip
    if size is not None:
        command += ["-l", str(size)]
    command.append(f"{HOST}:{port}")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=True
    )
