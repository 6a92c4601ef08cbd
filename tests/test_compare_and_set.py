"""storage/concurrency.py: the compare-and-set UPDATE and SQLite busy detection by the driver's error code."""
from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from storage.concurrency import Lost, compare_and_set, is_busy

META = MetaData()
ROWS = Table("rows", META, Column("id", Integer, primary_key=True), Column("version", Integer),
             Column("name", String(20)))


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'cas.db'}", connect_args={"timeout": 0})
    META.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(ROWS).values(id=1, version=3, name="a"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("on_connection", [False, True])
def test_the_winner_writes_and_the_loser_is_told(engine, on_connection):
    with Session(engine) as s:
        compare_and_set(s, ROWS, 1, 3, {"name": "b"}, on_connection=on_connection)
        with pytest.raises(Lost) as lost:
            compare_and_set(s, ROWS, 1, 3, {"name": "c"}, on_connection=on_connection)
        assert not lost.value.busy
        with pytest.raises(Lost):
            compare_and_set(s, ROWS, 1, 4, {"name": "d"}, also=ROWS.c.name == "zzz")
        s.commit()
        assert s.execute(select(ROWS.c.version, ROWS.c.name)).one() == (4, "b")


def test_a_busy_sqlite_database_is_recognised_by_its_error_code(engine):
    holder = engine.connect()
    holder.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        with Session(engine) as s:
            with pytest.raises(Lost) as lost:
                compare_and_set(s, ROWS, 1, 3, {"name": "b"})
            assert lost.value.busy and is_busy(lost.value.__cause__)
    finally:
        holder.rollback()
        holder.close()
    # The message alone decides nothing: an error that merely says "locked" is not a busy database.
    assert not is_busy(OperationalError("UPDATE", {}, Exception("row is locked by a user")))
