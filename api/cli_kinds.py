"""`itemgate process deploy` and `itemgate items import`: process versions and bulk intake from the shell."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from api.cli_base import app_context, main
from engine.trust.policy import CLI_ROLE
from storage.unit_of_work import unit_of_work


@main.group(help="Process models (BPMN) and their versions.")
def process() -> None:
    pass


@process.command("deploy", help="Validate a BPMN file and make it the current version for new items.")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def process_deploy(file: str) -> None:
    from api.extensions import db as database
    from engine.errors import Invalid
    from engine.trust import audit
    from engine.usecases.processes import deploy

    path = Path(file)
    try:
        xml = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: cannot read it as UTF-8 text: {exc}") from exc
    with app_context():
        try:
            # A refused model keeps the audit record of the refusal.
            with unit_of_work(database.session, commit_on=(Invalid,)):
                result = deploy(database.session, audit.Actor(None, "cli", CLI_ROLE), None, xml, path.name)
        except Invalid as exc:
            problems = exc.extra.get("problems") or []
            lines = [f"  - {p['element']}: {p['problem']}" for p in problems] or [f"  - {exc.detail}"]
            raise click.ClickException(f"{file} was not deployed:\n" + "\n".join(lines)) from exc
        d = result.definition
        state = "deployed as a new version" if result.created else "already deployed; made current"
        click.echo(f"{d.process_id} {d.sha256[:12]}: {state}; {result.running_on_previous} running item(s) "
                   "stay on their version")


@process.command("migrate", help="Move running items from one version of a process to another (by definition id); "
                                  "open tasks map to the same element ids. One transaction per item.")
@click.option("--from", "source", type=int, required=True, help="definition id the items run on now")
@click.option("--to", "target", type=int, required=True, help="definition id to move them to")
@click.option("--items", "items_", default=None, help="comma-separated item ids (default: all running on --from)")
@click.option("--dry-run", is_flag=True, help="list what maps and what does not; change nothing")
def process_migrate(source: int, target: int, items_: str | None, dry_run: bool) -> None:
    from tqdm import tqdm

    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust import audit
    from engine.usecases.migration import migrate

    try:
        item_ids = [int(x) for x in items_.split(",") if x.strip()] if items_ else None
    except ValueError as exc:
        raise click.ClickException("--items takes comma-separated item ids") from exc
    with app_context():
        bar = tqdm(unit="item", desc="dry run" if dry_run else "migrating", file=sys.stderr)
        try:
            report = migrate(database.session, audit.Actor(None, "cli", CLI_ROLE), None, target, item_ids=item_ids,
                             from_definition=source, dry_run=dry_run, commit=database.session.commit,
                             rollback=database.session.rollback, progress=lambda _: bar.update(1))
        except DomainError as exc:
            database.session.rollback()
            raise click.ClickException(exc.detail) from exc
        finally:
            bar.close()
        for one in report.items:
            if one.migrated:
                state = "migrated"
            elif one.mappable:
                state = "maps"
            else:
                state = "REFUSED"
            detail = f" ({one.problem})" if one.problem else ""
            click.echo(f"item {one.item_id} {one.code}: {state}; open tasks {', '.join(one.mapped) or '-'}{detail}")
        verb = "would be migrated" if dry_run else "migrated"
        count = sum(1 for i in report.items if i.mappable) if dry_run else report.migrated
        click.echo(f"{count} of {len(report.items)} item(s) {verb} to definition {target}; {report.refused} refused")
        if report.refused:
            raise SystemExit(1)


@main.group(help="Work items.")
def items() -> None:
    pass


@items.command("import", help="Create work items from a .csv or .xlsx item list (all rows or none).")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--contract", required=True, help="contract code")
@click.option("--as", "username", required=True, help="the PM the items are registered by")
@click.option("--dry-run", is_flag=True, help="validate and report only")
def items_import(file: str, contract: str, username: str, dry_run: bool) -> None:
    from sqlalchemy import select
    from tqdm import tqdm

    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.usecases.intake import import_items
    from engine.usecases.tasks import Ctx
    from storage.models import User

    with app_context():
        user = database.session.execute(select(User).where(User.username == username)).scalar()
        if user is None or not user.active:
            raise click.ClickException(f"no active user {username!r}")
        bar: tqdm | None = None

        def start(total: int) -> None:
            nonlocal bar
            bar = tqdm(total=total, unit="item", desc="importing", file=sys.stderr)

        try:
            with open(file, "rb") as stream, unit_of_work(database.session, dry_run=dry_run):
                report = import_items(Ctx(session=database.session, user=user, request_id="cli"), contract,
                                      stream, Path(file).name, dry_run=dry_run,
                                      progress=lambda n: bar.update(n) if bar else None, on_total=start)
        except DomainError as exc:
            errors = exc.extra.get("errors")
            lines = [exc.detail]
            if isinstance(errors, list):
                lines += [f"  row {e['row']}, column {e['column']}: {e['problem']}" for e in errors]
            elif isinstance(errors, dict):
                lines += [f"  {k}: {', '.join(v)}" for k, v in errors.items()]
            raise click.ClickException("\n".join(lines)) from exc
        finally:
            if bar is not None:
                bar.close()
        if dry_run:
            click.echo(f"{file}: {report.rows} rows are valid; {report.to_create} would be created, "
                       f"{report.existing} exist already (dry run, nothing imported)")
            return
        click.echo(f"{file}: {report.rows} rows; created {len(report.created)}, {report.existing} existed already")
