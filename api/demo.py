"""`itemgate demo`: a ready demo contract with departments, one user per role and items at several stages."""
from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import select

import bpmn
from api.auth import hash_password
from api.extensions import db
from engine.contract import schedule
from engine.contract.calendar import TZ
from engine.contract.catalog import read_catalog_file
from engine.evidence.artefacts import upload_artefact
from engine.evidence.sheets import is_sheet_kind, sheet_for
from engine.trust import audit
from engine.trust.accounts import create_user, ensure_department
from engine.trust.policy import ADMIN, AUDITOR, BUYER, CLI_ROLE, DEPT_REVIEWER, IMPLEMENTER, PM
from engine.usecases import monthly_report as mr
from engine.usecases.admin import load_contract
from engine.usecases.monthly_report import ensure_reports
from engine.usecases.tasks import Ctx, NewItem, complete_task, create_item, task_requirements, work_calendar
from storage.models import LINE_WORK, Contract, HumanTask, User, WorkItem
from storage.unit_of_work import unit_of_work

DEMO_PASSWORD = "itemgate-demo"  # demo accounts only; printed by the command  # noqa: S105
DEPARTMENTS = {"SHGA": "上海市公安局", "SHRS": "上海市人力资源和社会保障局", "KPZSJ": "开平市政务服务数据管理局"}
USERS = [
    ("impl", IMPLEMENTER, None, "实施人员 张伟"),
    ("impl2", IMPLEMENTER, None, "实施人员 李娜"),
    ("rev_ga", DEPT_REVIEWER, "SHGA", "公安局审核人 王芳"),
    ("rev_rs", DEPT_REVIEWER, "SHRS", "人社局审核人 刘洋"),
    ("rev_kp", DEPT_REVIEWER, "KPZSJ", "开平市政数局审核人 何敏"),
    ("pm", PM, None, "项目经理 陈静"),
    ("auditor", AUDITOR, None, "第三方支撑单位 赵磊"),
    ("buyer", BUYER, None, "采购单位 孙敏"),
    ("admin", ADMIN, None, "系统管理员"),
]


def demo_pdf(title: str) -> bytes:
    """A small, valid one-page PDF standing in for a scanned deliverable."""
    text = title.encode("ascii", "replace")
    stream = b"BT /F1 18 Tf 72 720 Td (" + text + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


# What each form needs to pass in the demo's happy path.
FORM_DATA: dict[str, dict[str, Any]] = {
    "difficulty_confirmation": {"difficulty": "1.2", "complexity_note": "涉及两个业务系统对接，复杂度较高"},
    "difficulty_review": {"verdict": "confirm"},
    "review": {"decision": "approve", "comment": "同意"},
    "build_integration": {"integration_done": True},
    "tests": {"tests_passed": True},
    "go_live": {"go_live_date": "2026-11-02"},
    "cosign": {"confirm": True},
}


class DemoDriver:
    """Advances demo items through their steps as the right users, uploading what each gate needs."""

    def __init__(self, store: Any):
        self.store = store
        self.users = {u.username: u for u in db.session.scalars(select(User))}

    def user_for(self, task: HumanTask) -> User:
        for user in self.users.values():
            if user.role == task.role and (task.role != DEPT_REVIEWER or user.department_id == task.department_id):
                return user
        raise LookupError(f"no demo user for {task.role}")

    def step(self, item: WorkItem, data: dict[str, dict[str, Any]] | None = None) -> bool:
        with unit_of_work(db.session):
            task = db.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id, HumanTask.status == "ready")
                                      .order_by(HumanTask.id)).first()
            if task is None:
                return False
            user = self.user_for(task)
            ctx = Ctx(session=db.session, user=user, store=self.store)
            for status in task_requirements(db.session, task):
                if status.artefact is None:
                    # A signed sheet carries the verification code ItemGate printed on it (read from its text).
                    code = sheet_for(db.session, item, status.kind, user).code if is_sheet_kind(status.kind) else ""
                    body = demo_pdf(f"{item.code} {status.kind} {code}".strip())
                    upload_artefact(db.session, self.store, ctx.actor, user, item, status.kind,
                                    f"{status.kind}.pdf", io.BytesIO(body), len(body), 10 * 1024 * 1024, task.id)
            form = dict((data or {}).get(task.spec_name) or FORM_DATA.get(task.form, {}))
            complete_task(ctx, task.id, form)
        return True


def cover_today(contract: Contract, today: date | None = None) -> bool:
    """Shift a demo contract's service period by whole years so it covers today (a demo works on any date)."""
    moved = covering_period(contract.period_start, contract.period_end, today or datetime.now(TZ).date())
    if moved is None:
        return False
    contract.period_start, contract.period_end = moved
    return True


def covering_period(start: date | None, end: date | None, today: date) -> tuple[date, date] | None:
    """The period shifted by whole years to cover today, or None when it needs no move."""
    if start is None or end is None or start <= today <= end:
        return None
    years = today.year - (start.year if today < start else end.year)
    if today > end:
        years = max(years, 1)
    new_start, new_end = _add_years(start, years), _add_years(end, years)
    while new_end < today:
        new_start, new_end = _add_years(new_start, 1), _add_years(new_end, 1)
    while new_start > today:
        new_start, new_end = _add_years(new_start, -1), _add_years(new_end, -1)
    return new_start, new_end


def _load_shipped(name: str, today: date, echo: Callable[[str], None]) -> Contract:
    """A shipped catalogue with its service period moved to cover today *before* it is loaded, so the monthly
    reports the load creates are the moved period's months."""
    parsed = read_catalog_file(bpmn.CATALOG_DIR / name)
    c = parsed["contract"]
    moved = covering_period(c["period_start"], c["period_end"], today)
    if moved is not None:
        c["period_start"], c["period_end"] = moved
    contract, _ = load_contract(db.session, parsed)
    if cover_today(contract, today):  # loaded before from an unmoved file: move it now, and make its reports
        assert contract.period_start is not None and contract.period_end is not None
        moved = (contract.period_start, contract.period_end)
        ensure_reports(db.session, contract)
    if moved is not None:
        echo(f"  {contract.code}: service period moved to {moved[0]} – {moved[1]} for the demo")
    return contract


DEMO_NARRATIVE = "{month} 月度运营情况：各服务类别按计划推进，受理、办结与超时情况见附表；本月无重大问题。"


def accept_past_reports(store: Any, font: str | None, now: datetime | None = None) -> int:
    """Monthly reports of months before the last ended one, written, submitted and accepted on time — each
    dated inside its window (its work item opened at the end of its month, submitted on the 3rd working day
    after it, accepted two working days later) and kept with its drafted files in the store — so a fresh demo's
    inbox is not a wall of late reports. The last ended month's report is opened and waits in the PM's inbox;
    the current month's opens when it ends (the tick). Returns how many were accepted."""
    now = now or datetime.now(UTC)
    today = now.astimezone(TZ).date()
    pm = db.session.execute(select(User).where(User.username == "pm")).scalar_one()
    auditor = db.session.execute(select(User).where(User.username == "auditor")).scalar_one()
    calendar = work_calendar(db.session)
    done = 0
    for contract in db.session.scalars(select(Contract).order_by(Contract.code)):
        with unit_of_work(db.session):
            reports = ensure_reports(db.session, contract)
        ended = [r for r in reports if r.period_end is not None and r.period_end < today]
        for report in ended[:-1]:
            if report.status != "open" or report.submitted_at is not None or report.period_end is None:
                continue
            day3, _ = schedule.working_deadline(calendar, schedule.after_day(report.period_end), 3)
            submitted = day3.astimezone(TZ).replace(hour=10, minute=0, second=0, microsecond=0)
            day5, _ = schedule.working_deadline(calendar, submitted, 2)
            accepted = day5.astimezone(TZ).replace(hour=16, minute=0, second=0, microsecond=0)
            if accepted >= now:
                continue
            with unit_of_work(db.session):
                opened = datetime.combine(report.period_end + timedelta(days=1), time(0), TZ)
                mr.open_month(Ctx(session=db.session, user=None, store=store, now=opened), report)
                as_pm = Ctx(session=db.session, user=pm, store=store, now=submitted, cjk_font=font)
                mr.submit(as_pm, report, DEMO_NARRATIVE.format(month=report.key))
                mr.review(Ctx(session=db.session, user=auditor, store=store, now=accepted), report, "accept",
                          "按期提交，内容完整，同意。")
            done += 1
        with unit_of_work(db.session):
            mr.open_ended(Ctx(session=db.session, user=None, store=store, now=now), contract.id)
    return done


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def load_demo(app: Flask, store: Any, echo: Callable[[str], None] = print) -> None:
    today = datetime.now(TZ).date()
    with unit_of_work(db.session):
        # The demo loads both shipped contracts (Kaiping: fixed price with targets and deliverables), each with
        # its service period moved to cover today.
        contract = _load_shipped("shanghai.toml", today, echo)
        _load_shipped("kaiping.toml", today, echo)
        for code, name in DEPARTMENTS.items():
            ensure_department(db.session, code, name).name = name
        for username, role, dept, display in USERS:
            if db.session.execute(select(User.id).where(User.username == username)).scalar() is None:
                create_user(db.session, username, hash_password(DEMO_PASSWORD), role, dept, display)
    accepted = accept_past_reports(store, app.config["ITEMGATE"].cjk_font)
    if accepted:
        echo(f"  monthly reports: {accepted} past months submitted and accepted on time")
    # Its service items, not the monthly reports' items opened above.
    if db.session.execute(select(WorkItem.id).where(WorkItem.contract_id == contract.id,
                                                    LINE_WORK)).first():
        echo("demo data already present; users and catalogue refreshed")
        _print_users(echo)
        return
    pm = db.session.execute(select(User).where(User.username == "pm")).scalar_one()
    ctx = Ctx(session=db.session, user=pm, store=store)
    plans = [
        # (name, code, line, dept, channels, mode, steps to advance, returns at the survey review)
        ("居民身份证换领", "SH-GA-0001", "1", "SHGA", ["pc", "mobile"], "new", 0, False),
        ("户口迁移登记", "SH-GA-0002", "1", "SHGA", ["pc", "mobile", "kiosk"], "new", 3, False),
        ("出入境证件办理进度查询", "SH-GA-0003", "1", "SHGA", ["mobile"], "iteration", 6, True),
        ("社会保障卡申领", "SH-RS-0001", "1", "SHRS", ["pc", "mobile"], "new", 99, False),
        ("养老保险关系转移（跨省通办）", "SH-RS-0002", "2", "SHRS", ["pc"], "iteration", 99, False),
        ("失业登记（国家平台）", "SH-RS-0003", "3", "SHRS", ["pc", "mobile"], "new", 4, False),
    ]
    driver = DemoDriver(store)
    for name, code, line, dept, channels, mode, steps, with_return in plans:
        with unit_of_work(db.session):
            item = create_item(ctx, NewItem(contract=contract.code, service_line=line, name=name, code=code,
                                            department=dept, channels=channels, mode=mode,
                                            difficulty=Decimal("1.0"),
                                            attributes={"data_quality": line == "1"}))
        for n in range(steps):
            overrides = None
            if with_return and n == 3:
                comment = "事项梳理清单缺少办理材料字段，请补充"
                overrides = {"confirm_survey": {"decision": "return", "comment": comment}}
            if not driver.step(item, overrides):
                break
        echo(f"  {code} {name}: {item.status} / {item.stage}")
    # A service order (运营服务单) the department has filed and the PM has yet to accept.
    from engine.usecases.service_orders import NewOrder, file_order

    with unit_of_work(db.session):
        reviewer = db.session.execute(select(User).where(User.username == "rev_ga")).scalar_one()
        letter = demo_pdf("需求函：机动车驾驶证补领")
        file_order(Ctx(session=db.session, user=reviewer, store=store), store, NewOrder(
            contract=contract.code, department="SHGA", title="机动车驾驶证补领接入", service_line="1",
            channels=["pc", "mobile"], description="请将机动车驾驶证补领接入一网通办 PC 端和移动端。"),
            "需求函.pdf", io.BytesIO(letter), len(letter), 10 * 1024 * 1024)
    echo("  service order 机动车驾驶证补领接入: waiting for the PM")
    with unit_of_work(db.session):
        audit.record(db.session, audit.Actor(None, "demo", CLI_ROLE), "demo.loaded", target_type="contract",
                     target_id=contract.id)
    _print_users(echo)


def _print_users(echo: Callable[[str], None]) -> None:
    echo(f"demo users (password: {DEMO_PASSWORD}): " + ", ".join(u for u, *_ in USERS))
