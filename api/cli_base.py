"""The base of the `itemgate` command line: the `main` group (authorised per command), the app a command
runs in (injected, or built from the environment) and the object store it uses."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo

from api.config import ConfigError, load_settings

EMBEDDED_S3_PORT = 8333


def _app(require_secret: bool = False, **overrides: Any) -> Flask:
    from api.app import create_app

    try:
        settings = load_settings(testing=not require_secret and not os.environ.get("ITEMGATE_SECRET_KEY"),
                                 **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    # CLI commands log plainly; JSON logs are for the server.
    return create_app(settings)


def injected_app() -> Flask | None:
    """The app a caller handed the command line, as Flask's ScriptInfo does (`app.test_cli_runner()` passes
    one); None when the command builds its own from the environment."""
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx is not None else None
    return info.load_app() if info is not None else None


@contextmanager
def app_context(**overrides: Any) -> Iterator[Flask]:
    injected = injected_app() if not overrides else None
    if injected is not None:
        # The caller owns that app: its connections and store stay open for it.
        with injected.app_context():
            yield injected
        return
    app = _app(**overrides)
    with app.app_context():
        try:
            yield app
        finally:
            # A command is one process-lifetime use: close pooled connections rather than leave them
            # to the garbage collector (and to a PostgreSQL server waiting for them).
            from api.extensions import db as database

            database.remove_session()
            database.engine.dispose()
            store = app.extensions.get("itemgate_store")
            if store is not None and hasattr(store, "close"):
                store.close()


class _AuthorizedGroup(click.Group):
    """Looks every command up in the authorization matrix before running it (deny by default)."""

    group_class = type  # sub-groups check their commands too

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, click.Group) and not ctx.resilient_parsing:
            from api.authz import check_cli

            path = []
            parent: click.Context | None = ctx
            while parent is not None and parent.parent is not None:
                path.append(parent.info_name or "")
                parent = parent.parent
            check_cli(" ".join([*reversed(path), command.name or name or ""]))
        return name, command, rest


@click.group(cls=_AuthorizedGroup,
             help="ItemGate: onboarding government service work, gate by gate, until it is billable.")
def main() -> None:
    pass


@contextmanager
def object_store(app: Flask) -> Iterator[Any]:
    """The configured store, or the embedded one started for the duration."""
    settings = app.config["ITEMGATE"]
    if settings.s3_endpoint:
        store = app.extensions["itemgate_store"]
        store.ensure_bucket()
        yield store
        return
    from storage.artefact_store import ArtefactStore

    with embedded_s3(settings) as endpoint:
        store = ArtefactStore(endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket)
        store.ensure_bucket()
        previous = app.extensions.get("itemgate_store")
        app.extensions["itemgate_store"] = store
        try:
            yield store
        finally:
            # The server stops with this block: the app (an injected one lives on) must not keep a store
            # pointing at it.
            if previous is None:
                app.extensions.pop("itemgate_store", None)
            else:
                app.extensions["itemgate_store"] = previous
            store.close()


@contextmanager
def embedded_s3(settings: Any, port: int | None = None) -> Iterator[str]:
    """The data directory's own embedded S3 server: the one another command of this directory runs, or one
    started for the duration. Never a server some other process runs on the port: the directory then moves
    to a free port, recorded in the data directory, and says so."""
    from storage.s3server import SERVER_RECORD, PortInUse, data_dir_server

    data_dir = Path(settings.data_dir)
    try:
        with data_dir_server(data_dir, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                             preferred_port=port or EMBEDDED_S3_PORT) as found:
            where = f"127.0.0.1:{found.port}"
            if not found.started:
                click.echo(f"using the embedded S3 server this data directory already runs on {where}")
            else:
                if found.displaced_from is not None:
                    click.echo(f"port {found.displaced_from} is in use by another process; this data directory's "
                               f"S3 server moves to {where} (recorded in {data_dir / SERVER_RECORD})")
                click.echo(f"started the embedded S3 server (SeaweedFS) on {where}")
            yield found.endpoint
    except PortInUse as exc:
        raise click.ClickException(f"could not start the embedded S3 server: {exc}") from exc


