"""build_message, make_message_id and html_to_text."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.addresses import Address, parse_address
from mailroom.compose import Draft, build_message, html_to_text, make_message_id
from mailroom.errors import InputError

SENDER = Address("sales@example.com", "Sales Team")
WHEN = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def draft(**changes: object) -> Draft:
    values: dict[str, object] = {
        "sender": SENDER,
        "to": [Address("ann@example.org", "Ann")],
        "subject": "Hello",
        "text": "Hi Ann,\nthanks.\n",
        "date": WHEN,
        "message_id": "<m1@example.com>",
    }
    values.update(changes)
    return Draft(**values)  # type: ignore[arg-type]


def parse(raw: bytes, smtputf8: bool = False) -> EmailMessage:
    # BytesParser reads non-ASCII header bytes as surrogate escapes and the
    # address parser keeps them as such; an RFC 6532 message is read as text.
    if smtputf8:
        msg = email.message_from_string(
            raw.decode("utf-8"), policy=email.policy.default
        )
    else:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def head_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def lf(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


def as_body(text: str) -> str:
    text = lf(text)
    return text if text.endswith("\n") else text + "\n"


# ---------------------------------------------------------------- examples


def test_headers_are_written_in_order_with_crlf() -> None:
    raw = build_message(draft(cc=[Address("cc@example.net")], headers={"X-C": "7"}))
    names = [line.split(b":")[0] for line in head_of(raw).split(b"\r\n")]

    assert names == [
        b"Date",
        b"From",
        b"To",
        b"Cc",
        b"Subject",
        b"Message-ID",
        b"MIME-Version",
        b"X-C",
        b"Content-Type",
        b"Content-Transfer-Encoding",
    ]
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_date_and_message_id_come_from_the_draft() -> None:
    when = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=9)))
    msg = parse(build_message(draft(date=when)))

    assert msg["Date"].datetime == when
    assert msg["Message-ID"] == "<m1@example.com>"


def test_missing_date_and_id_are_filled_in() -> None:
    msg = parse(build_message(draft(date=None, message_id="")))

    assert abs(msg["Date"].datetime - datetime.now(UTC)) < timedelta(minutes=1)
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", msg["Message-ID"])


def test_naive_date_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(date=datetime(2026, 1, 1)))
    assert caught.value.field == "date"


def test_bad_message_id_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(message_id="no-brackets@example.com"))
    assert caught.value.field == "message_id"


def test_make_message_id_is_unique_and_uses_idna() -> None:
    ids = {make_message_id("Bücher.Example") for _ in range(100)}

    assert len(ids) == 100
    assert all(i.endswith("@xn--bcher-kva.example>") for i in ids)


def test_reply_to_and_cc_are_readable() -> None:
    raw = build_message(
        draft(
            cc=[Address("c@example.net", "C, Jr.")], reply_to=Address("r@example.com")
        )
    )
    msg = parse(raw)

    assert msg["Cc"].addresses[0].display_name == "C, Jr."
    assert msg["Reply-To"].addresses[0].addr_spec == "r@example.com"


def test_display_name_with_specials_is_quoted() -> None:
    raw = build_message(draft(to=[Address("a@example.org", 'O"Neil, \\Pat')]))

    assert b'To: "O\\"Neil, \\\\Pat" <a@example.org>' in raw
    assert parse(raw)["To"].addresses[0].display_name == 'O"Neil, \\Pat'


def test_non_ascii_name_is_encoded_unless_smtputf8() -> None:
    d = draft(to=[Address("a@example.org", "山田 太郎")])

    assert b"To: =?utf-8?" in build_message(d)
    assert "To: 山田 太郎 <a@example.org>".encode() in build_message(d, smtputf8=True)


def test_text_that_looks_encoded_is_encoded_itself() -> None:
    raw = build_message(draft(subject="=?utf-8?q?fake?="))

    assert b"Subject: =?utf-8?q?fake?=\r\n" not in raw
    assert parse(raw)["Subject"] == "=?utf-8?q?fake?="


def test_idn_domain_is_sent_as_a_label() -> None:
    raw = build_message(draft(to=[Address("a@bücher.example")]))

    assert b"To: a@xn--bcher-kva.example\r\n" in raw


def test_non_ascii_local_part_needs_smtputf8() -> None:
    d = draft(to=[Address("jürgen@example.org")])

    with pytest.raises(InputError) as caught:
        build_message(d)
    assert caught.value.field == "to"
    assert "To: jürgen@example.org".encode() in build_message(d, smtputf8=True)


@pytest.mark.parametrize("bad", ["a@example.org>, evil@example.com", "a b@example.org"])
def test_unparsed_address_cannot_add_recipients(bad: str) -> None:
    with pytest.raises(InputError):
        build_message(draft(to=[Address(bad)]))


def test_empty_recipient_list_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(to=[]))
    assert caught.value.field == "to"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": "Hi\r\nBcc: x@example.com"}, "subject"),
        ({"subject": "Hi\nthere"}, "subject"),
        ({"headers": {"X-A": "1\r\nBcc: x@example.com"}}, "x-a"),
        ({"headers": {"X-A": "nul\x00"}}, "x-a"),
        ({"to": [Address("a@example.org", "Ann\r\nBcc: x@example.com")]}, "to"),
        ({"sender": Address("s@example.com", "S\n")}, "from"),
    ],
)
def test_header_injection_is_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(**changes))
    assert caught.value.field == field


@pytest.mark.parametrize("name", ["From", "bcc", "Content-Type", "Bad Name", "X:Y", ""])
def test_extra_header_may_not_replace_our_own(name: str) -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(headers={name: "x"}))
    assert caught.value.field == "headers"


def test_long_subject_is_folded_at_spaces() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    raw = build_message(draft(subject=subject))
    lines = head_of(raw).split(b"\r\n")

    assert max(len(line) for line in lines) <= 78
    assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize("smtputf8", [False, True])
def test_unbreakable_subject_stays_under_998(smtputf8: bool) -> None:
    subject = "件" * 700 + "x" * 1200
    raw = build_message(draft(subject=subject), smtputf8=smtputf8)

    assert max(len(line) for line in head_of(raw).split(b"\r\n")) <= 998
    assert parse(raw, smtputf8)["Subject"] == subject


def test_ascii_text_is_7bit() -> None:
    raw = build_message(draft(text="plain\n"), eight_bit=True)

    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nplain\r\n" in raw


def test_utf8_text_is_8bit_only_when_allowed() -> None:
    d = draft(text="Grüße\n")

    assert "8bit\r\n\r\nGrüße\r\n".encode() in build_message(d, eight_bit=True)
    assert b"quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n" in build_message(d)


@pytest.mark.parametrize("eight_bit", [False, True])
def test_long_lines_force_quoted_printable(eight_bit: bool) -> None:
    text = "a" * 999 + "\n"
    raw = build_message(draft(text=text), eight_bit=eight_bit)

    assert b"Content-Transfer-Encoding: quoted-printable" in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 76
    assert lf(parse(raw).get_content()) == text


def test_nul_in_body_forces_quoted_printable() -> None:
    raw = build_message(draft(text="a\x00b\n"), eight_bit=True)

    assert b"\x00" not in raw
    assert b"a=00b" in raw


def test_html_only_gets_a_text_alternative() -> None:
    raw = build_message(draft(text=None, html="<p>Hi&nbsp;<b>Ann</b></p>"))
    msg = parse(raw)

    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    plain = msg.get_body(("plain",))
    assert plain is not None
    assert lf(plain.get_content()) == "Hi\xa0Ann\n"


def test_no_body_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        build_message(draft(text=None, html=None))
    assert caught.value.field == "text"


def test_boundary_does_not_occur_in_parts() -> None:
    raw = build_message(draft(html="<p>x</p>"))
    boundary = re.search(rb'boundary="([^"]+)"', raw)

    assert boundary is not None
    assert raw.count(boundary.group(1)) == 4  # header, two openers, the closer


def test_sender_encoding_is_cached() -> None:
    from mailroom.compose import message

    message._mailbox_words.cache_clear()
    for i in range(5):
        build_message(draft(to=[Address(f"r{i}@example.org")]))
    info = message._mailbox_words.cache_info()

    assert info.hits >= 4


# -------------------------------------------------------------- properties

# Control characters are refused in names and in subjects; surrogates cannot
# be encoded at all.
_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))
_JAPANESE = st.sampled_from(
    ["件名", "お知らせ", "山田 太郎", "新製品のご案内", "ｶﾀｶﾅ", "①②", "〜"]
)
_words = st.one_of(st.text(_PRINTABLE, max_size=40), _JAPANESE)
_phrases = st.lists(_words, max_size=6).map(" ".join)
_bodies = st.text(st.characters(blacklist_categories=("Cs",)), max_size=3000)
_ascii_local = st.from_regex(r"[a-z0-9_+-]{1,20}(\.[a-z0-9]{1,10})?", fullmatch=True)
_utf8_local = st.sampled_from(["jürgen", "用户", "δοκιμή", "María.José"])
_domains = st.sampled_from(["example.com", "example.org", "bücher.example"])


@st.composite
def _mailboxes(draw: st.DrawFn, smtputf8: bool) -> Address:
    local = draw(st.one_of(_ascii_local, _utf8_local) if smtputf8 else _ascii_local)
    # RFC 5322 3.2.2: a run of whitespace in a phrase means one space, and the
    # stdlib parser (rightly) reads it so; names are compared in that form.
    name = " ".join(draw(_phrases).split())
    return Address(f"{local}@{draw(_domains)}", name)


@st.composite
def _drafts(draw: st.DrawFn) -> tuple[Draft, bool, bool]:
    smtputf8, eight_bit = draw(st.booleans()), draw(st.booleans())
    text, html = draw(
        st.one_of(
            st.tuples(_bodies, st.none()),
            st.tuples(st.none(), _bodies),
            st.tuples(_bodies, _bodies),
        )
    )
    d = draft(
        sender=draw(_mailboxes(smtputf8)),
        to=draw(st.lists(_mailboxes(smtputf8), min_size=1, max_size=3)),
        subject=draw(_phrases),
        text=text,
        html=html,
    )
    return d, smtputf8, eight_bit


def _names_and_specs(header: object) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in header.addresses]  # type: ignore[attr-defined]


def _join_encoded_words(raw: bytes) -> bytes:
    # CPython gh-128110: policy.default keeps the space between two adjacent
    # encoded words of a display name, which RFC 2047 6.2 says to ignore.
    # Joining them leaves a parse the stdlib reads as RFC 2047 intends.
    head, body = raw.split(b"\r\n\r\n", 1)
    return re.sub(rb"\?=(\r\n)?[ \t]+=\?", b"?==?", head) + b"\r\n\r\n" + body


def _expected(mailboxes: list[Address]) -> list[tuple[str, str]]:
    return [(a.display_name, f"{a.local_part}@{a.domain}") for a in mailboxes]


@settings(max_examples=300, deadline=None)
@given(_drafts())
def test_round_trip_through_the_stdlib_parser(case: tuple[Draft, bool, bool]) -> None:
    d, smtputf8, eight_bit = case
    raw = build_message(d, smtputf8=smtputf8, eight_bit=eight_bit)
    msg = parse(raw, smtputf8)

    assert msg["Subject"] == d.subject.strip(" \t")
    joined = parse(_join_encoded_words(raw), smtputf8)
    assert _names_and_specs(joined["From"]) == _expected([d.sender])
    assert _names_and_specs(joined["To"]) == _expected(d.to)

    # Bodies are read from bytes: a str parser cannot hold 8bit body octets.
    msg = parse(raw)
    text = d.text if d.text is not None else html_to_text(d.html or "")
    plain = msg.get_body(("plain",))
    assert plain is not None
    assert lf(plain.get_content()) == as_body(text)
    if d.html is not None:
        html = msg.get_body(("html",))
        assert html is not None
        assert lf(html.get_content()) == as_body(d.html)


@settings(max_examples=300, deadline=None)
@given(_drafts())
def test_wire_form_limits(case: tuple[Draft, bool, bool]) -> None:
    d, smtputf8, eight_bit = case
    raw = build_message(d, smtputf8=smtputf8, eight_bit=eight_bit)

    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    if not smtputf8:
        assert head_of(raw).isascii()
    if not eight_bit:
        assert raw.isascii() or smtputf8


# --------------------------------------------------------------- html_to_text


def test_html_to_text_paragraphs_and_breaks() -> None:
    text = html_to_text("<h1>Title</h1><p>One<br>two</p><p>Three</p>")

    assert text == "Title\n\nOne\ntwo\n\nThree"


def test_html_to_text_keeps_link_targets() -> None:
    text = html_to_text(
        '<a href="https://example.com/offer">the offer</a> '
        '<a href="https://example.com">https://example.com</a> '
        '<a href="#top">top</a>'
    )

    assert text == "the offer (https://example.com/offer) https://example.com top"


def test_html_to_text_drops_scripts_and_styles() -> None:
    text = html_to_text(
        "<head><title>T</title><style>p{color:red}</style></head>"
        "<p>Shown</p><script>alert('x')</script>"
    )

    assert text == "Shown"


def test_html_to_text_decodes_entities_and_collapses_space() -> None:
    text = html_to_text("<p>Fish  &amp;\n  chips &eacute;&#x41; &lt;b&gt;</p>")

    assert text == "Fish & chips éA <b>"


def test_html_to_text_lists_and_pre() -> None:
    text = html_to_text("<ul><li>one</li><li>two</li></ul><pre>  a\n   b</pre>")

    assert text == "- one\n- two\n\n  a\n   b"


def test_parse_address_result_builds() -> None:
    sender = parse_address("Équipe Ventes <ventes@Example.COM>", "from")
    msg = parse(build_message(draft(sender=sender)))

    assert msg["From"].addresses[0].display_name == "Équipe Ventes"
    assert msg["From"].addresses[0].addr_spec == "ventes@example.com"
