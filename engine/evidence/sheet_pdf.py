"""The printed form of a sign-off sheet: an A4 PDF in Chinese with the CJK font embedded, and its QR code."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.contract.catalog import ARTEFACT_KINDS
from engine.evidence.pdf import CjkFont, CjkPdf, FontMissing, find_cjk_font
from engine.evidence.sheets import PARTIES, SheetSpec
from storage.models import Artefact, SignOffSheet, WorkItem

__all__ = ["CjkFont", "FontMissing", "find_cjk_font", "render"]

CHANNEL_NAMES = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端"}
MODE_NAMES = {"new": "新增接入", "iteration": "优化迭代"}
BEIJING = ZoneInfo("Asia/Shanghai")


def _qr_image(payload: str) -> Any:
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=2)
    qr.add_data(payload)
    qr.make(fit=True)
    return qr.make_image().get_image().convert("L")


def _beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _party_name(party: str, item: WorkItem) -> str:
    contract = item.contract
    if party == "department":
        return item.department.name
    if party == "supplier":
        return contract.supplier or ""
    if party == "purchaser":
        return contract.buyer or ""
    return ""


def render(font: CjkFont, item: WorkItem, spec: SheetSpec, signers: tuple[str, ...], sheet: SignOffSheet,
           evidence: list[Artefact], payload: str, now: datetime | None = None) -> bytes:
    """The sheet as PDF bytes: header with QR code and verification code, the item's facts, the accepted evidence
    with full SHA-256, the statement and one signature block per signing party."""
    from fpdf.enums import Align, MethodReturnValue, WrapMode, XPos, YPos

    now = now or datetime.now(UTC)
    pdf = CjkPdf(font, f"{spec.title} {item.code}")
    pdf.add_page()
    width = pdf.epw
    set_font = pdf.use_style
    line = pdf.paragraph

    # Header: title, contract, and the QR code with the verification code at the top right.
    qr_size = 30
    pdf.image(_qr_image(payload), x=pdf.w - 18 - qr_size, y=12, w=qr_size, h=qr_size)
    pdf.set_xy(18, 18)
    set_font("B", 18)
    pdf.multi_cell(width - qr_size - 4, 10, spec.title, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    set_font("", 10)
    pdf.multi_cell(width - qr_size - 4, 6, item.contract.name, align=Align.C, wrapmode=WrapMode.CHAR,
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    set_font("B", 11)
    pdf.multi_cell(width - qr_size - 4, 7, f"核验码 Verification code: {sheet.code}", align=Align.C,
                   new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(max(pdf.get_y(), 12 + qr_size) + 4)

    # The item's facts, as a two-column table.
    facts = [
        ("合同", f"{item.contract.name}（{item.contract.code}）"),
        ("服务类别", f"{item.service_line.code} · {item.service_line.name}"),
        ("事项编码", item.code),
        ("事项名称", item.name),
        ("需求单位", f"{item.department.name}（{item.department.code}）"),
        ("渠道", "、".join(CHANNEL_NAMES.get(c, c) for c in item.channels)),
        ("接入方式", MODE_NAMES.get(item.mode, item.mode)),
        ("打印时间", f"{_beijing(now)}（北京时间）"),
    ]
    label_w = 28
    for label, value in facts:
        set_font("B", 10)
        top = pdf.get_y()
        set_font("", 10)
        lines = pdf.multi_cell(width - label_w, 7, value, border=1, wrapmode=WrapMode.CHAR, dry_run=True,
                               output=MethodReturnValue.LINES)
        height = 7 * max(1, len(lines) if isinstance(lines, list) else 1)
        set_font("B", 10)
        pdf.cell(label_w, height, label, border=1, align=Align.C)
        set_font("", 10)
        pdf.set_xy(18 + label_w, top)
        pdf.multi_cell(width - label_w, 7, value, border=1, wrapmode=WrapMode.CHAR,
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_y(top + height)

    # The evidence already accepted, each with its file name and full SHA-256.
    pdf.ln(4)
    line("已通过验收的交付物", 12, "B", 8)
    if not evidence:
        line("（暂无）", 10)
    for number, artefact in enumerate(evidence, start=1):
        title = ARTEFACT_KINDS.get(artefact.kind, artefact.kind)
        uploaded = _beijing(artefact.uploaded_at)
        line(f"{number}. {title}：{artefact.filename}（{artefact.size:,} 字节，上传于 {uploaded}）", 9.5, "", 5.5)
        line(f"SHA-256: {artefact.sha256}", 8.5, "", 5)

    # What the signatures confirm, then one block per party.
    pdf.ln(4)
    line("确认意见", 12, "B", 8)
    line(spec.statement, 10.5, "", 7)
    pdf.ln(6)
    block_w = width / max(1, len(signers))
    if pdf.get_y() + 48 > pdf.h - 18:
        pdf.add_page()
    top = pdf.get_y()
    for position, party in enumerate(signers):
        x = 18 + position * block_w
        rows = [
            (f"{PARTIES[party]}（盖章）", "B", 11),
            (_party_name(party, item) or " ", "", 10),
            ("负责人签字：", "", 10),
            ("", "", 10),
            ("日期：　　　　年　　月　　日", "", 10),
        ]
        pdf.set_xy(x, top)
        for text, style, size in rows:
            set_font(style, size)
            pdf.set_x(x + 2)
            pdf.multi_cell(block_w - 4, 8, text, wrapmode=WrapMode.CHAR, new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.rect(x, top - 2, block_w - 2, 46)
    pdf.set_y(top + 48)

    set_font("", 8)
    pdf.set_text_color(90, 90, 90)
    note = (f"本确认单由 ItemGate 生成。核验码 {sheet.code} 唯一对应事项 {item.code} 的{spec.title}；"
            "上传签字盖章后的扫描件时，系统识别右上角二维码；无法识别时请在“核验码”一栏填写此码。"
            "他事项或他类确认单的核验码将被拒收。")
    pdf.multi_cell(width, 4.5, note, wrapmode=WrapMode.CHAR, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return pdf.to_bytes()
