"""SQLAlchemy models: the persistent shape of contracts, work items, process state, evidence and ledger."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CHANNELS = ("pc", "mobile", "kiosk")
MODES = ("new", "iteration")
# The mode of a metered line's record (units in a period) and of a contract-level deliverable.
RECORD_MODE = "record"
DELIVERABLE_MODE = "deliverable"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime, date: Date}


class Department(Base):
    __tablename__ = "departments"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # The department's lead reviewer (牵头审核人), chosen by an administrator.
    lead_reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", use_alter=True))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    display_name: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The language the user chose in the web (zh | en); their e-mail and chat notifications use it (NULL: Chinese).
    language: Mapped[str | None] = mapped_column(String(8))

    department: Mapped[Department | None] = relationship(lazy="joined", foreign_keys=[department_id])

    @property
    def department_code(self) -> str | None:
        return self.department.code if self.department else None


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class WebSession(Base):
    """A signed-in web session. The signed cookie carries only a random id whose hash is looked up here on every
    request, so signing out, a new password or a deactivation ends the session on the server."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # SHA-256 of the client's address and User-Agent at sign-in: a cookie replayed by another client is refused.
    agent_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Refreshed at most every few minutes; rows unseen for longer than a session can live are pruned.
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contract(Base):
    __tablename__ = "contracts"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    buyer: Mapped[str | None] = mapped_column(String(200))
    supplier: Mapped[str | None] = mapped_column(String(200))
    period_start: Mapped[date | None]
    period_end: Mapped[date | None]
    award_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)

    service_lines: Mapped[list[ServiceLine]] = relationship(
        back_populates="contract", order_by="ServiceLine.position", cascade="all, delete-orphan"
    )


class ServiceLine(Base):
    __tablename__ = "service_lines"
    __table_args__ = (UniqueConstraint("contract_id", "code", name="uq_service_lines_contract_code"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    channels: Mapped[list[Any]] = mapped_column(default=list)
    # channel → unit price as a decimal string (JSON numbers would lose exactness)
    unit_prices: Mapped[dict[str, Any]] = mapped_column(default=dict)
    estimated_volumes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    process_id: Mapped[str] = mapped_column(String(64))
    # gate code → list of {"kind": ..., "when": {...}} rules
    gates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    targets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    units_per_item: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal("1"))
    # The unit's stable code (e.g. "call"); `unit` is its name (次接口调用量). NULL on lines loaded before.
    unit_code: Mapped[str | None] = mapped_column(String(32))
    # A metered line's work item is a record of units in a period (calls, SMS, person-months, assessments).
    metered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The difficulty coefficients the contract allows on this line: [{"value": "1.20", "meaning": ...}].
    difficulty_levels: Mapped[list[Any] | None] = mapped_column(JSON)

    contract: Mapped[Contract] = relationship(back_populates="service_lines")


class ProcessDefinition(Base):
    """A BPMN file as deployed, stored once per content hash; instances point at the version they run."""

    __tablename__ = "process_definitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(64), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(200))
    # Loaded on access only: every instance load joins its definition, and the parsed model is cached by sha256.
    bpmn_xml: Mapped[str] = mapped_column(Text, deferred=True)
    deployed_at: Mapped[datetime] = mapped_column(default=utcnow)
    deployed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)


class WorkItem(Base):
    __tablename__ = "work_items"
    __table_args__ = (
        Index("ix_work_items_contract_code_mode", "contract_id", "code", "mode"),
        Index("ix_work_items_scope", "department_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    # NULL for a contract-level work item (a monthly operations report): no line's work, no department's.
    service_line_id: Mapped[int | None] = mapped_column(ForeignKey("service_lines.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300))
    channels: Mapped[list[Any]] = mapped_column(default=list)
    mode: Mapped[str] = mapped_column(String(16))
    difficulty: Mapped[Decimal] = mapped_column(Numeric(6, 2), default=Decimal("1.00"))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    stage: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    completed_at: Mapped[datetime | None]
    cancelled_reason: Mapped[str | None] = mapped_column(Text)
    # A metered record's units and period ("2026-11"); NULL for countable work.
    units: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    period: Mapped[str | None] = mapped_column(String(7))
    # The go-live date entered on the go-live step (上线日期), not the completion time.
    go_live_date: Mapped[date | None] = mapped_column(Date)
    # Registered for a day (or period) outside the contract's service period; flagged, not refused by default.
    out_of_period: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Difficulty: proposed by the PM with the complexity statement, confirmed (or set) by the auditor.
    difficulty_proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    difficulty_confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    contract: Mapped[Contract] = relationship(lazy="joined")
    service_line: Mapped[ServiceLine] = relationship(lazy="joined")
    department: Mapped[Department] = relationship(lazy="joined")

    @property
    def contract_level(self) -> bool:
        """A work item of the contract itself (a monthly operations report), not of a service line."""
        return self.service_line_id is None


# In a query: the items of a service line (not the contract's own, such as its monthly reports).
LINE_WORK = WorkItem.service_line_id.is_not(None)


class ProcessInstance(Base):
    __tablename__ = "process_instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"), unique=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    state: Mapped[str] = mapped_column(Text)
    # compare-and-set token: every write is UPDATE … WHERE id=? AND version=?
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="running")
    next_timer_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    definition: Mapped[ProcessDefinition] = relationship(lazy="joined")


class HumanTask(Base):
    """Projection of a READY manual task, so the inbox is one indexed query."""

    __tablename__ = "human_tasks"
    __table_args__ = (
        UniqueConstraint("instance_id", "spiff_task_id", name="uq_human_tasks_instance_spiff"),
        Index("ix_human_tasks_group", "status", "role", "department_id", "assignee_id", "created_at"),
        Index("ix_human_tasks_assignee", "assignee_id", "status", "created_at"),
        Index("ix_human_tasks_item", "item_id", "status"),
        # Inbox queues in page order: a first page reads 20 index entries instead of sorting every open task
        # of a role. Not partial, so generic plans of prepared statements can use them too.
        Index("ix_human_tasks_role_queue", "status", "role", "created_at", "id",
              postgresql_include=["assignee_id"]),
        Index("ix_human_tasks_dept_queue", "status", "role", "department_id", "created_at", "id",
              postgresql_include=["assignee_id"]),
        # The web inbox's default order (due first, undated last): its first page reads PER_PAGE index entries
        # instead of sorting a role's every open task (~50,000 for the implementers at the benchmark's scale).
        Index("ix_human_tasks_role_due_queue", "status", "role", "due_at", "created_at", "id",
              postgresql_include=["assignee_id"]),
        Index("ix_human_tasks_dept_due_queue", "status", "role", "department_id", "due_at", "created_at", "id",
              postgresql_include=["assignee_id"]),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("process_instances.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"))
    spiff_task_id: Mapped[str] = mapped_column(String(36))
    spec_name: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    lane: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    form: Mapped[str] = mapped_column(String(64))
    gate: Mapped[str | None] = mapped_column(String(64))
    stage: Mapped[str | None] = mapped_column(String(64))
    review_of: Mapped[str | None] = mapped_column(String(64))
    # A step the model runs once per department (its `department_var`): its evidence is that department's own.
    per_department: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(16), default="ready")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    claimed_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    due_warning: Mapped[str | None] = mapped_column(String(200))
    return_comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    item: Mapped[WorkItem] = relationship(lazy="joined")
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    completed_by: Mapped[User | None] = relationship(foreign_keys=[completed_by_id])
    # Lets a new item's first tasks be added before its instance row exists, in one flush.
    instance: Mapped[ProcessInstance] = relationship()


class Artefact(Base):
    __tablename__ = "artefacts"
    __table_args__ = (Index("ix_artefacts_item_kind", "item_id", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"))
    kind: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    bucket: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(400))
    version_id: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    # The ETag the store answered for the upload (quotes stripped). Objects streamed in as multipart uploads
    # carry no x-amz-meta-sha256 (metadata is fixed before the first byte), so verification compares this.
    etag: Mapped[str | None] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(200))
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("human_tasks.id"))
    # Whose evidence it is: the department of the per-department step it was uploaded for; NULL for evidence
    # of the whole item. Gates and reviews of a per-department step count only that department's files.
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    status: Mapped[str] = mapped_column(String(16), default="stored")

    uploaded_by: Mapped[User] = relationship(lazy="joined")
    department: Mapped[Department | None] = relationship()


class GatePass(Base):
    """Which artefact versions made a gate pass: the evidence an auditor is later shown."""

    __tablename__ = "gate_passes"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("human_tasks.id"))
    gate: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    artefact_id: Mapped[int] = mapped_column(ForeignKey("artefacts.id"))
    passed_at: Mapped[datetime] = mapped_column(default=utcnow)


class TaskDraft(Base):
    """What someone has typed into a task's form but not submitted yet: kept on the server per task and person,
    so an upload, a reload or another device never loses it. Deleted when the task is completed."""

    __tablename__ = "task_drafts"
    __table_args__ = (UniqueConstraint("task_id", "user_id", name="uq_task_drafts_task_user"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("human_tasks.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignOffSheet(Base):
    """A sign-off sheet ItemGate printed for an item: its verification code, one per item and artefact kind.

    The code is random and stored (not derived from the app secret), so a sheet printed today still verifies after
    the secret is rotated, and a code read from an upload tells whose sheet it is (another item's, another kind's)."""

    __tablename__ = "sign_off_sheets"
    __table_args__ = (UniqueConstraint("item_id", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"))
    kind: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class WorkloadEntry(Base):
    __tablename__ = "workload_entries"
    __table_args__ = (Index("ix_workload_contract_time", "contract_id", "tallied_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("work_items.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    service_line_id: Mapped[int] = mapped_column(ForeignKey("service_lines.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    channel: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    # Full precision (0.004 元 × 1,440,000,000 calls); sums are rounded to the fen only at the totals.
    units: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    difficulty: Mapped[Decimal] = mapped_column(Numeric(6, 2))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    amount: Mapped[Decimal] = mapped_column(Numeric(22, 6))
    difficulty_proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    difficulty_confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    tallied_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "item:{id}:channel:{ch}" for a tally; NULL for reversals. Unique → a retried end can't count twice.
    tally_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("workload_entries.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    item: Mapped[WorkItem] = relationship(lazy="joined")
    service_line: Mapped[ServiceLine] = relationship(lazy="joined")


class AuditEvent(Base):
    """Append-only record of every action; each row carries the hash of the previous one."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    # An item's history (its own, its tasks' and its artefacts' events) is looked up by target; without this
    # every item page scans the whole chain, which grows by every action for years.
    __table_args__ = (Index("ix_audit_events_target", "target_type", "target_id"),
                      # The admin's status page reads the latest event of a kind (last verify, last fsck).
                      Index("ix_audit_events_type", "event_type", "id"))


class CalendarDay(Base):
    """An admin-entered working-day fact for a year the calendar package does not cover yet."""

    __tablename__ = "calendar_days"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    is_workday: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(String(100))


class CalendarYear(Base):
    __tablename__ = "calendar_years"
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- settlement (审量结算)

# One reversal per entry: a correction is never itself corrected twice.
Index("uq_workload_entries_reverses_id", WorkloadEntry.reverses_id, unique=True)


class Settlement(Base):
    """A staged claim for a contract and period, run by the `settlement` BPMN; locked once approved."""

    __tablename__ = "settlements"
    __table_args__ = (Index("ix_settlements_contract_status", "contract_id", "status"),
                      # One claim per stage of a contract (ad-hoc periods have no stage: NULLs never clash).
                      Index("uq_settlements_contract_stage", "contract_id", "stage", unique=True))
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    label: Mapped[str] = mapped_column(String(100))
    period_start: Mapped[date]
    period_end: Mapped[date]
    status: Mapped[str] = mapped_column(String(32), default="draft")
    definition_id: Mapped[int] = mapped_column(ForeignKey("process_definitions.id"))
    state: Mapped[str] = mapped_column(Text)
    # compare-and-set token: every change is UPDATE … WHERE id=? AND version=?
    version: Mapped[int] = mapped_column(Integer, default=1)
    current_task: Mapped[str | None] = mapped_column(String(64))
    current_lane: Mapped[str | None] = mapped_column(String(32))
    round: Mapped[int] = mapped_column(Integer, default=1)
    assessment_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    due_at: Mapped[datetime | None]
    first_submitted_at: Mapped[datetime | None]
    first_reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_at: Mapped[datetime | None]
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Frozen at approval so later changes elsewhere can never move an approved figure.
    gross_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    penalty_rate: Mapped[Decimal | None] = mapped_column(Numeric(6, 4))
    penalty_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    deduction_rate: Mapped[Decimal | None] = mapped_column(Numeric(6, 4))
    deduction_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    net_amount: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    # The audit anchor written at final approval (object key, version, anchored event id and hash).
    anchor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The contract schedule's stage this claim settles (6m, 9m, annual, final, q1…); None for an ad-hoc period.
    stage: Mapped[str | None] = mapped_column(String(16))
    # The revision clock: a claim returned for revision must come back by this moment (15 working days).
    revision_due_at: Mapped[datetime | None]
    revision_late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Deductions recorded on the claim from elsewhere (a late monthly report of a month it covers), frozen too.
    other_deductions: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))

    contract: Mapped[Contract] = relationship(lazy="joined")
    definition: Mapped[ProcessDefinition] = relationship(lazy="joined")


class SettlementLine(Base):
    """An entry claimed by a settlement; the unique entry_id means an entry is claimed at most once."""

    __tablename__ = "settlement_lines"
    __table_args__ = (Index("ix_settlement_lines_settlement", "settlement_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    settlement_id: Mapped[int] = mapped_column(ForeignKey("settlements.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("workload_entries.id"), unique=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    added_reason: Mapped[str | None] = mapped_column(Text)
    # Carried into this stage from an earlier one (its tally date lies before the stage): the reason is shown.
    carried: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    entry: Mapped[WorkloadEntry] = relationship(lazy="joined")


class SettlementNote(Base):
    """The settlement's paper trail: per-line comments, revisions with reasons, decisions."""

    __tablename__ = "settlement_notes"
    __table_args__ = (Index("ix_settlement_notes_settlement", "settlement_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    settlement_id: Mapped[int] = mapped_column(ForeignKey("settlements.id"))
    round: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(32))
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("workload_entries.id"))
    text: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User | None] = relationship(lazy="joined")


class Notification(Base):
    """One notification for one person, with that person's own read state: a task returned to them, new work in
    their queue, a claim handed to them, a reminder or escalation, a settlement step waiting for their role.
    Group events are fanned out to a row per member (engine/trust/notify.py), so one member reading it reads it for
    no one else."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user", "user_id", "read_at"),
        Index("ix_notifications_role", "role", "department_id", "read_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # The recipient. (Rows written before 18b may still name a group alone: role, optionally department.)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The group the event was addressed to, when it was (new work in a queue, a reminder to a group).
    role: Mapped[str | None] = mapped_column(String(32))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("work_items.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("human_tasks.id"))
    settlement_id: Mapped[int | None] = mapped_column(ForeignKey("settlements.id"))
    # reminder | escalation | returned | new_task | difficulty | handover | settlement
    kind: Mapped[str] = mapped_column(String(16))
    # The text in Chinese as written; a reader sees the key's text (engine/trust/notify.py MESSAGES) with `params`
    # in their own language, and this only for a row written before keys.
    message: Mapped[str] = mapped_column(String(400))
    message_key: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The comment of a return, shown with the notification.
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


class NotificationChannel(Base):
    """Where a person's or a department's notifications are also sent: an e-mail address, or a chat webhook
    (企业微信/钉钉 group robot, as an Apprise URL or the robot's own webhook URL)."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("owner_type", "owner_id", "kind", name="uq_notification_channels_owner"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))  # user | department
    owner_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # email | webhook
    target: Mapped[str] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """The outbox: one message to one channel, written in the transaction that raised the notification and sent
    afterwards by `tick` or the serve loop (claimed under row locks), retried with backoff, failures kept."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_notification_deliveries_queue", "status", "next_attempt_at", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[int | None] = mapped_column(ForeignKey("notifications.id"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("notification_channels.id"))
    kind: Mapped[str] = mapped_column(String(16))  # email | webhook
    target: Mapped[str] = mapped_column(String(500))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


# ---------------------------------------------------------------- trust: audit retention, login throttling

class AuditCheckpoint(Base):
    """Where a pruned audit chain now starts: the last exported event's id and hash, and the export."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))
    first_event_id: Mapped[int | None] = mapped_column(BigInteger)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    last_at: Mapped[datetime]
    event_count: Mapped[int] = mapped_column(Integer)
    export_bucket: Mapped[str] = mapped_column(String(100))
    export_key: Mapped[str] = mapped_column(String(400))
    export_version_id: Mapped[str | None] = mapped_column(String(200))
    export_sha256: Mapped[str] = mapped_column(String(64))


class LoginAttempt(Base):
    """A failed login, kept for the sliding-window rate limit shared by every worker (key = user + IP)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- background exports

class ExportJob(Base):
    """A long export rendered in the background: its progress while running, the stored result when done."""

    __tablename__ = "export_jobs"
    __table_args__ = (Index("ix_export_jobs_requested_by", "requested_by_id", "created_at"),
                      # The runners' queue: queued jobs in order, running ones whose heartbeat stopped.
                      Index("ix_export_jobs_status", "status", "id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # workload_xlsx | workload_csv | evidence_zip
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done | failed
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(400))
    version_id: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    # Written with every progress update and by the runner's heartbeat: a running job whose heartbeat stops
    # belongs to a dead process, and the next `tick` (or `serve`) takes it up again.
    heartbeat_at: Mapped[datetime | None]
    # Claims so far; every write of a runner names its attempt, so one that was given up on cannot write.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    runner: Mapped[str | None] = mapped_column(String(200))  # host:pid of the process running it
    finished_at: Mapped[datetime | None]


class ContractTask(Base):
    """A contract-level clock the settlement rules run: a monthly operations report (月度运营报告) or a
    rectification (整改) after a 不合格 evaluation. One row per month / per failed evaluation."""

    __tablename__ = "contract_tasks"
    __table_args__ = (UniqueConstraint("contract_id", "kind", "key", name="uq_contract_tasks_kind_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    kind: Mapped[str] = mapped_column(String(32))          # monthly_report | rectification
    # The work item a monthly report's lifecycle runs on (PM prepares, third party reviews): set once its
    # month has ended.
    item_id: Mapped[int | None] = mapped_column(ForeignKey("work_items.id"), unique=True)
    key: Mapped[str] = mapped_column(String(32))           # 2025-03 | settlement:17
    title: Mapped[str] = mapped_column(String(200))
    settlement_id: Mapped[int | None] = mapped_column(ForeignKey("settlements.id"))
    period_start: Mapped[date | None]
    period_end: Mapped[date | None]
    status: Mapped[str] = mapped_column(String(16), default="open")   # open | submitted | returned | accepted
    due_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    revision_due_at: Mapped[datetime | None]
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    narrative: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Payment(Base):
    """A payment the buyer made under the contract's payment plan (number = the plan's instalment)."""

    __tablename__ = "payments"
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    paid_on: Mapped[date]
    invoice_number: Mapped[str] = mapped_column(String(64))
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
class ServiceOrder(Base):
    """运营服务单 (seed 001 §七(三)1): a department or the buyer asks for work with a 需求函; the PM accepts it
    into a work item (the letter becomes the item's requirement/change letter) or declines it with a reason."""

    __tablename__ = "service_orders"
    __table_args__ = (Index("ix_service_orders_status", "status", "created_at"),
                      Index("ix_service_orders_department", "department_id", "created_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    # What the requester proposes; the PM decides the item's line, channels and mode on acceptance.
    service_line: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16), default="new")
    channels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    wanted_by: Mapped[date | None]
    # The letter (需求函 / 变更函) as stored: the key is the server's, never the uploader's filename.
    filename: Mapped[str] = mapped_column(String(255))
    bucket: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(400))
    version_id: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(200))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="submitted")  # submitted | accepted | declined
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    decline_reason: Mapped[str | None] = mapped_column(Text)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("work_items.id"))

    contract: Mapped[Contract] = relationship(lazy="joined")
    department: Mapped[Department] = relationship(lazy="joined")
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined")
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])
