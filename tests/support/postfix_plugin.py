"""Pytest fixtures for the private Postfix instance in ``tests.support.postfix``.

Load with ``-p tests.support.postfix_plugin``.  When Postfix is missing the
fixtures fail instead of skipping: the Postfix tests cover the main feature,
and a skip would let CI pass without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.postfix import (
    INSTALL_HINT,
    PostfixInstance,
    SmtpSink,
    postfix_available,
)

PostfixFactory = Callable[..., PostfixInstance]


def _require_postfix() -> None:
    if not postfix_available():
        pytest.fail(
            f"Postfix integration tests need Debian's Postfix as root; {INSTALL_HINT}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postfix_session() -> Iterator[PostfixInstance]:
    """One instance for the whole run (require_auth=True); nothing is cleared."""
    _require_postfix()
    instance = PostfixInstance()
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def postfix(postfix_session: PostfixInstance) -> PostfixInstance:
    """The session's instance, with its queue, Maildir and log emptied."""
    postfix_session.clear()
    return postfix_session


@pytest.fixture
def postfix_factory() -> Iterator[PostfixFactory]:
    """Start extra instances with other options; all stop after the test.

    ``postfix_factory(require_auth=False, message_rate=5)``.
    """
    _require_postfix()
    started: list[PostfixInstance] = []

    def start(
        *, require_auth: bool = True, message_rate: int | None = None
    ) -> PostfixInstance:
        instance = PostfixInstance(require_auth=require_auth, message_rate=message_rate)
        started.append(instance)
        instance.start()
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started smtp-sink(1) on a free loopback port."""
    _require_postfix()
    with SmtpSink() as sink:
        yield sink
