"""Spreadsheets of the money rules: the payment schedule (支付计划) and the audit-event export."""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from typing import Any

from engine.money.payments import Instalment
from engine.money.reports import TZ, _Book
from storage.models import AuditEvent, Contract

STATE_NAMES = {"waiting": "待结算审定", "due": "应付", "paid": "已付清", "nothing_due": "无需支付"}


def payments_xlsx_file(contract: Contract, plan: list[Instalment]) -> tempfile.SpooledTemporaryFile[bytes]:
    """The payment schedule: each instalment's basis, cap, what the cap held back, due, paid and outstanding;
    a second sheet lists the payments recorded."""
    book = _Book()
    sheet = book.book.add_worksheet("支付计划")
    sheet.write_row(0, 0, [f"{contract.code} {contract.name}", "中标金额（元）",
                           float(contract.award_amount) if contract.award_amount is not None else "—"], book.bold)
    header = ["笔次", "名称", "支付条件", "审定累计金额（元）", "累计上限比例", "累计上限（元）",
              "超上限暂不支付（元）", "应付（元）", "已付（元）", "未付（元）", "状态"]
    sheet.write_row(2, 0, header, book.bold)
    for r, i in enumerate(plan, start=3):
        sheet.write_row(r, 0, [i.number, i.name, f"{i.after} 阶段审定后" if i.after else "合同生效后"])
        for c, value in ((3, i.target), (5, i.cap), (6, i.capped), (7, i.due), (8, i.paid), (9, i.outstanding)):
            if value is None:
                sheet.write(r, c, "—")
            else:
                sheet.write_number(r, c, float(value), book.money)
        if i.cap_ratio is None:
            sheet.write(r, 4, "—")
        else:
            sheet.write_number(r, 4, float(i.cap_ratio), book.pct)
        sheet.write(r, 10, STATE_NAMES.get(i.state, i.state))
    sheet.set_column(0, 0, 6)
    sheet.set_column(1, 2, 22)
    sheet.set_column(3, 10, 16)
    paid = book.book.add_worksheet("付款记录")
    paid.write_row(0, 0, ["笔次", "金额（元）", "付款日期", "发票号"], book.bold)
    row = 1
    for i in plan:
        for p in i.payments:
            paid.write_row(row, 0, [i.number])
            paid.write_number(row, 1, p["amount"], book.money)
            paid.write_row(row, 2, [p["paid_on"], p["invoice_number"]])
            row += 1
    return book.close()


AUDIT_HEADER = ["编号", "时间", "用户", "角色", "事件", "对象", "对象编号", "结果", "请求号", "详情"]


def audit_xlsx_file(events: Iterable[AuditEvent], detail: Any = None) -> tempfile.SpooledTemporaryFile[bytes]:
    import json

    book = _Book()
    sheet = book.book.add_worksheet("审计日志")
    sheet.write_row(0, 0, AUDIT_HEADER, book.bold)
    for r, e in enumerate(events, start=1):
        sheet.write_row(r, 0, [e.id, e.at.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S"), e.username or "",
                               e.role or "", e.event_type, e.target_type or "", e.target_id or "", e.outcome,
                               e.request_id or "", json.dumps(detail(e) if detail else e.detail,
                                                              ensure_ascii=False)])
    return book.close()


def items_xlsx_file(rows: list[tuple[Any, dict[str, Any]]]) -> tempfile.SpooledTemporaryFile[bytes]:
    """The item register: code, name, line, department, status and every attribute (already masked)."""
    import json

    keys: list[str] = []
    for _item, attrs in rows:
        keys += [k for k in attrs if k not in keys]
    book = _Book()
    sheet = book.book.add_worksheet("事项清单")
    sheet.write_row(0, 0, ["事项编码", "事项名称", "服务类别", "需求部门", "状态", *keys], book.bold)
    for r, (item, attrs) in enumerate(rows, start=1):
        values = [attrs.get(k) if not isinstance(attrs.get(k), dict | list) else json.dumps(attrs.get(k),
                                                                                           ensure_ascii=False)
                  for k in keys]
        sheet.write_row(r, 0, [item.code, item.name, item.service_line.code, item.department.code, item.status,
                               *["" if v is None else str(v) for v in values]])
    return book.close()
