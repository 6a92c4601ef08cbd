"""Trust commands of `itemgate`: the authorization table, audit verify/prune, and the evidence fsck."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from api.cli_base import app_context, main, object_store
from engine.trust.policy import CLI_ROLE
from storage.unit_of_work import unit_of_work

DOCS_AUTHZ = Path(__file__).resolve().parent.parent / "docs" / "AUTHZ.md"


@main.group(help="The authorization matrix (engine/trust/policy.py).")
def authz() -> None:
    pass


@authz.command("table", help="Print the matrix as Markdown, or write it to docs/AUTHZ.md with --write.")
@click.option("--write", is_flag=True, help="write docs/AUTHZ.md instead of printing")
def authz_table(write: bool) -> None:
    from api.authz import markdown_table

    text = markdown_table()
    if write:
        DOCS_AUTHZ.parent.mkdir(parents=True, exist_ok=True)
        DOCS_AUTHZ.write_text(text, encoding="utf-8")
        click.echo(f"wrote {DOCS_AUTHZ}")
    else:
        click.echo(text, nl=False)


@main.group(help="The tamper-evident audit trail.")
def audit() -> None:
    pass


@audit.command("verify", help="Walk the hash chain (from the latest prune checkpoint) and check it against every "
                              "anchor in the object store; name the first broken link or the first anchor it "
                              "contradicts. Exit status 1 when broken.")
@click.option("--exports", is_flag=True, help="also re-read the pruned exports from the object store")
def audit_verify(exports: bool) -> None:
    from api.extensions import db as database
    from engine.trust.anchors import stored_anchors, verify_against
    from engine.trust.audit import latest_checkpoint, verify_database
    from storage.artefact_store import StoreUnavailable

    with app_context() as app:
        report = verify_database(database.session)
        checkpoint = latest_checkpoint(database.session)
        origin = "the genesis" if checkpoint is None else f"checkpoint {checkpoint.id} (after event " \
                                                          f"{checkpoint.last_event_id})"
        if not report.ok:
            click.echo(f"BROKEN at audit event {report.first_broken_id}: {report.reason} "
                       f"({report.checked} events checked from {origin})")
            _record_verify(database.session, "broken", checked=report.checked, first_broken=report.first_broken_id,
                           reason=report.reason)
            sys.exit(1)
        click.echo(f"audit chain OK: {report.checked} events verified from {origin}")
        with object_store(app) as store:
            try:
                found = stored_anchors(store)
            except StoreUnavailable as exc:
                click.echo(f"NOT VERIFIED against anchors: the object store is unavailable ({exc})")
                _record_verify(database.session, "unverified", checked=report.checked, reason=str(exc))
                sys.exit(1)
            against = verify_against(database.session, found.anchors)
            for what in found.unreadable:
                click.echo(f"unreadable anchor: {what}")
            if against.first is not None:
                anchor, why = against.first
                click.echo(f"CONTRADICTS anchor {anchor.key} (version {anchor.version_id}, written "
                           f"{anchor.anchored_at}, {anchor.reason}): {why}; {len(against.contradicted)} of "
                           f"{against.checked} anchors contradicted")
                _record_verify(database.session, "contradicted", checked=report.checked, reason=why)
                sys.exit(1)
            if against.latest is None:
                click.echo(f"no anchors in the store yet: none of the {against.unanchored} events is anchored "
                           "(`itemgate audit anchor`; `serve` anchors every ITEMGATE_AUDIT_ANCHOR_MINUTES)")
            else:
                click.echo(f"anchors OK: {against.checked} anchors agree with the chain (newest: event "
                           f"{against.latest.event_id}, written {against.latest.anchored_at}); "
                           f"{against.unanchored} newer event(s) not anchored yet"
                           + (f"; {against.before_checkpoint} anchors of pruned events (see --exports)"
                              if against.before_checkpoint else ""))
            _record_verify(database.session, "unreadable_anchors" if found.unreadable else "ok",
                           checked=report.checked, anchors=against.checked,
                           latest_anchor=None if against.latest is None else {
                               "event_id": against.latest.event_id, "at": str(against.latest.anchored_at),
                               "key": against.latest.key})
            if found.unreadable:
                sys.exit(1)
            if exports and checkpoint is not None:
                from engine.trust.retention import verify_exports

                exported = verify_exports(database.session, store)
                if not exported.ok:
                    click.echo(f"BROKEN in exports at audit event {exported.first_broken_id}: {exported.reason}")
                    sys.exit(1)
                click.echo(f"exports OK: {exported.checked} pruned events verified from the genesis")


def _record_verify(session: Any, result: str, **detail: Any) -> None:
    """The outcome of `audit verify`, kept in the chain itself: the admin's status page shows the latest."""
    from engine.trust import audit as audit_log

    session.rollback()
    with unit_of_work(session):
        audit_log.record(session, audit_log.Actor(None, "cli", CLI_ROLE), "audit.verified", target_type="audit",
                         outcome="success" if result == "ok" else "failure", result=result, **detail)


@audit.command("anchor", help="Write the audit chain's head (event id, hash, time) to the object store under object "
                              "lock now (`serve` does it every ITEMGATE_AUDIT_ANCHOR_MINUTES).")
def audit_anchor() -> None:
    from api.extensions import db as database
    from engine.trust import audit as audit_log
    from engine.trust.anchors import anchor_now

    with app_context() as app, object_store(app) as store:
        # Recorded first, so that the anchor covers the request for it too.
        with unit_of_work(database.session):
            audit_log.record(database.session, audit_log.Actor(None, "cli", CLI_ROLE), "audit.anchor_requested",
                             target_type="bucket", target_id=store.bucket)
        anchor = anchor_now(database.session, store, "cli")
        if anchor is None:
            click.echo("the audit chain is empty: nothing to anchor")
            return
        protection = "held under object lock" if anchor.held else \
            "NOT protected: the bucket has no object lock (ITEMGATE_EVIDENCE_LOCK=off)"
        click.echo(f"anchored audit event {anchor.event_id} (hash {anchor.hash}) as s3://{store.bucket}/{anchor.key} "
                   f"version {anchor.version_id}; {protection}")


@audit.command("prune", help="Export events older than ITEMGATE_AUDIT_RETENTION_DAYS (≥ 180) to the object "
                             "store as JSONL, record a checkpoint, then delete them.")
def audit_prune() -> None:
    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust import audit as audit_log
    from engine.trust.retention import prune

    with app_context() as app, object_store(app) as store:
        settings = app.config["ITEMGATE"]
        try:
            with unit_of_work(database.session):
                result = prune(database.session, store, audit_log.Actor(None, "cli", CLI_ROLE),
                               settings.audit_retention_days)
        except DomainError as exc:
            raise click.ClickException(exc.detail) from exc
        if result.checkpoint is None:
            click.echo(f"nothing older than {settings.audit_retention_days} days to prune")
        else:
            cp = result.checkpoint
            click.echo(f"pruned {result.pruned} events ({cp.first_event_id}–{cp.last_event_id}); exported to "
                       f"s3://{cp.export_bucket}/{cp.export_key} sha256={cp.export_sha256}")


@main.command(help="Compare every artefact row with its object (exists, size, SHA-256) and list orphaned "
                   "objects; --repair removes orphans older than ITEMGATE_ORPHAN_GRACE_HOURS and places missing "
                   "legal holds on gate evidence. Exit 1 if unclean.")
@click.option("--repair", is_flag=True, help="remove orphaned objects older than the grace period")
@click.option("--quick", is_flag=True, help="compare sizes and recorded checksums only (no streaming)")
def fsck(repair: bool, quick: bool) -> None:
    from api.extensions import db as database
    from engine.evidence.integrity import fsck as run_fsck
    from engine.trust import audit as audit_log

    with app_context() as app, object_store(app) as store:
        with unit_of_work(database.session):
            settings = app.config["ITEMGATE"]
            report = run_fsck(database.session, store, repair=repair, grace_hours=settings.orphan_grace_hours,
                              deep=not quick)
            if report.lock_missing:
                click.echo(f"bucket {store.bucket}: no object lock - legal holds protect nothing and gate evidence can "
                           "be deleted with the application's credentials (see docs/TRUST.md, Evidence lock)")
            for p in report.problems:
                click.echo(f"artefact {p.artefact_id}: {p.problem} ({p.key} version {p.version_id})")
            for p in report.held:
                click.echo(f"artefact {p.artefact_id}: legal hold placed ({p.key} version {p.version_id})")
            removed = {(o.key, o.version_id) for o in report.removed}
            for o in report.orphans:
                state = "removed" if (o.key, o.version_id) in removed else (
                    "kept (younger than the grace period)" if repair else "orphan")
                click.echo(f"{state}: {o.key} version {o.version_id} ({o.size} bytes, {o.last_modified})")
            if repair and report.removed:
                with unit_of_work(database.session):
                    audit_log.record(database.session, audit_log.Actor(None, "cli", CLI_ROLE),
                                     "evidence.orphans_removed",
                                     target_type="bucket", target_id=store.bucket,
                                     objects=[[o.key, o.version_id] for o in report.removed])
            click.echo(f"checked {report.checked} artefacts: {len(report.problems) + report.lock_missing} problem(s), "
                       f"{len(report.orphans)} orphan(s), {len(report.removed)} removed")
            clean = not (report.problems or report.lock_missing or len(report.orphans) > len(report.removed))
            # Kept in the audit chain: the admin's status page shows the last result.
            audit_log.record(database.session, audit_log.Actor(None, "cli", CLI_ROLE), "evidence.fsck",
                             target_type="bucket", target_id=store.bucket, outcome="success" if clean else "failure",
                             checked=report.checked, problems=len(report.problems) + report.lock_missing,
                             orphans=len(report.orphans), removed=len(report.removed), deep=not quick, repair=repair)
        if report.problems or report.lock_missing or len(report.orphans) > len(report.removed):
            sys.exit(1)


@main.command(help="Back up the database (every table as JSON lines) and the artefact objects into DIR.")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--no-objects", is_flag=True, help="write the artefact manifest only, not the object bytes")
def backup(directory: str, no_objects: bool) -> None:
    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust.backup import backup as run_backup

    with app_context() as app, object_store(app) as store:
        try:
            info = run_backup(database.session, store, Path(directory), with_objects=not no_objects)
        except DomainError as exc:
            raise click.ClickException(exc.detail) from exc
        click.echo(f"backed up {sum(info['tables'].values())} rows in {len(info['tables'])} tables and "
                   f"{info['objects']} objects to {directory}")


@main.command(help="Restore a backup DIR into an empty database (run `db upgrade` first) and empty bucket.")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
def restore(directory: str) -> None:
    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust import audit as audit_log
    from engine.trust.backup import restore as run_restore

    with app_context() as app, object_store(app) as store:
        try:
            with unit_of_work(database.session):
                result = run_restore(database.session, store, Path(directory),
                                     audit_log.Actor(None, "cli", CLI_ROLE))
        except DomainError as exc:
            raise click.ClickException(exc.detail) from exc
        click.echo(f"restored {sum(result['tables'].values())} rows and {result['objects']} objects; "
                   "run `itemgate fsck` and `itemgate audit verify` to check")
