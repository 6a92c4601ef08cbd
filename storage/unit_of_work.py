"""The unit of work: one transaction per use case, committed by the entry point that ran it (a route, a CLI
command, a timer tick, an export job's step), rolled back when it fails. Use cases only flush."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy.orm import Session


@contextmanager
def unit_of_work(session: Session, *, commit_on: tuple[type[BaseException], ...] = (),
                 dry_run: bool = False) -> Iterator[Session]:
    """Commit what the block did when it ends; roll it back when it raises (and re-raise), or when `dry_run`.

    `commit_on` names refusals whose record must stay although the use case refused (e.g. the audit event of
    a rejected model): the block's writes are committed and the exception goes on.
    """
    try:
        yield session
    except commit_on:
        session.commit()
        raise
    except BaseException:
        session.rollback()
        raise
    try:
        if dry_run:
            session.rollback()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise


@contextmanager
def new_unit_of_work(session_factory: Callable[[], Session]) -> Iterator[Session]:
    """A unit of work in a session of its own (background runners, progress writes), closed afterwards."""
    with session_factory() as session, unit_of_work(session):
        yield session


# Opens one unit of work in a session of its own. An entry point (the job runner, `tick`) hands one to a use case
# that must write in several short transactions while it runs (a background job's claim, progress, heartbeat and
# result): the entry point decides how a unit of work is made and ended, the engine only says where one begins.
Transactions = Callable[[], AbstractContextManager[Session]]


def transactions(session_factory: Callable[[], Session]) -> Transactions:
    """Units of work in new sessions of `session_factory`, committed when each block ends."""
    return lambda: new_unit_of_work(session_factory)
