"""The one-line diagnoses of ``channel test``: what is wrong, and what to change.

Each public function turns one kind of failure the probe meets into the line
it reports: a CA bundle that will not load, a connection that fails or times
out, a TLS or certificate error, a refused login, sender or recipient, a
send-as denial, and a server with no AUTH mechanism the channel can use.
Where finding the cause takes a look of its own (a TLS handshake on a silent
port, say), the remarks go to the transcript.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Final

import aiosmtplib

from mailroom.channels.model import Security
from mailroom.delivery.closing import let_go
from mailroom.delivery.replies import Reply, ReplyClass, classify
from mailroom.delivery.transcript import Transcript
from mailroom.delivery.transport import Endpoint, tls_context

# RFC 8314 3.3: port 465 is submission over implicit TLS.
_IMPLICIT_TLS_PORT: Final = 465

# OpenSSL reasons seen when the bytes that came back are not TLS at all: the
# plain "220 ..." greeting of an SMTP server read as a TLS record header.
_NOT_TLS_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
    }
)

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) for a chain that ends at no CA we
# trust, and for the validity period.
_UNKNOWN_CA_CODES: Final = frozenset({2, 18, 19, 20, 21})
_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_HOSTNAME_MISMATCH: Final = 62
_IP_MISMATCH: Final = 64

# Exchange Online 5.7.60 and 5.2.252 SendAsDenied (see the replies README).
_SEND_AS_ENHANCED: Final = frozenset({"5.7.60", "5.2.252"})
_SEND_AS_WORDS: Final = ("sendasdenied", "send as", "send-as")


# -- connecting and TLS ---------------------------------------------------


def ca_bundle_failure(endpoint: Endpoint, error: BaseException) -> str:
    """The channel's CA bundle could not be loaded."""
    return f"cannot load the CA bundle {endpoint.ca_bundle}: {_reason(error)}"


async def connect_timeout(
    exc: aiosmtplib.SMTPConnectTimeoutError,
    endpoint: Endpoint,
    timeout: float,
    transcript: Transcript,
) -> str:
    """No connection, or no greeting, within the timeout."""
    where = f"{endpoint.host}:{endpoint.port}"
    if not isinstance(exc.__cause__, aiosmtplib.SMTPTimeoutError):
        return (
            f"no answer from {where} within {timeout:g}s; check the host "
            "and port, and whether a firewall drops the connection"
        )

    # Connected, but no greeting: an implicit-TLS server waits for our
    # TLS hello (RFC 8314 3.3) while we wait for its 220.  Check by
    # trying a TLS handshake on the same port.
    transcript.note(f"no greeting within {timeout:g}s")
    if endpoint.security is Security.tls:
        return f"{where} completed TLS but sent no greeting"

    speaks_tls = await _speaks_tls(endpoint, timeout, transcript)
    if speaks_tls or endpoint.port == _IMPLICIT_TLS_PORT:
        return "this port expects implicit TLS; use security 'tls'"
    return f"{where} accepted the connection but sent no greeting"


def connect_failure(
    exc: aiosmtplib.SMTPConnectError, endpoint: Endpoint, transcript: Transcript
) -> str:
    """The connection, or the implicit TLS on it, failed."""
    where = f"{endpoint.host}:{endpoint.port}"
    cause = exc.__cause__

    if isinstance(cause, ssl.SSLCertVerificationError):
        return _certificate_failure(cause, endpoint.host, transcript)
    if isinstance(cause, ssl.SSLError):
        return _tls_failure(cause, transcript)
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"{where} refused the connection; check the port and that "
            "the server is running"
        )
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name {endpoint.host!r}; check the host"
    if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
        return f"{where} closed the connection before its greeting"
    return f"cannot connect to {where}: {_reason(cause or exc)}"


def starttls_failure(
    exc: BaseException, endpoint: Endpoint, timeout: float, transcript: Transcript
) -> str:
    """The TLS handshake after STARTTLS failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_failure(exc, endpoint.host, transcript)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return f"the TLS handshake after STARTTLS took over {timeout:g}s"
    transcript.note(f"TLS handshake failed: {_reason(exc)}")
    return f"the TLS handshake after STARTTLS failed: {_reason(exc)}"


# -- refusals --------------------------------------------------------------


def no_mechanism(wanted: str, offered_mechanisms: list[str], secured: bool) -> str:
    """The server offers no AUTH mechanism that the channel can use."""
    offered = " ".join(offered_mechanisms)
    if not offered and not secured:
        return (
            "the server offers no AUTH on a connection without TLS; use "
            "security 'starttls' or 'tls'"
        )
    if not offered:
        return "the server offers no AUTH on this port; use its submission port"
    return f"the server offers AUTH {offered} but not {wanted}"


def auth_refused(reply: Reply) -> str:
    """The server did not accept the credentials."""
    if reply.code < 500:
        return f"the server could not check the credentials now ({reply}); try later"
    return (
        f"the server refused the credentials ({reply}); check the user name "
        "and password, or the app password if the account uses two-step sign-in"
    )


def sender_refused(sender: str, reply: Reply) -> str:
    """The server refused MAIL FROM."""
    if _is_send_as_denied(reply):
        return f"the server does not let this mailbox send as {sender} ({reply})"
    if classify(reply) is ReplyClass.auth:
        return (
            f"the server wants a login before MAIL ({reply}); give the "
            "channel a user name and password"
        )
    return f"the server refused the sender {sender}: {reply}"


def recipient_refused(sender: str, recipient: str, reply: Reply) -> str:
    """The server refused RCPT TO."""
    if _is_send_as_denied(reply):
        return f"the server does not let this mailbox send as {sender} ({reply})"
    return f"the server refused the recipient {recipient}: {reply}"


# -- helpers ---------------------------------------------------------------


async def _speaks_tls(
    endpoint: Endpoint, timeout: float, transcript: Transcript
) -> bool:
    transcript.note("trying a TLS handshake on the same port")
    speaks = await _handshake_works(endpoint, timeout)
    transcript.note("TLS handshake succeeded" if speaks else "no TLS either")
    return speaks


async def _handshake_works(endpoint: Endpoint, timeout: float) -> bool:
    """Whether a TLS handshake completes on the endpoint's port."""
    try:
        connecting = asyncio.open_connection(
            endpoint.host,
            endpoint.port,
            ssl=tls_context(endpoint),
            server_hostname=endpoint.host,
            ssl_handshake_timeout=timeout,
        )
        _, writer = await asyncio.wait_for(connecting, timeout)
    except ssl.SSLCertVerificationError:
        # The server spoke TLS; only our check of its certificate failed.
        return True
    except OSError:
        return False

    await let_go(writer.transport)
    return True


def _tls_failure(error: ssl.SSLError, transcript: Transcript) -> str:
    reason = error.reason or ""
    transcript.note(f"TLS handshake failed: {_reason(error)}")
    if reason in _NOT_TLS_REASONS:
        return "the server speaks plain SMTP on this port; use security 'starttls'"
    return f"the TLS handshake failed: {_reason(error)}"


def _certificate_failure(
    error: ssl.SSLCertVerificationError, host: str, transcript: Transcript
) -> str:
    transcript.note(f"certificate check failed: {error.verify_message}")
    code = error.verify_code

    if code in _UNKNOWN_CA_CODES:
        return (
            "the server's certificate is signed by a CA this system does not "
            f"trust ({error.verify_message}); if the server uses a private "
            "CA, give its certificate with --ca-bundle"
        )
    if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        return (
            f"the server's certificate is not valid for the name {host!r}; "
            "connect by a name the certificate lists"
        )
    if code == _EXPIRED:
        return "the server's certificate has expired; its operator must renew it"
    if code == _NOT_YET_VALID:
        return "the server's certificate is not valid yet; check this clock"
    return f"the server's certificate failed verification: {error.verify_message}"


def _is_send_as_denied(reply: Reply) -> bool:
    if reply.enhanced in _SEND_AS_ENHANCED:
        return True
    text = reply.text.lower()
    return any(words in text for words in _SEND_AS_WORDS)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
