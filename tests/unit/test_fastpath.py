"""Statements prepared once: the driver gets what SQLAlchemy would give it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from mailroom.store.fastpath import Prepared
from mailroom.store.schema import UTCDateTime

table = Table(
    "things",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("state", Integer),
    Column("at", UTCDateTime()),
    Column("extra", JSON),
)
STATEMENT = (
    update(table)
    .where(table.c.id == bindparam("b_id"))
    .where(table.c.state == 7)
    .values(at=bindparam("b_at"), extra=bindparam("b_extra"))
)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()])
def test_rows_become_driver_parameters_with_constants_and_conversions(
    dialect: Dialect,
) -> None:
    prepared = Prepared(STATEMENT, dialect)
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    later = now + timedelta(hours=9)
    rows = [
        {"b_id": 1, "b_at": now, "b_extra": {"a": 1}},
        {"b_id": 2, "b_at": now, "b_extra": {"a": 2}},
        {"b_id": 3, "b_at": later, "b_extra": None},
    ]

    params = prepared.params(rows)

    by_name = [
        dict(zip(prepared.names, p, strict=True)) if prepared.positional else p
        for p in params
    ]
    for got, row in zip(by_name, rows, strict=True):
        assert got["b_id"] == row["b_id"]
        assert got["state_1"] == 7  # the constant of the WHERE clause
        assert got["b_at"] == _processed(dialect, row["b_at"])
        assert got["b_extra"] == _json(dialect, row["b_extra"])
    # One conversion shared by equal values, and never by different ones.
    assert by_name[0]["b_at"] == by_name[1]["b_at"] != by_name[2]["b_at"]


def _processed(dialect: Dialect, value: datetime) -> object:
    processor = UTCDateTime().bind_processor(dialect)
    return processor(value) if processor else value


def _json(dialect: Dialect, value: object) -> object:
    processor = JSON().bind_processor(dialect)
    return processor(value) if processor else value
