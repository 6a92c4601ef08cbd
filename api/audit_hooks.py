"""Audit events the request itself makes: every export or download (who, what filter, how many rows) and every
denied request (403) — 等保 level 3 asks for every user action. One place, after the response is made."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request

from api.authz import request_user
from api.extensions import db
from engine.trust import audit
from storage.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

# Downloads already audited by their own views (each artefact version downloaded, each sign-off sheet printed).
SELF_AUDITED = frozenset({"core.artefacts_content", "web.artefact_content", "core.items_sheet", "web.item_sheet"})


def register(app: Flask) -> None:
    @app.after_request
    def _audit_request(response: Response) -> Response:
        try:
            if response.status_code == 403:
                _record("access.denied", response, outcome="refused")
            elif (request.method == "GET" and response.status_code == 200
                  and "attachment" in response.headers.get("Content-Disposition", "")
                  and request.endpoint not in SELF_AUDITED):
                _record("export.downloaded", response, rows=g.get("export_rows"))
        except Exception:  # noqa: BLE001 - the answer stands; the failure is logged for the operator
            log.warning("could not audit %s %s", request.method, request.path, exc_info=True)
            db.session.rollback()
        return response


def _record(event: str, response: Response, outcome: str = "success", **extra: Any) -> None:
    with unit_of_work(db.session):
        user = request_user()
        if user is None:
            return
        actor = audit.Actor.of(user, g.get("request_id"))
        filters = {k: v for k, v in request.args.items()}
        audit.record(db.session, actor, event, target_type="endpoint", target_id=request.endpoint, outcome=outcome,
                     path=request.path, method=request.method, filter=filters, status=response.status_code,
                     action=g.get("authz_action"), **extra)
