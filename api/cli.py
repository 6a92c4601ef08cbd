"""The `itemgate` command line: schema, users, catalogues, demo data, the server and the timer tick. The
commands of api/cli_trust.py, api/cli_kinds.py and api/cli_settlement.py join `main` when this module loads."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import click
from flask import Flask

import api.cli_kinds  # noqa: F401 - adds its commands to main
import api.cli_settlement  # noqa: F401 - adds its commands to main
import api.cli_trust  # noqa: F401 - adds its commands to main
from api.cli_base import EMBEDDED_S3_PORT, _app, app_context, embedded_s3, main, object_store
from api.config import ConfigError, load_settings
from engine.trust.policy import CLI_ROLE, ROLES
from storage.unit_of_work import unit_of_work

__all__ = ["EMBEDDED_S3_PORT", "app_context", "embedded_s3", "main", "object_store"]


# ---------------------------------------------------------------- db

@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Create or upgrade the schema to the latest migration.")
def db_upgrade() -> None:
    from flask_migrate import upgrade

    with app_context():
        upgrade(revision="heads")
    click.echo("database is at the latest schema")


# ---------------------------------------------------------------- users

@main.group(help="Users.")
def users() -> None:
    pass


@users.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--department", default=None, help="department code (created on first use)")
@click.option("--password-stdin", is_flag=True, help="read the password from one line of standard input")
@click.option("--display-name", default=None)
def users_create(name: str, role: str, department: str | None, password_stdin: bool,
                 display_name: str | None) -> None:
    from api.auth import hash_password
    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust import audit
    from engine.trust.accounts import create_user

    password = _password_from_stdin(password_stdin)
    with app_context():
        with unit_of_work(database.session):
            try:
                user = create_user(database.session, name, hash_password(password), role, department,
                                   display_name)
            except DomainError as exc:
                raise click.ClickException(exc.detail) from exc
            audit.record(database.session, audit.Actor(None, "cli", CLI_ROLE), "user.created", target_type="user",
                         target_id=user.id, username=user.username, role=role)
        click.echo(f"created user {name} ({role}{', ' + department if department else ''})")


def _password_from_stdin(password_stdin: bool) -> str:
    if not password_stdin:
        raise click.UsageError("pass --password-stdin and give the password on standard input")
    password = sys.stdin.readline().rstrip("\r\n")
    if not 8 <= len(password) <= 256:
        raise click.ClickException("the password must have 8 to 256 characters")
    return password


def _change_user(name: str, body: dict[str, Any]) -> Any:
    from api.auth import hash_password
    from api.extensions import db as database
    from engine.errors import DomainError
    from engine.trust import audit
    from engine.usecases.admin import change_user_by_name

    with app_context():
        try:
            with unit_of_work(database.session):
                result = change_user_by_name(database.session, audit.Actor(None, "cli", CLI_ROLE), name, body,
                                             hash_password(body["password"]) if "password" in body else None)
        except DomainError as exc:
            errors = exc.extra.get("errors")
            raise click.ClickException(f"{exc.detail}{f': {errors}' if errors else ''}") from exc
        ended = result.revoked
        click.echo(f"user {name}: " + ", ".join(
            [f"active={result.user.active}"]
            + ([f"{ended.tokens} token(s) and {ended.sessions} web session(s) ended"] if ended else [])
            + ([f"{len(result.released)} claimed task(s) back in the group queue"] if result.released else [])))


@users.command("deactivate", help="Deactivate a user: sign-ins are refused, every token and web session ends "
                                  "now, claimed tasks go back to the group queue; the history stays.")
@click.argument("name")
def users_deactivate(name: str) -> None:
    _change_user(name, {"active": False})


@users.command("activate", help="Let a deactivated user sign in again.")
@click.argument("name")
def users_activate(name: str) -> None:
    _change_user(name, {"active": True})


@users.command("set-password", help="Set a user's password (one line of standard input); every token and web "
                                    "session of the user ends now.")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from one line of standard input")
def users_set_password(name: str, password_stdin: bool) -> None:
    _change_user(name, {"password": _password_from_stdin(password_stdin)})


# ---------------------------------------------------------------- catalogue

@main.group(help="Contract catalogues.")
def catalog() -> None:
    pass


@catalog.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
def catalog_load(file: str) -> None:
    from api.extensions import db as database
    from engine.contract.catalog import CatalogError, read_catalog_file
    from engine.trust import audit
    from engine.usecases.admin import load_contract

    with app_context():
        try:
            parsed = read_catalog_file(file)
            for warning in parsed.get("warnings") or []:
                click.echo(f"warning: {warning}", err=True)
            contract, changed = load_contract(database.session, parsed)
        except CatalogError as exc:
            database.session.rollback()
            raise click.ClickException(str(exc)) from exc
        with unit_of_work(database.session):
            if changed:
                audit.record(database.session, audit.Actor(None, "cli", CLI_ROLE), "catalog.loaded",
                             target_type="contract", target_id=contract.id, code=contract.code, file=file)
        lines = len(contract.service_lines)
        click.echo(f"contract {contract.code}: {lines} service lines ({'loaded' if changed else 'unchanged'})")


# ---------------------------------------------------------------- demo

@main.command(help="Load a ready demo: contract, departments, users, items at different stages.")
def demo() -> None:
    from api.demo import load_demo

    with app_context() as app, object_store(app) as store:
        load_demo(app, store, echo=click.echo)


# ---------------------------------------------------------------- serve and tick

def gunicorn_command(host: str, port: int, workers: int, threads: int) -> list[str]:
    """How ItemGate runs under gunicorn (`itemgate serve`, and the benchmarks measure the same)."""
    cmd = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{host}:{port}",
           "--timeout", "300"]
    if threads > 1:
        cmd += ["--worker-class", "gthread", "--threads", str(threads)]
    return cmd + ["wsgi:app"]


@main.command(help="Run the app with gunicorn; starts the embedded S3 server when none is configured.")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
@click.option("--workers", default=2, type=int)
@click.option("--threads", default=4, type=int, show_default=True,
              help="threads per worker (gthread): a request waiting on the database or the object store does "
                   "not hold its worker; 1 = sync workers")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()

    def run(endpoint: str) -> None:
        require_evidence_lock(settings, endpoint)
        env = dict(os.environ, ITEMGATE_S3_ENDPOINT=endpoint)
        cmd = gunicorn_command(host, port, workers, threads) + ["--access-logfile", "-"]
        proc = subprocess.Popen(cmd, env=env)  # noqa: S603 (fixed argv)
        os.environ["ITEMGATE_S3_ENDPOINT"] = endpoint
        # One app for the background loops, made before they start: building apps in several threads at once
        # races on the API extension's shared OpenAPI spec.
        background = _app()
        ticker = threading.Thread(target=_tick_loop, args=(background, settings.tick_seconds, stop), daemon=True)
        ticker.start()
        # Export jobs on a loop of their own, so a long export never holds up the timers.
        runner = threading.Thread(target=_jobs_loop, args=(background, settings.tick_seconds, stop), daemon=True)
        runner.start()
        threading.Thread(target=_anchor_loop, args=(background, settings.audit_anchor_minutes, stop),
                         daemon=True).start()
        # Notification e-mail and chat messages, sent apart from the requests that raised them.
        threading.Thread(target=_delivery_loop, args=(background, settings.delivery_seconds, stop),
                         daemon=True).start()
        click.echo(f"ItemGate is running on http://{host}:{port}")

        def _forward(signum: int, _frame: Any) -> None:
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)
        try:
            proc.wait()
        finally:
            stop.set()

    if settings.s3_endpoint:
        run(settings.s3_endpoint)
    else:
        with embedded_s3(settings) as endpoint:
            run(endpoint)


def require_evidence_lock(settings: Any, endpoint: str) -> None:
    """Refuse to serve from a bucket without object lock (held evidence there can be deleted with the app's own
    credentials) unless the operator accepted that with ITEMGATE_EVIDENCE_LOCK=off."""
    from storage.artefact_store import ArtefactStore, StoreUnavailable

    store = ArtefactStore(endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket)
    try:
        store.ensure_bucket()  # a bucket ItemGate creates gets object lock
        locked = store.object_lock_enabled()
    except StoreUnavailable as exc:
        click.echo(f"warning: could not check the bucket's object lock now ({exc}); /readyz reports it", err=True)
        return
    finally:
        store.close()
    if locked:
        return
    where = f"bucket {settings.s3_bucket!r} at {endpoint}"
    if not settings.evidence_lock:
        click.echo(f"WARNING: {where} has no object lock; running anyway (ITEMGATE_EVIDENCE_LOCK=off): evidence "
                   "that passed a gate can be deleted. /readyz reports evidence_lock off.", err=True)
        return
    raise click.ClickException(
        f"{where} was created without object lock, so evidence that passed a gate could be deleted with "
        "ItemGate's own credentials. Object lock can only be chosen when a bucket is created: point "
        "ITEMGATE_S3_BUCKET at a new bucket (ItemGate creates it with object lock and versioning; or create it "
        "yourself, e.g. `mc mb --with-lock`) and move the data with `itemgate backup` / `itemgate restore` "
        "(docs/TRUST.md, Evidence lock). To run without the lock anyway, set ITEMGATE_EVIDENCE_LOCK=off.")


def _tick_loop(app: Flask, every: int, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            with app.app_context():
                _tick_once()
        except Exception as exc:  # keep ticking; the next round may succeed
            click.echo(f"tick failed: {exc}", err=True)


def _jobs_loop(app: Flask, every: int, stop: threading.Event) -> None:
    """Take up export jobs that a dead process left, and queued ones nobody started: at once (the previous
    `serve` may have died with jobs running), then every `every` seconds."""
    while True:
        try:
            with app.app_context():
                _run_jobs(app.extensions["itemgate_store"])
        except Exception as exc:  # keep going; the next round may succeed
            click.echo(f"export job runner failed: {exc}", err=True)
        if stop.wait(every):
            return


def _anchor_loop(app: Flask, minutes: int, stop: threading.Event) -> None:
    """Anchor the audit chain's head at start and every `minutes` while it moves (docs/TRUST.md)."""
    last: int | None = None
    while True:
        try:
            with app.app_context():
                from api.extensions import db as database
                from engine.trust.anchors import anchor_if_moved

                store = app.extensions.get("itemgate_store")
                if store is not None:
                    anchor = anchor_if_moved(database.session, store, last)
                    last = anchor.event_id if anchor is not None else last
                database.remove_session()
        except Exception as exc:  # keep going; the next round may succeed
            click.echo(f"audit anchor failed: {exc}", err=True)
        if stop.wait(minutes * 60):
            return


def _delivery_loop(app: Flask, every: int, stop: threading.Event) -> None:
    """Send the notification outbox every `every` seconds (api/background.py does the work)."""
    from api.background import deliver_notifications

    while True:
        try:
            deliver_notifications(app)
        except Exception as exc:  # keep going; the next round may succeed
            click.echo(f"notification delivery failed: {exc}", err=True)
        if stop.wait(every):
            return


def _tick_once() -> int:
    """Open the monthly reports of months that have ended, then fire due timers; returns the timers fired."""
    from api.background import fire_due_timers, open_monthly_reports
    from api.extensions import db as database

    opened = open_monthly_reports(database.session)
    if opened:
        click.echo(f"opened {opened} monthly report(s)")
    return fire_due_timers(database.session)


def _run_jobs(store: Any) -> dict[str, int]:
    from sqlalchemy.orm import sessionmaker

    from api.extensions import db as database
    from engine.usecases.jobs import run_pending
    from storage.unit_of_work import transactions

    try:
        return run_pending(transactions(sessionmaker(bind=database.engine, expire_on_commit=False)), store)
    finally:
        database.remove_session()


@main.command(help="Fire due timers, send pending notifications and run pending export jobs once, including "
                   "those a dead process left "
                   "running (safe to run from several hosts at once).")
def tick() -> None:
    from api.extensions import db as database
    from engine.usecases.jobs import jobs_waiting

    with app_context() as app:
        fired = _tick_once()
        click.echo(f"fired {fired} timer(s)")
        from api.background import deliver_notifications

        sent = deliver_notifications(app)
        if any(sent.values()):
            click.echo("notifications: " + ", ".join(f"{n} {what}" for what, n in sent.items()))
        if jobs_waiting(database.session):
            database.remove_session()
            with object_store(app) as store:
                counts = _run_jobs(store)
            click.echo("export jobs: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


if __name__ == "__main__":  # pragma: no cover
    main()
    time.sleep(0)
