"""Certificates made for the test run, with trustme.

One CA per session issues the servers' certificates; clients trust it through
``ca_path`` (a PEM file) or ``client_context()``, never by turning
verification off.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trustme

# Every name a loopback test server may be reached by.
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TestCA:
    """A trustme CA and the PEM file that clients load to trust it."""

    __test__ = False  # a helper, not a test class, whatever pytest thinks

    ca: trustme.CA
    ca_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A server context holding a certificate for the loopback names."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*LOOPBACK_NAMES).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA only."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context


def make_test_ca(folder: Path) -> TestCA:
    """A new CA whose certificate is written to ``folder/test-ca.pem``."""
    ca = trustme.CA()
    ca_path = folder / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return TestCA(ca, ca_path)
