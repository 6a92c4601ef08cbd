"""The authorisation matrix: every action, which roles may take it and over which rows; deny by default."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Forbidden

IMPLEMENTER = "implementer"
DEPT_REVIEWER = "dept_reviewer"
PM = "pm"
AUDITOR = "auditor"
BUYER = "buyer"
ADMIN = "admin"


@dataclass(frozen=True)
class Role:
    """A role: its name (stored on users and BPMN lanes), how people call it, and whether it needs a department."""

    name: str
    label: str
    label_en: str
    needs_department: bool = False


ROLE_DEFS: tuple[Role, ...] = (
    Role(IMPLEMENTER, "实施人员", "Implementer"),
    Role(DEPT_REVIEWER, "需求单位审核人", "Department reviewer", needs_department=True),
    Role(PM, "项目经理", "Project manager"),
    Role(AUDITOR, "第三方支撑单位", "Third-party auditor"),
    Role(BUYER, "采购单位", "Buyer"),
    Role(ADMIN, "系统管理员", "Administrator"),
)
ROLES: tuple[str, ...] = tuple(r.name for r in ROLE_DEFS)
ROLE_LABELS: dict[str, str] = {r.name: r.label for r in ROLE_DEFS}
# The lane a BPMN user task without a lane belongs to.
DEFAULT_LANE = IMPLEMENTER

# Scope rules: which rows a granted role reaches. The loaders in engine/trust/access.py apply them.
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
CLI_ROLE = ADMIN


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
_LANE_ACTORS = {IMPLEMENTER: LANE, DEPT_REVIEWER: LANE, PM: LANE, AUDITOR: LANE}
_OVERSEERS = {PM: ALL, AUDITOR: ALL, BUYER: ALL, ADMIN: ALL}

_RULES = [
    Rule("public.page", "public pages, health checks, the OpenAPI document, static files", public=True),
    Rule("auth.login", "exchange username and password for a token or web session (rate limited)",
         public=True),
    Rule("auth.logout", "end one's own session or token", _all_roles(OWN)),
    Rule("me.read", "read one's own profile", _all_roles(SELF)),
    Rule("me.password", "change one's own password (ends all of one's sessions and tokens)", _all_roles(SELF)),
    Rule("user.manage", "create, change and deactivate users; departments, their lead reviewers and channels",
         {ADMIN: ALL}),
    Rule("catalog.read", "read contracts and their service catalogues", _all_roles(ALL)),
    Rule("catalog.manage", "load contract catalogues and calendars", {ADMIN: ALL}),
    Rule("process.manage", "deploy, list and import process models; migrate running items between versions",
         {ADMIN: ALL}),
    Rule("item.read", "list and read work items with their tasks, evidence and history", _READ_ITEMS),
    Rule("item.create", "register a work item (starts its process)", {PM: ALL, ADMIN: ALL}),
    Rule("item.cancel", "cancel a work item", {PM: ALL, ADMIN: ALL}),
    Rule("item.rework", "send a work item back to an earlier step", {PM: ALL, ADMIN: ALL}),
    Rule("item.import", "import work items from a spreadsheet (all rows or none)", {PM: ALL, ADMIN: ALL}),
    Rule("item.difficulty", "adjust an item's proposed difficulty coefficient before it is confirmed",
         {PM: ALL, ADMIN: ALL}),
    Rule("service_order.file", "file a service order (运营服务单) with its 需求函",
         {DEPT_REVIEWER: DEPARTMENT, BUYER: ALL}),
    Rule("service_order.read", "list and read service orders and download their letters",
         {DEPT_REVIEWER: DEPARTMENT, BUYER: ALL, PM: ALL, AUDITOR: ALL, ADMIN: ALL}),
    Rule("service_order.decide", "accept a service order into a work item, or decline it with a reason",
         {PM: ALL, ADMIN: ALL}),
    Rule("notification.read", "read and mark one's own notifications (returns, new work, hand-overs, reminders, "
         "escalations, settlement steps)", _all_roles(OWN)),
    Rule("notification.channels", "choose where one's own notifications are also sent (e-mail, chat webhook)",
         _all_roles(OWN)),
    Rule("department.read", "list departments", _all_roles(ALL)),
    Rule("difficulty.review", "list pending difficulty confirmations and confirm several at once (each one an "
         "ordinary completion of the third party's task)", {AUDITOR: LANE}),
    Rule("task.read", "list and read tasks", _all_roles(ALL, dept_reviewer=DEPARTMENT)),
    Rule("task.queue_all", "list every open task in the inbox (scope=all), not only one's own and one's lane's",
         _OVERSEERS),
    Rule("task.escalation", "receive the escalation of an overdue task", {PM: ALL}),
    Rule("task.claim", "claim a ready task", _LANE_ACTORS),
    Rule("task.complete", "complete a task (gate check, separation of duties)", _LANE_ACTORS),
    Rule("task.release", "release or hand over a claimed task",
         {IMPLEMENTER: OWN, DEPT_REVIEWER: OWN, PM: ALL, ADMIN: ALL}),
    Rule("artefact.upload", "upload evidence to an active item",
         {IMPLEMENTER: ALL, DEPT_REVIEWER: DEPARTMENT, PM: ALL, ADMIN: ALL}),
    Rule("artefact.read", "download evidence (authorised through its item; a department's own evidence of a "
         "per-department step only to that department)", _READ_ITEMS),
    Rule("workload.read", "read the workload ledger and export it", _OVERSEERS),
    Rule("settlement.read", "read settlement claims and their evidence", _OVERSEERS),
    Rule("settlement.prepare", "prepare, revise and submit settlement claims", {PM: ALL}),
    Rule("settlement.comment", "comment on a settlement claim (third-party review)", {AUDITOR: ALL}),
    Rule("settlement.review", "first review and final approval of settlement claims", {BUYER: ALL}),
    Rule("export.job", "run long exports in the background and follow one's own export jobs",
         {PM: OWN, AUDITOR: OWN, BUYER: OWN, ADMIN: ALL}),
    Rule("ledger.correct", "correct the workload ledger with a reversing entry (reason recorded)",
         {PM: ALL, ADMIN: ALL}),
    Rule("audit.read", "read and export the audit trail", {AUDITOR: ALL, ADMIN: ALL}),
    Rule("payment.read", "read the contract's payment plan: due, capped and paid", _OVERSEERS),
    Rule("payment.record", "record a payment made under the contract's payment plan", {BUYER: ALL}),
    Rule("report.read", "read monthly operations reports (月度运营报告) and their spreadsheets", _OVERSEERS),
    Rule("report.prepare", "draft, write and submit monthly operations reports", {PM: ALL}),
    Rule("report.review", "review monthly operations reports (return with comments or accept)",
         {AUDITOR: ALL}),
    Rule("ops.maintain", "operate the installation: audit verify/prune/anchor, fsck, backup, timers",
         {ADMIN: ALL}),
]
RULES: dict[str, Rule] = {r.action: r for r in _RULES}



def scope_of(role: str | None, action: str) -> str | None:
    """The scope `role` has for `action`, or None when the role is not granted it (or no rule exists)."""
    rule_ = RULES.get(action)
    return None if rule_ is None else rule_.scope(role)


def roles_granted(action: str) -> tuple[str, ...]:
    """The roles granted `action`, in ROLES order."""
    rule_ = RULES[action]
    return tuple(role for role in ROLES if role in rule_.grants)


def may(user: Any, action: str) -> bool:
    """Whether the user's role is granted `action` (with any scope)."""
    return scope_of(getattr(user, "role", None), action) is not None


def needs_department(role: str | None) -> bool:
    """Whether a user of this role must belong to a department (and acts only for it)."""
    return any(r.name == role and r.needs_department for r in ROLE_DEFS)


def lane_roles() -> frozenset[str]:
    """The roles a BPMN lane may name: the ones that act on tasks of their lane."""
    return frozenset(r for r, scope in RULES["task.complete"].grants.items() if scope == LANE)


def authorize(user: Any, action: str) -> str:
    """Raise Forbidden unless the user's role is granted `action`; returns the scope it reaches."""
    rule_ = RULES.get(action)
    if rule_ is None:
        raise Forbidden(f"action {action!r} has no entry in the authorization matrix", code="no_policy")
    role = getattr(user, "role", None)
    if not rule_.allows(role):
        raise Forbidden(f"your role ({role}) may not {rule_.summary}", code="role_required", action=action)
    return rule_.scope(role) or ALL


