"""The HTTP and CLI surface of the authorization matrix: every endpoint and command maps to an action of
engine/trust/policy.py, and is refused when it has none (deny by default)."""
from __future__ import annotations

from typing import Any

from flask import Flask, abort, g, request

from api.errors import problem
from engine.money.exports import EXPORTS, export_named
from engine.trust.policy import CLI_ROLE, ROLES, RULES, SCOPE_TEXT, Rule

# Flask endpoint → action (or method → action when one endpoint serves several). Every rule of the URL
# map must appear here; an endpoint that does not is refused (tests/test_authz_matrix.py fails on it).
ENDPOINTS: dict[str, str | dict[str, str]] = {
    "static": "public.page",
    "index": "public.page",
    "healthz": "public.page",
    "readyz": "public.page",
    "api-docs.openapi_json": "public.page",
    "core.token": "auth.login",
    "core.logout": "auth.logout",
    "core.me": "me.read",
    "core.me_password": "me.password",
    "core.users_create": "user.manage",
    "core.users_patch": "user.manage",
    "core.catalog": "catalog.read",
    "core.items_create": "item.create",
    "core.items_list": "item.read",
    "core.items_get": "item.read",
    "core.tasks_list": "task.read",
    "core.tasks_get": "task.read",
    "core.tasks_claim": "task.claim",
    "core.tasks_unclaim": "task.release",
    "core.tasks_handover": "task.release",
    "core.tasks_complete": "task.complete",
    "core.artefacts_upload": "artefact.upload",
    "core.artefacts_list": "artefact.read",
    "core.artefacts_content": "artefact.read",
    "core.items_sheet": "item.read",
    "workload.workload": "workload.read",
    "operations.items_cancel": "item.cancel",
    "operations.items_rework": "item.rework",
    "operations.items_difficulty": "item.difficulty",
    "operations.items_import": "item.import",
    "service_orders.orders_create": "service_order.file",
    "service_orders.orders_list": "service_order.read",
    "service_orders.orders_get": "service_order.read",
    "service_orders.orders_file": "service_order.read",
    "service_orders.orders_accept": "service_order.decide",
    "service_orders.orders_decline": "service_order.decide",
    "operations.notifications_list": "notification.read",
    "operations.notifications_read": "notification.read",
    "operations.notifications_read_all": "notification.read",
    # the admin console's REST side and one's own channels (api/rest/admin.py)
    "console.users_list": "user.manage",
    "console.departments_list": "department.read",
    "console.departments_create": "user.manage",
    "console.departments_patch": "user.manage",
    "console.department_channels": "user.manage",
    "console.department_channels_set": "user.manage",
    "console.me_channels": "notification.channels",
    "console.me_channels_set": "notification.channels",
    "console.catalogs_check": "catalog.manage",
    "console.catalogs_apply": "catalog.manage",
    "console.calendar_years_list": "catalog.manage",
    "console.admin_status": "ops.maintain",
    "console.deliveries_list": "ops.maintain",
    "console.deliveries_retry": "ops.maintain",
    "operations.calendar_enter": "catalog.manage",
    "operations.calendar_get": "catalog.manage",
    "operations.processes_deploy": "process.manage",
    "operations.processes_list": "process.manage",
    "operations.processes_migrate": "process.manage",
    "admin_processes.index": "process.manage",
    "admin_processes.check": "process.manage",
    "admin_processes.deploy": "process.manage",
    "admin_processes.migrate": "process.manage",
    "workload.workload_csv": "workload.read",
    "workload.workload_xlsx": "workload.read",
    # settlements, ledger corrections, evidence bundles, count exports (api/rest/settlements.py)
    "settlements.settlements_open": "settlement.prepare",
    "settlements.settlements_list": "settlement.read",
    "settlements.settlements_get": "settlement.read",
    "settlements.settlements_submit": "settlement.prepare",
    "settlements.settlements_add_lines": "settlement.prepare",
    "settlements.settlements_remove_lines": "settlement.prepare",
    "settlements.settlements_comment": "settlement.comment",
    "settlements.settlements_accept": "settlement.comment",
    "settlements.settlements_return": "settlement.comment",
    "settlements.settlements_first_review": "settlement.review",
    "settlements.settlements_final_approval": "settlement.review",
    "settlements.settlements_claim_xlsx": "settlement.read",
    "settlements.settlements_evidence_zip": "settlement.read",
    "settlements.exports_evidence_zip": "settlement.read",
    "settlements.exports_counts": "workload.read",
    "settlements.exports_counts_csv": "workload.read",
    "settlements.exports_counts_xlsx": "workload.read",
    "settlements.ledger_reverse": "ledger.correct",
    # payment plans, the audit trail, the item register, monthly reports (api/rest/money.py)
    "money.payments_get": "payment.read",
    "money.payments_post": "payment.record",
    "money.payments_xlsx": "payment.read",
    "money.audit_list": "audit.read",
    "money.audit_export": "audit.read",
    "money.exports_items_xlsx": "workload.read",
    "money.performance_get": "workload.read",
    "money.deadlines_get": "settlement.read",
    "money.monthly_reports_list": "report.read",
    "money.monthly_report_get": "report.read",
    "money.monthly_report_file": "report.read",
    "money.monthly_report_narrative": "report.prepare",
    "money.monthly_report_attach": "report.prepare",
    "money.monthly_report_submit": "report.prepare",
    "money.monthly_report_review": "report.review",
    # their web pages (api/web/settlements.py)
    "settle_web.ledger_page": "workload.read",
    "settle_web.ledger_reverse": "ledger.correct",
    "settle_web.settlements": "settlement.read",
    "settle_web.settlements_open": "settlement.prepare",
    "settle_web.settlement": "settlement.read",
    "settle_web.settlement_submit": "settlement.prepare",
    "settle_web.settlement_lines": "settlement.prepare",
    "settle_web.settlement_audit": "settlement.comment",
    "settle_web.settlement_review": "settlement.review",
    "settle_web.settlement_claim": "settlement.read",
    "settle_web.settlement_evidence": "settlement.read",
    "settle_web.exports": "workload.read",
    "settle_web.export_job_create": "export.job",
    "settle_web.export_job": "export.job",
    "settle_web.export_job_download": "export.job",
    "settle_web.payments_page": "payment.read",
    "settle_web.payments_record": "payment.record",
    "settle_web.payments_xlsx": "payment.read",
    # background export jobs (api/rest/jobs.py)
    "jobs.jobs_get": "export.job",
    # the web inbox (api/web)
    "web.login": {"GET": "public.page", "POST": "auth.login"},
    "web.logout": "auth.logout",
    "web.inbox": "task.read",
    "web.task": "task.read",
    "web.task_claim": "task.claim",
    "web.task_unclaim": "task.release",
    "web.task_handover": "task.release",
    "web.task_complete": "task.complete",
    "web.task_draft": "task.complete",
    "web.items": "item.read",
    "web.item": "item.read",
    "web.artefact_upload": "artefact.upload",
    "web.artefact_content": "artefact.read",
    "web.artefact_preview": "artefact.read",
    "web.item_sheet": "item.read",
    "web.dashboard": "workload.read",
    # notifications and one's own channels (api/web/notifications.py)
    "notify_web.notifications": "notification.read",
    "notify_web.notification_open": "notification.read",
    "notify_web.notifications_read_all": "notification.read",
    "notify_web.channels": "notification.channels",
    # the admin console (api/web/admin.py)
    "admin_web.status": "ops.maintain",
    "admin_web.delivery_retry": "ops.maintain",
    "admin_web.users": "user.manage",
    "admin_web.user_create": "user.manage",
    "admin_web.user_change": "user.manage",
    "admin_web.departments": "user.manage",
    "admin_web.department_create": "user.manage",
    "admin_web.department_change": "user.manage",
    "admin_web.catalogs": "catalog.manage",
    "admin_web.catalog_check": "catalog.manage",
    "admin_web.catalog_apply": "catalog.manage",
    "admin_web.calendar": "catalog.manage",
    # the PM's pages (api/web/pm.py) and service orders (api/web/service_orders.py)
    "web.item_new": "item.create",
    "web.item_cancel": "item.cancel",
    "web.item_rework": "item.rework",
    "web.item_difficulty": "item.difficulty",
    # the third party's bulk difficulty confirmation (api/web/difficulty.py)
    "web.difficulty_reviews": "difficulty.review",
    "web.difficulty_confirm": "difficulty.review",
    "web.items_import": "item.import",
    "web.items_import_template": "item.import",
    "web.items_import_preview": "item.import",
    "web.items_import_start": "item.import",
    "web.items_import_job": "item.import",
    "web.service_orders": "service_order.read",
    "web.service_order": "service_order.read",
    "web.service_order_file": "service_order.read",
    "web.service_order_new": "service_order.file",
    "web.service_order_accept": "service_order.decide",
    "web.service_order_decline": "service_order.decide",
    "web.monthly_reports": "report.read",
    "web.monthly_report_submit": "report.prepare",
    "web.monthly_report_review": "report.review",
    "web.monthly_report_file": "report.read",
}

# `itemgate` sub-commands → action, checked as CLI_ROLE. Every command must appear here.
CLI_COMMANDS: dict[str, str] = {
    "db upgrade": "ops.maintain",
    "users create": "user.manage",
    "users deactivate": "user.manage",
    "users activate": "user.manage",
    "users set-password": "user.manage",
    "catalog load": "catalog.manage",
    "items import": "item.import",
    "process deploy": "process.manage",
    "process migrate": "process.manage",
    "demo": "ops.maintain",
    "serve": "ops.maintain",
    "tick": "ops.maintain",
    "authz table": "public.page",
    "audit verify": "ops.maintain",
    "audit prune": "ops.maintain",
    "audit anchor": "ops.maintain",
    "fsck": "ops.maintain",
    "backup": "ops.maintain",
    "restore": "ops.maintain",
    "evidence verify": "settlement.read",
    "evidence bundle": "settlement.read",
    "ledger reverse": "ledger.correct",
}


# Endpoints serving any registered export by its file name (engine/money/exports.py): the export's own action
# governs them; an unknown name falls back to EXPORT_FALLBACK and the view answers 404.
EXPORT_ENDPOINTS = ("settlements.exports_file", "settle_web.export_file")
EXPORT_FALLBACK = "workload.read"


def rule_for_endpoint(endpoint: str | None, method: str = "GET",
                      view_args: dict[str, Any] | None = None) -> Rule | None:
    """The rule governing a request, or None when the endpoint has no entry (the caller must deny)."""
    if endpoint is None:
        return None
    if endpoint in EXPORT_ENDPOINTS:
        spec = export_named(str((view_args or {}).get("export_name", "")))
        return RULES[spec.action if spec is not None else EXPORT_FALLBACK]
    entry = ENDPOINTS.get(endpoint)
    if isinstance(entry, dict):
        entry = entry.get("GET" if method == "HEAD" else method)
    return RULES.get(entry) if entry else None






def request_user() -> Any:
    """The caller: the bearer-token user of the API, else the web session user (Flask-Login), else None."""
    user = g.get("user")
    if user is not None:
        return user
    if request.path.startswith("/api/"):
        return None
    from flask_login import current_user

    if getattr(current_user, "is_authenticated", False):
        return getattr(current_user, "_get_current_object", lambda: current_user)()
    return None


def register(app: Flask) -> None:
    @app.before_request
    def _authorize() -> Any:
        if request.endpoint is None or request.method == "OPTIONS":
            return None  # routing answers 404/405 itself; OPTIONS reveals only the allowed methods
        rule = rule_for_endpoint(request.endpoint, request.method, request.view_args)
        if rule is None:
            return problem(403, "no_policy", f"endpoint {request.endpoint} has no entry in the authorization "
                           "matrix (engine/trust/policy.py); denied by default")
        if rule.public:
            return None
        user = request_user()
        if user is None:
            login_manager = getattr(app, "login_manager", None)
            if not request.path.startswith("/api/") and login_manager is not None \
                    and getattr(login_manager, "login_view", None):
                return login_manager.unauthorized()
            return problem(401, "unauthorized", "authentication required")
        if not rule.allows(getattr(user, "role", None)):
            if not request.path.startswith("/api/"):
                abort(403, description=f"your role may not {rule.summary}")
            return problem(403, "role_required", f"your role ({user.role}) may not {rule.summary}",
                           action=rule.action)
        g.authz_action = rule.action
        return None


def check_cli(command: str) -> None:
    """CLI commands run as the operator; an unlisted command is refused like an unlisted endpoint."""
    import click

    action = CLI_COMMANDS.get(command)
    if action is None:
        raise click.ClickException(f"command {command!r} has no entry in the authorization matrix")
    rule = RULES[action]
    if not rule.allows(CLI_ROLE):
        raise click.ClickException(f"the command line may not {rule.summary}")


def markdown_table() -> str:
    """The matrix as Markdown, for docs/AUTHZ.md (a test keeps the committed file equal to this)."""
    lines = [
        "# Authorization matrix",
        "",
        "Generated from `engine/trust/policy.py` (rules) and `api/authz.py` (endpoints, commands) by",
        "`itemgate authz table`; do not edit by hand.",
        "Deny by default: a role not listed for an action is refused (403), an endpoint or command without",
        "an entry is refused for everyone. Scoped rows outside a user's reach answer 404.",
        "",
        "## Actions × roles",
        "",
        "| action | what | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for r in RULES.values():
        cells = ["public" if r.public else (r.grants.get(role) or "·") for role in ROLES]
        lines.append(f"| `{r.action}` | {r.summary} | " + " | ".join(cells) + " |")
    lines += ["", "Scopes: " + "; ".join(f"`{k}` = {v}" for k, v in SCOPE_TEXT.items()) + ".", "",
              "## Endpoints", "", "| endpoint | method | action |", "|---|---|---|"]
    for endpoint in sorted(ENDPOINTS):
        entry = ENDPOINTS[endpoint]
        pairs = sorted(entry.items()) if isinstance(entry, dict) else [("*", entry)]
        for method, action in pairs:
            lines.append(f"| `{endpoint}` | {method} | `{action}` |")
    for endpoint in EXPORT_ENDPOINTS:
        lines.append(f"| `{endpoint}` | GET | the export's own action (below) |")
    lines += ["", "## Exports (engine/money/exports.py)", "", "| export | file | action | background job |",
              "|---|---|---|---|"]
    for spec in EXPORTS.values():
        background = "yes" if spec.background else "no"
        lines.append(f"| `{spec.kind}` | `{spec.ascii_name}` | `{spec.action}` | {background} |")
    lines += ["", f"## Command line (checked as role `{CLI_ROLE}`)", "", "| command | action |", "|---|---|"]
    for command in sorted(CLI_COMMANDS):
        lines.append(f"| `itemgate {command}` | `{CLI_COMMANDS[command]}` |")
    return "\n".join(lines) + "\n"
