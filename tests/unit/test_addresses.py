"""Address parsing, normalization and header value checks."""

from __future__ import annotations

import pytest

from mailroom.addresses import (
    Address,
    address_key,
    check_header_value,
    needs_smtputf8,
    parse_address,
)
from mailroom.errors import InputError


def test_bare_address() -> None:
    addr = parse_address("ann@example.com", "to")

    assert addr == Address("ann@example.com", "")
    assert str(addr) == "ann@example.com"


def test_name_and_angle_address() -> None:
    addr = parse_address("  Ann   Lee <ann@example.com> ", "to")

    assert addr.display_name == "Ann Lee"
    assert addr.addr_spec == "ann@example.com"
    assert str(addr) == "Ann Lee <ann@example.com>"


def test_quoted_name_with_comma() -> None:
    addr = parse_address('"Lee, Ann" <ann@example.com>', "to")

    assert addr.display_name == "Lee, Ann"
    assert str(addr) == '"Lee, Ann" <ann@example.com>'


def test_encoded_word_name_is_decoded() -> None:
    addr = parse_address("=?utf-8?q?J=C3=B6rg?= <j@example.com>", "from")

    assert addr.display_name == "Jörg"


def test_domain_is_lowercased_and_idna_local_part_kept() -> None:
    addr = parse_address("Ann.Lee@Bücher.Example", "to")

    assert addr.domain == "xn--bcher-kva.example"
    assert addr.local_part == "Ann.Lee"
    assert addr.addr_spec == "Ann.Lee@xn--bcher-kva.example"


def test_domain_property_converts_a_hand_made_address() -> None:
    assert Address("a@BÜCHER.example").domain == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "text",
    [
        "ann@example.com\r\nBcc: eve@example.com",
        "Ann\n <ann@example.com>",
        "ann@example.com\x00",
        "Ann\x07 <ann@example.com>",
        "ann@exa\tmple.com",
    ],
)
def test_control_characters_are_refused(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_address(text, "reply_to")

    assert caught.value.field == "reply_to"
    assert "control character" in str(caught.value.problem)
    assert str(caught.value.fix)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ann",
        "ann@",
        "@example.com",
        "ann@localhost",
        "a@example.com, b@example.com",
        "alice@example.org)<bob@example.com>",
        "Ann <>",
        "ann@@example.com",
        "Ann <ann@example.com> trailing",
    ],
)
def test_invalid_addresses_are_refused(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_address(text, "to")

    assert caught.value.field == "to"
    assert "example.com" in str(caught.value.fix)


def test_smtputf8_is_needed_for_non_ascii_local_part_only() -> None:
    assert needs_smtputf8(parse_address("jürgen@example.com", "to"))
    assert not needs_smtputf8(parse_address("Jürgen <j@bücher.example>", "to"))


def test_check_header_value_passes_plain_text() -> None:
    assert check_header_value("subject", "Grüße, tab\there") == "Grüße, tab\there"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nBcc: x@example.com", "nul\x00"])
def test_check_header_value_refuses_breaks(bad: str) -> None:
    with pytest.raises(InputError) as caught:
        check_header_value("subject", bad)

    assert caught.value.field == "subject"


def test_address_key_folds_case_and_idna() -> None:
    assert address_key("Ann@Bücher.Example") == address_key("ann@XN--BCHER-KVA.example")
    assert address_key("ann@example.com") != address_key("anne@example.com")


def test_address_key_tolerates_non_addresses() -> None:
    assert address_key("  Not An Address ") == "not an address"
    assert address_key("x@bad..domain") == "x@bad..domain"


@pytest.mark.parametrize(
    "text",
    [
        "=?utf-8?q?A=00B?= <lead@example.net>",
        "=?utf-8?q?E=0D=0ABcc:_v@evil.test?= <a@example.net>",
    ],
)
def test_control_characters_hidden_in_encoded_words_are_refused(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_address(text, "to")

    assert caught.value.field == "to"
