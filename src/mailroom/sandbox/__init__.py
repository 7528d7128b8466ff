"""The built-in sandbox: a loopback SMTP server to try mailroom without a provider.

``SandboxServer`` accepts mail over STARTTLS with a login, like a real provider,
and keeps every message in a Maildir; ``ensure_certificate`` makes its TLS
certificate and the CA that clients trust it by.
"""

from mailroom.sandbox.certs import CertPaths, ensure_certificate
from mailroom.sandbox.server import DeliveredMessage, LoopbackListener, SandboxServer

__all__ = [
    "CertPaths",
    "DeliveredMessage",
    "LoopbackListener",
    "SandboxServer",
    "ensure_certificate",
]
