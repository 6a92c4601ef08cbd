"""Ledger and evidence commands of `itemgate`: reverse a ledger entry, build and verify evidence bundles."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from api.cli_base import app_context, main, object_store
from storage.unit_of_work import unit_of_work


@main.group(help="Evidence bundles (ZIP of the artefacts that made the gates pass, with manifest.csv).")
def evidence() -> None:
    pass


@evidence.command("verify", help="Re-hash every file of BUNDLE against its manifest.csv; name each mismatch. "
                                 "Exit status 1 when anything does not match.")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--against-anchors", is_flag=True,
              help="also check that an audit anchor in the object store carries this bundle's manifest SHA-256")
def evidence_verify(bundle: str, quiet: bool, against_anchors: bool) -> None:
    from tqdm import tqdm

    from engine.money.bundle import BundleError, verify_bundle

    bar = tqdm(unit="B", unit_scale=True, desc="verifying", disable=quiet, file=sys.stderr)

    def start(total: int) -> None:
        bar.reset(total=total)

    try:
        report = verify_bundle(bundle, progress=bar.update, on_start=start)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.close()
    for m in report.mismatches:
        detail = f" (manifest {m.expected}, file {m.actual})" if m.expected or m.actual else ""
        click.echo(f"MISMATCH {m.file}: {m.problem}{detail}")
    if not report.ok:
        click.echo(f"{len(report.mismatches)} mismatch(es); {report.files_checked} file(s) checked")
        sys.exit(1)
    click.echo(f"bundle OK: {report.files_checked} file(s), {report.bytes_checked} bytes match the manifest")
    if against_anchors:
        _verify_against_anchors(bundle)


def _verify_against_anchors(bundle: str) -> None:
    from engine.money.bundle import BundleError, check_against_anchors
    from storage.artefact_store import StoreUnavailable

    with app_context() as app, object_store(app) as store:
        try:
            check = check_against_anchors(bundle, store)
        except (BundleError, StoreUnavailable) as exc:
            raise click.ClickException(str(exc)) from exc
    if not check.ok:
        click.echo(f"ANCHOR MISMATCH: {check.problem} (manifest sha256 {check.manifest_sha256})")
        sys.exit(1)
    assert check.matched is not None
    click.echo(f"anchor OK: the manifest (sha256 {check.manifest_sha256}) is the one anchored as "
               f"{check.matched.key} at {check.matched.anchored_at} (audit event {check.matched.event_id})")


@evidence.command("bundle", help="Write the evidence bundle of a settlement (or of a filter) to a ZIP file.")
@click.option("--settlement", "settlement_id", type=int, default=None, help="settlement id")
@click.option("--contract", default=None, help="contract code (without --settlement)")
@click.option("--service-line", default=None)
@click.option("--department", default=None)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True))
def evidence_bundle(settlement_id: int | None, contract: str | None, service_line: str | None,
                    department: str | None, output: str) -> None:
    from api.extensions import db as database
    from engine.money.bundle import stream_bundle
    from engine.money.reports import WorkloadFilter
    from storage.models import Settlement

    with app_context() as app, object_store(app) as store:
        title = "筛选"
        if settlement_id is not None:
            settlement = database.session.get(Settlement, settlement_id)
            if settlement is None:
                raise click.ClickException(f"no settlement {settlement_id}")
            f = WorkloadFilter(settlement_id=settlement.id, include_cancelled=settlement.status == "approved")
            title = f"结算 #{settlement.id} {settlement.label}"
        else:
            f = WorkloadFilter(contract=contract, service_line=service_line, department=department)
        target = Path(output)
        partial = target.with_name(target.name + ".part")
        size = 0
        try:
            with partial.open("wb") as out:
                for chunk in stream_bundle(database.session, store, f, title):
                    out.write(chunk)
                    size += len(chunk)
            partial.replace(target)
        finally:
            # A one-shot command: give back pooled sockets and connections now rather than to the GC.
            database.remove_session()
            database.engine.dispose()
            store.close()
        click.echo(f"wrote {target} ({size} bytes)")


@main.group(help="The workload ledger (append-only).")
def ledger() -> None:
    pass


@ledger.command("reverse", help="Correct a wrong entry with a reversing entry; the original stays.")
@click.argument("entry", type=int)
@click.option("--reason", required=True, help="why the entry is wrong (recorded)")
@click.option("--user", "username", required=True, help="the PM (or admin) making the correction")
def ledger_reverse(entry: int, reason: str, username: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.money.ledger import SettlementLocked, record_refusal, reverse_entry
    from engine.trust import audit
    from storage.models import User

    with app_context():
        session = database.session
        user = session.execute(select(User).where(User.username == username)).scalar()
        if user is None or not user.active:
            raise click.ClickException(f"no active user {username!r}")
        actor = audit.Actor(user.id, user.username, user.role, "cli")
        try:
            with unit_of_work(session):
                reversal = reverse_entry(session, actor, user, entry, reason, datetime.now(UTC))
            message = f"entry {entry} reversed by entry {reversal.id} ({reversal.amount})"
        except SettlementLocked as exc:
            session.rollback()
            with unit_of_work(session):
                record_refusal(session, actor, exc)
            raise click.ClickException(f"refused ({exc.code}): {exc.detail}") from exc
        except DomainError as exc:
            session.rollback()
            raise click.ClickException(f"refused ({exc.code}): {exc.detail}") from exc
        finally:
            database.remove_session()
            database.engine.dispose()
        click.echo(message)
