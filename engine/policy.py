"""The authorisation matrix: every action, which roles may take it and over which rows; deny by default."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Forbidden

ROLES = ("implementer", "dept_reviewer", "pm", "auditor", "buyer", "admin")

# Scope rules: which rows a granted role reaches. The loaders in engine/access.py apply them.
ALL = "all"                # every row of the kind
DEPARTMENT = "department"  # items of the user's department, plus items where that department has a task
LANE = "lane"              # tasks whose lane is the user's role (and, when set, whose department is theirs)
OWN = "own"                # what the user holds or created themselves
SELF = "self"              # only the caller's own record (e.g. "who am I")

SCOPE_TEXT = {
    ALL: "all rows",
    DEPARTMENT: "own department's items (and items where it has a task)",
    LANE: "tasks in the user's lane (role, and department when the task has one)",
    OWN: "only what the user holds/created",
    SELF: "the caller's own record",
}

# Who runs the command line: shell access to a server is administrator access, so CLI commands are
# checked as this role (and audited as actor "cli").
CLI_ROLE = "admin"


@dataclass(frozen=True)
class Rule:
    """One action: the roles granted it, each with the scope it reaches; `public` needs no login."""

    action: str
    summary: str
    grants: Mapping[str, str] = field(default_factory=dict)
    public: bool = False

    def allows(self, role: str | None) -> bool:
        return self.public or (role is not None and role in self.grants)

    def scope(self, role: str | None) -> str | None:
        return None if role is None else self.grants.get(role)


def _all_roles(scope: str, **overrides: str) -> dict[str, str]:
    grants = dict.fromkeys(ROLES, scope)
    grants.update(overrides)
    return grants


_READ_ITEMS = _all_roles(ALL, dept_reviewer=DEPARTMENT)
# The third party acts in its own lane: it confirms metered records and difficulty coefficients.
_LANE_ACTORS = {"implementer": LANE, "dept_reviewer": LANE, "pm": LANE, "auditor": LANE}
_LEDGER_READERS = {"pm": ALL, "auditor": ALL, "buyer": ALL, "admin": ALL}

_RULES = [
    Rule("public.page", "public pages, health checks, the OpenAPI document, static files", public=True),
    Rule("auth.login", "exchange username and password for a token or web session (rate limited)",
         public=True),
    Rule("auth.logout", "end one's own session or token", _all_roles(OWN)),
    Rule("me.read", "read one's own profile", _all_roles(SELF)),
    Rule("me.password", "change one's own password (ends all of one's sessions and tokens)", _all_roles(SELF)),
    Rule("user.manage", "create, change and deactivate users", {"admin": ALL}),
    Rule("catalog.read", "read contracts and their service catalogues", _all_roles(ALL)),
    Rule("catalog.manage", "load contract catalogues and calendars", {"admin": ALL}),
    Rule("process.manage", "deploy, list and import process models", {"admin": ALL}),
    Rule("item.read", "list and read work items with their tasks, evidence and history", _READ_ITEMS),
    Rule("item.create", "register a work item (starts its process)", {"pm": ALL, "admin": ALL}),
    Rule("item.cancel", "cancel a work item", {"pm": ALL, "admin": ALL}),
    Rule("item.rework", "send a work item back to an earlier step", {"pm": ALL, "admin": ALL}),
    Rule("item.import", "import work items from a spreadsheet (all rows or none)", {"pm": ALL, "admin": ALL}),
    Rule("notification.read", "read and mark one's own reminders and escalations", _all_roles(OWN)),
    Rule("task.read", "list and read tasks", _all_roles(ALL, dept_reviewer=DEPARTMENT)),
    Rule("task.claim", "claim a ready task", _LANE_ACTORS),
    Rule("task.complete", "complete a task (gate check, separation of duties)", _LANE_ACTORS),
    Rule("task.release", "release or hand over a claimed task",
         {"implementer": OWN, "dept_reviewer": OWN, "pm": ALL, "admin": ALL}),
    Rule("artefact.upload", "upload evidence to an active item",
         {"implementer": ALL, "dept_reviewer": DEPARTMENT, "pm": ALL, "admin": ALL}),
    Rule("artefact.read", "download evidence (authorised through its item; a department's own evidence of a "
         "per-department step only to that department)", _READ_ITEMS),
    Rule("workload.read", "read the workload ledger and export it", _LEDGER_READERS),
    Rule("settlement.read", "read settlement claims and their evidence", _LEDGER_READERS),
    Rule("settlement.prepare", "prepare, revise and submit settlement claims", {"pm": ALL}),
    Rule("settlement.comment", "comment on a settlement claim (third-party review)", {"auditor": ALL}),
    Rule("settlement.review", "first review and final approval of settlement claims", {"buyer": ALL}),
    Rule("export.job", "run long exports in the background and follow one's own export jobs",
         {"pm": OWN, "auditor": OWN, "buyer": OWN, "admin": ALL}),
    Rule("ledger.correct", "correct the workload ledger with a reversing entry (reason recorded)",
         {"pm": ALL, "admin": ALL}),
    Rule("audit.read", "read the audit trail", {"auditor": ALL, "admin": ALL}),
    Rule("ops.maintain", "operate the installation: audit verify/prune/anchor, fsck, backup, timers",
         {"admin": ALL}),
]
RULES: dict[str, Rule] = {r.action: r for r in _RULES}

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
    "workload.workload": "workload.read",
    "operations.items_cancel": "item.cancel",
    "operations.items_rework": "item.rework",
    "operations.items_import": "item.import",
    "operations.notifications_list": "notification.read",
    "operations.notifications_read": "notification.read",
    "operations.calendar_enter": "catalog.manage",
    "operations.calendar_get": "catalog.manage",
    "operations.processes_deploy": "process.manage",
    "operations.processes_list": "process.manage",
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
    "settle_web.export_workload_xlsx": "workload.read",
    "settle_web.export_workload_csv": "workload.read",
    "settle_web.export_evidence": "settlement.read",
    "settle_web.export_job_create": "export.job",
    "settle_web.export_job": "export.job",
    "settle_web.export_job_download": "export.job",
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
    "web.items": "item.read",
    "web.item": "item.read",
    "web.artefact_upload": "artefact.upload",
    "web.artefact_content": "artefact.read",
    "web.dashboard": "workload.read",
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


def rule_for_endpoint(endpoint: str | None, method: str = "GET") -> Rule | None:
    """The rule governing a request, or None when the endpoint has no entry (the caller must deny)."""
    if endpoint is None:
        return None
    entry = ENDPOINTS.get(endpoint)
    if isinstance(entry, dict):
        entry = entry.get("GET" if method == "HEAD" else method)
    return RULES.get(entry) if entry else None


def rule(action: str) -> Rule:
    return RULES[action]


def scope_of(role: str | None, action: str) -> str | None:
    """The scope `role` has for `action`, or None when the role is not granted it (or no rule exists)."""
    rule_ = RULES.get(action)
    return None if rule_ is None else rule_.scope(role)


def authorize(user: Any, action: str) -> str:
    """Raise Forbidden unless the user's role is granted `action`; returns the scope it reaches."""
    rule_ = RULES.get(action)
    if rule_ is None:
        raise Forbidden(f"action {action!r} has no entry in the authorization matrix", code="no_policy")
    role = getattr(user, "role", None)
    if not rule_.allows(role):
        raise Forbidden(f"your role ({role}) may not {rule_.summary}", code="role_required", action=action)
    return rule_.scope(role) or ALL


def markdown_table() -> str:
    """The matrix as Markdown, for docs/AUTHZ.md (a test keeps the committed file equal to this)."""
    lines = [
        "# Authorization matrix",
        "",
        "Generated from `engine/policy.py` by `itemgate authz table`; do not edit by hand.",
        "Deny by default: a role not listed for an action is refused (403), an endpoint or command without",
        "an entry is refused for everyone. Scoped rows outside a user's reach answer 404.",
        "",
        "## Actions × roles",
        "",
        "| action | what | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for r in _RULES:
        cells = ["public" if r.public else (r.grants.get(role) or "·") for role in ROLES]
        lines.append(f"| `{r.action}` | {r.summary} | " + " | ".join(cells) + " |")
    lines += ["", "Scopes: " + "; ".join(f"`{k}` = {v}" for k, v in SCOPE_TEXT.items()) + ".", "",
              "## Endpoints", "", "| endpoint | method | action |", "|---|---|---|"]
    for endpoint in sorted(ENDPOINTS):
        entry = ENDPOINTS[endpoint]
        pairs = sorted(entry.items()) if isinstance(entry, dict) else [("*", entry)]
        for method, action in pairs:
            lines.append(f"| `{endpoint}` | {method} | `{action}` |")
    lines += ["", f"## Command line (checked as role `{CLI_ROLE}`)", "", "| command | action |", "|---|---|"]
    for command in sorted(CLI_COMMANDS):
        lines.append(f"| `itemgate {command}` | `{CLI_COMMANDS[command]}` |")
    return "\n".join(lines) + "\n"
