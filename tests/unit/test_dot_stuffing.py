"""RFC 5321 4.5.2 transparency: what goes out after DATA reads back as sent."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailroom.delivery.pipelining import dot_stuff


def unstuff(wire: bytes) -> bytes:
    """What a server does: drop the first period of each line that has one."""
    return re.sub(rb"(?m)^\.", b"", wire)


def test_a_line_that_starts_with_a_period_gets_a_second_one() -> None:
    content = b".first\r\nmiddle\r\n.\r\n..two\r\nlast"

    assert dot_stuff(content) == b"..first\r\nmiddle\r\n..\r\n...two\r\nlast\r\n"


def test_content_without_such_lines_goes_out_as_it_is() -> None:
    content = b"Subject: a.b\r\n\r\nno period leads. a line here.\r\n"

    assert dot_stuff(content) is content


lines = st.lists(st.sampled_from([b"", b".", b"..", b"a", b".a", b"a.", b" ."]))


@given(lines)
def test_stuffed_content_never_ends_early_and_reads_back(parts: list[bytes]) -> None:
    content = b"\r\n".join(parts) + b"\r\n"

    wire = dot_stuff(content)

    assert b"\r\n.\r\n" not in b"\r\n" + wire
    assert unstuff(wire) == content
