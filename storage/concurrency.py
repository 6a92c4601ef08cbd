"""Optimistic concurrency: the one compare-and-set UPDATE of versioned rows, and how a busy database is told."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Table, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

# SQLite's primary result codes for "another connection holds the lock" (extended codes keep them in the low
# byte: SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE …).
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "another writer holds the database" (SQLite BUSY/LOCKED), judged by the
    driver's error code, not by the message."""
    orig = exc.orig if isinstance(exc, OperationalError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _SQLITE_BUSY_CODES


class Lost(Exception):
    """The compare-and-set matched no row: someone else changed (or removed) it first. `busy` when the database
    was held by another writer instead."""

    def __init__(self, busy: bool = False) -> None:
        super().__init__("busy" if busy else "version changed")
        self.busy = busy


def compare_and_set(session: Session, table: Table, row_id: Any, expected_version: int,
                    values: Mapping[str, Any], *, also: ColumnElement[bool] | None = None,
                    version_column: str = "version", on_connection: bool = False) -> None:
    """UPDATE table SET values, version = expected + 1 WHERE id = row_id AND version = expected [AND also].

    Raises Lost when no row matched or when SQLite was busy (the caller turns that into its 409). With
    `on_connection` the statement runs on the session's connection (no ORM bulk-update machinery or autoflush).
    """
    version = table.c[version_column]
    statement = update(table).where(table.c.id == row_id, version == expected_version)
    if also is not None:
        statement = statement.where(also)
    statement = statement.values(**{version_column: expected_version + 1, **values})
    run: Callable[..., Any] = session.connection().execute if on_connection else session.execute
    try:
        result = run(statement) if on_connection else run(statement, execution_options={"synchronize_session": False})
    except OperationalError as exc:
        if is_busy(exc):
            raise Lost(busy=True) from exc
        raise
    if int(getattr(result, "rowcount", 0)) != 1:
        raise Lost()
