"""The unit of work commits a use case's writes at the end, rolls them back when it raises, keeps a refusal's
record when asked to, and rolls back a dry run."""
from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storage.unit_of_work import new_unit_of_work, unit_of_work


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


class Refused(Exception):
    pass


@pytest.fixture
def factory():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    yield lambda: Session(engine)
    engine.dispose()


def names(factory) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(Row.name).order_by(Row.id)))


def test_commit_rollback_commit_on_and_dry_run(factory):
    with new_unit_of_work(factory) as s:
        s.add(Row(name="kept"))
    with pytest.raises(ValueError), factory() as s, unit_of_work(s):
        s.add(Row(name="rolled back"))
        raise ValueError("boom")
    with pytest.raises(Refused), factory() as s, unit_of_work(s, commit_on=(Refused,)):
        s.add(Row(name="refusal record"))
        raise Refused
    with factory() as s, unit_of_work(s, dry_run=True):
        s.add(Row(name="dry run"))
    assert names(factory) == ["kept", "refusal record"]
