"""Contact lists: a CSV file with an ``email`` column, checked row by row.

A bad row does not stop the import: it becomes a ``RowProblem`` with the line a
person would see in a text editor or a spreadsheet, so the list can be fixed and
loaded again.  Only a file that cannot be read at all (wrong encoding, no
``email`` column) raises ``InputError``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mailroom.addresses import address_key, parse_address
from mailroom.errors import InputError
from mailroom.i18n import Text

_EMAIL: Final = "email"
_BYTES_NAME: Final = "contacts"


@dataclass
class Contact:
    """One row: its line in the file, its address and its template fields."""

    line: int
    email: str
    fields: dict[str, str]


@dataclass
class RowProblem:
    """Why one row was left out."""

    line: int
    field: str
    problem: str | Text


@dataclass
class ContactList:
    """The rows that can be mailed, and an account of the rest."""

    contacts: list[Contact]
    problems: list[RowProblem]
    duplicates: int
    total_rows: int


def load_contacts(
    source: Path | str | bytes, *, required: Iterable[str] = frozenset()
) -> ContactList:
    """Read a CSV contact list from a path, or from the file's bytes.

    Line numbers are physical lines of the file (the header is line 1), so a
    quoted cell that spans lines moves the numbers of the rows after it.  A row
    whose address repeats an earlier one (compared case-insensitively) is
    counted in ``duplicates`` and left out.
    """
    name, text = _read_text(source)
    rows = _numbered_rows(text, name)
    _, header = next(rows, (1, []))
    columns = _columns(header, name)
    _check_fields(set(required), columns, name)

    result = ContactList([], [], 0, 0)
    seen: set[str] = set()
    for line, cells in rows:
        result.total_rows += 1
        _take_row(result, seen, _RowInput(line, cells, columns, set(required)))
    return result


def remove_suppressed(
    contacts: list[Contact], suppressed: set[str]
) -> tuple[list[Contact], int]:
    """Drop contacts on the suppression list; return the rest and how many went."""
    keys = {address_key(address) for address in suppressed}
    kept = [c for c in contacts if address_key(c.email) not in keys]
    return kept, len(contacts) - len(kept)


# --------------------------------------------------------------- reading


def _read_text(source: Path | str | bytes) -> tuple[str, str]:
    if isinstance(source, bytes):
        name, data = _BYTES_NAME, source
    else:
        name, data = str(source), Path(source).read_bytes()

    # Spreadsheets save UTF-8 with or without a byte order mark.
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Text(
            "is not UTF-8 (byte 0x{byte:02x} at offset {offset})",
            byte=data[exc.start],
            offset=exc.start,
        )
        raise InputError(name, problem, Text("save as UTF-8")) from exc


class _LineCounter:
    """Feeds lines to the CSV reader and remembers how many it has handed out."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        return line


def _numbered_rows(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    # A row starts on the line after the one where the previous row ended.
    lines = _LineCounter(text)
    start = 1
    try:
        # Strict: a quote that is never closed would otherwise swallow every
        # row after it into one cell, and those rows would vanish unreported.
        for cells in csv.reader(lines, strict=True):
            if any(cell.strip() for cell in cells):
                yield start, cells
            start = lines.count + 1
    except csv.Error as exc:
        raise InputError(name, *_csv_problem(start, exc)) from exc


def _csv_problem(line: int, error: csv.Error) -> tuple[Text, Text]:
    if str(error) == "unexpected end of data":
        problem = Text("a quote opened on line {line} is never closed", line=line)
        return problem, Text("close the quote, or remove it")
    # The csv module's own words stay as it wrote them.
    problem = Text("line {line} is not valid CSV: {reason}", line=line, reason=error)
    return problem, Text("save the file again as CSV")


def _columns(header: list[str], name: str) -> list[str]:
    columns = [cell.strip() for cell in header]
    lowered = [column.lower() for column in columns]
    if _EMAIL not in lowered:
        problem = Text("{name} has no '{column}' column", name=name, column=_EMAIL)
        fix = Text("name the address column 'email'")
        if len(columns) == 1 and ";" in columns[0]:
            fix = Text("separate the columns with commas, not semicolons")
        raise InputError(_EMAIL, problem, fix)

    repeated = {c for c in columns if c and columns.count(c) > 1}
    if repeated or lowered.count(_EMAIL) > 1:
        problem = Text(
            "{name} repeats the column {columns}",
            name=name,
            columns=sorted(repeated) or [_EMAIL],
        )
        raise InputError(name, problem, Text("give every column its own name"))
    return columns


def _check_fields(required: set[str], columns: list[str], name: str) -> None:
    # A field the template reads that no column holds is a mistake in the
    # template or the header, not in every row: say so once.
    missing = sorted(required - set(columns))
    if missing:
        uses = ", ".join("{{ " + field + " }}" for field in missing)
        raise InputError(
            "template",
            Text("uses {fields} but {name} has no such column", fields=uses, name=name),
            Text("the columns are: {columns}", columns=", ".join(columns)),
        )


# --------------------------------------------------------------- checking


@dataclass
class _RowInput:
    line: int
    cells: list[str]
    columns: list[str]
    required: set[str]


def _take_row(result: ContactList, seen: set[str], row: _RowInput) -> None:
    contact, problems = _check_row(row)
    if problems or contact is None:
        result.problems.extend(problems)
        return

    key = address_key(contact.email)
    if key in seen:
        result.duplicates += 1
        return
    seen.add(key)
    result.contacts.append(contact)


def _check_row(row: _RowInput) -> tuple[Contact | None, list[RowProblem]]:
    values = dict(zip(row.columns, row.cells, strict=False))
    problems = _extra_cells(row) + _missing_fields(row, values)
    email = next((v for k, v in values.items() if k.lower() == _EMAIL), "")

    try:
        address = parse_address(email.strip(), _EMAIL)
    except InputError as exc:
        problems.insert(0, RowProblem(row.line, _EMAIL, exc.problem))
        return None, problems

    fields = {k: v.strip() for k, v in values.items() if k and k.lower() != _EMAIL}
    return Contact(row.line, address.addr_spec, fields), problems


def _extra_cells(row: _RowInput) -> list[RowProblem]:
    # Trailing empty cells are what spreadsheets write; anything else past the
    # last column usually means an unquoted comma shifted the row.
    extra = [cell for cell in row.cells[len(row.columns) :] if cell.strip()]
    if not extra:
        return []
    return [_cell_count(row)]


def _cell_count(row: _RowInput) -> RowProblem:
    if len(row.cells) == 1:
        problem = Text("1 cell but the header has {columns}", columns=len(row.columns))
    else:
        problem = Text(
            "{cells} cells but the header has {columns}",
            cells=len(row.cells),
            columns=len(row.columns),
        )
    return RowProblem(row.line, "columns", problem)


def _missing_fields(row: _RowInput, values: dict[str, str]) -> list[RowProblem]:
    required = row.required - {_EMAIL}
    if required - values.keys():
        # The row ends before a column the template needs: say so once,
        # rather than blame the fields that were never there.
        return [_cell_count(row)]
    missing = sorted(f for f in required if not values[f].strip())
    empty = Text("required field is empty")
    return [RowProblem(row.line, f, empty) for f in missing]
