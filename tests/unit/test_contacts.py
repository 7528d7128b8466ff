"""load_contacts and remove_suppressed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailroom.campaigns import Contact, RowProblem, load_contacts, remove_suppressed
from mailroom.errors import InputError


def csv_bytes(*lines: str, bom: bool = False) -> bytes:
    data = "\r\n".join(lines).encode("utf-8")
    return b"\xef\xbb\xbf" + data if bom else data


def shown(problems: list[RowProblem]) -> list[tuple[int, str, str]]:
    """Row problems as a person reads them (their text is rendered lazily)."""
    return [(p.line, p.field, str(p.problem)) for p in problems]


def test_rows_become_contacts_with_fields() -> None:
    result = load_contacts(
        csv_bytes("Email, First Name ,Company", "ann@example.com,Ann, Acme ")
    )

    assert result.contacts == [
        Contact(2, "ann@example.com", {"First Name": "Ann", "Company": "Acme"})
    ]
    assert result.problems == []
    assert result.total_rows == 1


@pytest.mark.parametrize("bom", [False, True])
def test_utf8_with_or_without_bom(bom: bool) -> None:
    result = load_contacts(csv_bytes("email,name", "jo@example.com,Jöran", bom=bom))

    assert result.contacts[0].fields == {"name": "Jöran"}


def test_reads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(csv_bytes("EMAIL", "a@example.com"))

    assert [c.email for c in load_contacts(path).contacts] == ["a@example.com"]
    assert [c.email for c in load_contacts(str(path)).contacts] == ["a@example.com"]


def test_other_encodings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("email,name\na@example.com,Jöran\n".encode("latin-1"))

    with pytest.raises(InputError) as caught:
        load_contacts(path)
    assert caught.value.field == str(path)
    assert str(caught.value.fix) == "save as UTF-8"


def test_utf16_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        load_contacts("email\na@example.com\n".encode("utf-16"))
    assert str(caught.value.fix) == "save as UTF-8"


def test_missing_email_column_is_named() -> None:
    with pytest.raises(InputError) as caught:
        load_contacts(csv_bytes("mail,name", "a@example.com,A"))
    assert caught.value.field == "email"


def test_repeated_column_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        load_contacts(csv_bytes("email,name,name", "a@example.com,A,B"))
    assert "name" in str(caught.value.problem)


def test_line_numbers_count_physical_lines() -> None:
    result = load_contacts(
        csv_bytes(
            "email,note",
            'a@example.com,"one',
            "two",
            'three"',
            "",
            "bad-address,x",
            "c@example.com,ok",
        )
    )

    assert [c.line for c in result.contacts] == [2, 7]
    assert result.contacts[0].fields["note"] == "one\r\ntwo\r\nthree"
    assert [(p.line, p.field) for p in result.problems] == [(6, "email")]
    assert result.total_rows == 3


def test_bad_address_reason_comes_from_the_validator() -> None:
    result = load_contacts(csv_bytes("email", "ann@", "bob@example"))

    assert [p.line for p in result.problems] == [2, 3]
    assert all(p.field == "email" for p in result.problems)
    assert "after the @-sign" in str(result.problems[0].problem)
    assert result.contacts == []


def test_required_fields_must_be_filled() -> None:
    result = load_contacts(
        csv_bytes("email,first,city", "a@example.com,Ann,", "b@example.com"),
        required={"first", "city", "email"},
    )

    assert shown(result.problems) == [
        (2, "city", "required field is empty"),
        # A row that ends early is told so, not blamed for each field it lacks.
        (3, "columns", "1 cell but the header has 3"),
    ]
    assert result.contacts == []


def test_a_field_no_column_holds_is_one_error_naming_the_columns() -> None:
    with pytest.raises(InputError) as caught:
        load_contacts(
            csv_bytes("email,first_name", "a@example.com,Ann"), required={"firstname"}
        )

    assert caught.value.field == "template"
    assert "{{ firstname }}" in str(caught.value.problem)
    assert "email, first_name" in str(caught.value.fix)


def test_a_semicolon_separated_file_gets_a_hint() -> None:
    with pytest.raises(InputError) as caught:
        load_contacts(csv_bytes("email;first_name", "a@example.com;Ann"))

    assert "semicolons" in str(caught.value.fix)


def test_duplicates_are_counted_and_the_first_kept() -> None:
    result = load_contacts(
        csv_bytes(
            "email,n",
            "Ann@Example.com,1",
            "ann@example.COM,2",
            "ANN@bücher.example,3",
            "ann@xn--bcher-kva.example,4",
            "bob@example.com,5",
        )
    )

    assert [c.fields["n"] for c in result.contacts] == ["1", "3", "5"]
    assert result.contacts[0].email == "Ann@example.com"
    assert result.contacts[1].email == "ANN@xn--bcher-kva.example"
    assert result.duplicates == 2
    assert result.total_rows == 5


def test_shifted_row_is_reported() -> None:
    result = load_contacts(
        csv_bytes("email,name", "a@example.com,Lee, Ann", "b@example.com,Bo,,")
    )

    assert shown(result.problems) == [(2, "columns", "3 cells but the header has 2")]
    assert [c.email for c in result.contacts] == ["b@example.com"]


def test_empty_file_has_no_email_column() -> None:
    with pytest.raises(InputError):
        load_contacts(b"")


def test_remove_suppressed_compares_normalized() -> None:
    contacts = load_contacts(
        csv_bytes("email", "Ann@example.com", "bob@bücher.example", "cy@example.com")
    ).contacts

    kept, removed = remove_suppressed(
        contacts, {"ANN@EXAMPLE.COM", "Bob@Bücher.Example", "not an address"}
    )

    assert [c.email for c in kept] == ["cy@example.com"]
    assert removed == 2


def test_a_quote_never_closed_is_named_not_left_to_swallow_the_rows_after_it() -> None:
    with pytest.raises(InputError) as refused:
        load_contacts(
            csv_bytes("email,name", '"ann@example.com,Ann', "bob@example.com,Bob")
        )

    assert refused.value.field == "contacts"
    assert str(refused.value.problem) == "a quote opened on line 2 is never closed"
