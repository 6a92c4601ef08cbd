"""REST API v1: the workload ledger and its exports."""
from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.auth import current_user
from api.downloads import send_export
from api.extensions import db
from api.serializers import entry_json, money, num
from engine.money.exports import EXPORTS
from engine.money.reports import WorkloadFilter, counts, entries_query, totals
from engine.trust.access import authorize

blp = Blueprint("workload", __name__, url_prefix="/api/v1", description="Workload ledger and exports")


class WorkloadArgs(Schema):
    contract = fields.String(load_default=None)
    date_from = fields.Date(load_default=None, data_key="from")
    date_to = fields.Date(load_default=None, data_key="to")
    department = fields.String(load_default=None)
    service_line = fields.String(load_default=None)


def _filter(args: dict[str, Any]) -> WorkloadFilter:
    return WorkloadFilter(**args)


@blp.route("/workload", methods=["GET"])
@blp.arguments(WorkloadArgs, location="query")
@blp.response(200)
def workload(args: dict[str, Any]) -> dict[str, Any]:
    authorize(current_user(), "workload.read")
    f = _filter(args)
    rows = db.session.execute(entries_query(f)).all()
    t = totals(db.session, f)
    return {"entries": [entry_json(e) for e, *_ in rows],
            "totals": {"units": num(t["units"]), "amount": money(t["amount"])},
            "counts": [dict(c, units=num(c["units"]), amount=money(c["amount"])) for c in counts(db.session, f)]}


@blp.route("/exports/workload.csv", methods=["GET"])
@blp.arguments(WorkloadArgs, location="query")
def workload_csv(args: dict[str, Any]) -> Response:
    return send_export(current_user(), EXPORTS["workload_csv"], _filter(args))


@blp.route("/exports/workload.xlsx", methods=["GET"])
@blp.arguments(WorkloadArgs, location="query")
def workload_xlsx(args: dict[str, Any]) -> Response:
    return send_export(current_user(), EXPORTS["workload_xlsx"], _filter(args))
