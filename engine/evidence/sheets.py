"""Sign-off sheets ItemGate prints itself: which confirmations exist and who signs them, their verification codes,
the evidence they list, and checking that an uploaded signed sheet is this item's and this kind's."""
from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.contract.catalog import ARTEFACT_KINDS, required_kinds
from engine.errors import Conflict, Invalid, NotFound
from engine.trust import audit
from engine.trust.access import may_see_artefact
from storage.models import Artefact, Contract, GatePass, HumanTask, SignOffSheet, User, WorkItem

# ---------------------------------------------------------------- which sheets, who signs

# The parties a signature block can be for, and how each is titled on the sheet.
PARTIES: dict[str, str] = {
    "department": "需求单位",      # the item's requesting department (for a one-thing: its lead department)
    "supplier": "实施方",          # the contract's supplier
    "purchaser": "采购单位",
    "third_party": "第三方支撑单位",
}


@dataclass(frozen=True)
class SheetSpec:
    kind: str
    statement: str
    signers: tuple[str, ...]
    basis: str  # where the signers come from, printed in docs/SHEETS.md

    @property
    def title(self) -> str:
        return ARTEFACT_KINDS[self.kind]


# Seed 001 names who confirms the 联调与上线确认单 ("由需求单位及实施方等共同确认") and the 上线确认单 of the
# payment and logistics lines ("由需求单位和实施方共同确认"). For line 3's plain 上线确认单, the 走查确认单 and the
# e-licence 模板校核确认 it names no signer: the requesting department and the implementer sign those too
# (docs/SHEETS.md); a contract may name others in [contract.settings.sheets.KIND] signers = [...].
SHEETS: dict[str, SheetSpec] = {s.kind: s for s in (
    SheetSpec("go_live_confirmation",
              "上述事项已完成全流程对接联调，并已在上述渠道发布上线。经需求单位与实施方共同确认，联调与上线情况属实。",
              ("department", "supplier"), "seed 001: 由需求单位及实施方等共同确认"),
    SheetSpec("plain_go_live_confirmation",
              "上述事项已在上述渠道发布上线，运行正常，特此确认。",
              ("department", "supplier"),
              "seed 001 names no signer for line 3; for payment and logistics: 由需求单位和实施方共同确认"),
    SheetSpec("walkthrough_confirmation",
              "已对上述事项上线前的服务页面与办理流程完成体验走查，走查发现的问题均已整改完毕，特此确认。",
              ("department", "supplier"), "seed 001 names no signer: the department confirms the walkthrough"),
    SheetSpec("template_check_confirmation",
              "已对上述电子证照的底版模板与参数清单完成校核，模板内容、样式与证照参数一致，特此确认。",
              ("department", "supplier"), "seed 001 names no signer: the licence's department checks the template"),
)}


def signers_for(contract: Contract, kind: str) -> tuple[str, ...]:
    """Who signs `kind` under this contract: [contract.settings.sheets.KIND] signers, else the seed's parties."""
    configured = ((contract.settings or {}).get("sheets") or {}).get(kind) or {}
    signers = configured.get("signers") if isinstance(configured, Mapping) else None
    if signers is None:
        return SHEETS[kind].signers
    if (not isinstance(signers, list) or not signers
            or any(not isinstance(s, str) or s not in PARTIES for s in signers)):
        raise Invalid(f"contract {contract.code}: settings.sheets.{kind}.signers must list parties among "
                      f"{sorted(PARTIES)}", code="bad_sheet_settings")
    return tuple(signers)


def is_sheet_kind(kind: str) -> bool:
    return kind in SHEETS


def sheet_kinds_of(item: WorkItem) -> list[str]:
    """The sheet kinds some gate of this item's line requires of it (its mode, channels, attributes applied)."""
    gates = item.service_line.gates or {}
    kinds: list[str] = []
    for gate in gates:
        for kind in required_kinds(gates, gate, mode=item.mode, channels=list(item.channels),
                                   attributes=item.attributes or {}):
            if kind in SHEETS and kind not in kinds:
                kinds.append(kind)
    return kinds


def _spec_for(item: WorkItem, kind: str) -> SheetSpec:
    if kind not in SHEETS:
        raise NotFound(f"ItemGate prints no sheet for {kind!r}", code="no_such_sheet", sheets=sorted(SHEETS))
    if kind not in sheet_kinds_of(item):
        raise NotFound(f"item {item.id}'s gates require no {ARTEFACT_KINDS[kind]} ({kind})", code="no_such_sheet",
                       sheets=sheet_kinds_of(item))
    return SHEETS[kind]


# ---------------------------------------------------------------- verification codes

# Crockford's base 32: no I, L, O, U, so a code typed from paper is not misread. 8 symbols = 40 random bits.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SYMBOL = "[0-9A-HJKMNP-TV-Z]"
CODE_PREFIX = "IGS"
# How a code stands in a text layer or a QR payload; whitespace is removed before matching (text extraction may
# put spaces between glyphs).
CODE_IN_TEXT = re.compile(rf"{CODE_PREFIX}-({_SYMBOL}{{4}})-({_SYMBOL}{{4}})")
_TYPED = str.maketrans({"O": "0", "I": "1", "L": "1", "U": "V"})


def new_code() -> str:
    symbols = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{CODE_PREFIX}-{symbols[:4]}-{symbols[4:]}"


def normalise_code(typed: str) -> str | None:
    """A code as a person typed it (any case, with or without the prefix, spaces or hyphens, O for 0) in its
    printed form, or None when it cannot be one."""
    text = re.sub(r"[\s\-_]", "", typed.upper())
    if text.startswith(CODE_PREFIX):
        text = text[len(CODE_PREFIX):]
    text = text.translate(_TYPED)
    if len(text) != 8 or any(ch not in _ALPHABET for ch in text):
        return None
    return f"{CODE_PREFIX}-{text[:4]}-{text[4:]}"


def qr_payload(sheet: SignOffSheet) -> str:
    """What the sheet's QR code holds: the code, with the item and kind it belongs to (for a reader's display)."""
    return f"itemgate-sheet:v1;code={sheet.code};item={sheet.item_id};kind={sheet.kind}"


def sheet_for(session: Session, item: WorkItem, kind: str, user: User | None) -> SignOffSheet:
    """The item's sheet of `kind`, made with a new code the first time it is asked for. The database decides:
    two servers printing the first sheet at once both end up with the one row the unique index let in."""
    query = select(SignOffSheet).where(SignOffSheet.item_id == item.id, SignOffSheet.kind == kind)
    found = session.scalars(query).first()
    if found is not None:
        return found
    for _attempt in range(5):
        sheet = SignOffSheet(item_id=item.id, kind=kind, code=new_code(), created_at=datetime.now(UTC),
                             created_by_id=user.id if user is not None else None)
        try:
            with session.begin_nested():
                session.add(sheet)
        except IntegrityError:
            found = session.scalars(query).first()
            if found is not None:
                return found  # printed by someone else just now
            continue  # the random code was taken (40 bits: practically never); draw another
        return sheet
    raise Conflict("could not draw a free verification code; try again", code="sheet_code_busy")


# ---------------------------------------------------------------- what the sheet lists

def accepted_evidence(session: Session, item: WorkItem, viewer: User, *, leave_out: str | None = None
                      ) -> list[Artefact]:
    """The evidence the item's gates have accepted: per kind (and department, for per-department steps) the latest
    version a gate pass recorded, unless the review of that submission returned it or has not decided yet.
    Only what `viewer` may see is listed (another department's evidence of a per-department step is not)."""
    passes = session.execute(select(GatePass, HumanTask).join(HumanTask, GatePass.task_id == HumanTask.id)
                             .where(GatePass.item_id == item.id).order_by(GatePass.id)).all()
    reviews = list(session.scalars(select(HumanTask).where(HumanTask.item_id == item.id,
                                                           HumanTask.review_of.is_not(None))
                                   .order_by(HumanTask.id)))
    chosen: dict[tuple[str, int | None], int] = {}
    for gate_pass, task in passes:
        review = next((r for r in reviews if r.review_of == gate_pass.gate and r.id > task.id
                       and (not r.per_department or r.department_id == task.department_id)), None)
        if review is not None and (review.status != "completed"
                                   or (review.data or {}).get("decision") != "approve"):
            continue
        chosen[(gate_pass.kind, task.department_id if task.per_department else None)] = gate_pass.artefact_id
    if not chosen:
        return []
    rows = {a.id: a for a in session.scalars(select(Artefact).where(Artefact.id.in_(chosen.values())))}
    ordered = [rows[i] for i in sorted(set(chosen.values())) if i in rows]
    return [a for a in ordered if a.kind != leave_out and may_see_artefact(viewer, a)]


@dataclass(frozen=True)
class PrintedSheet:
    sheet: SignOffSheet
    pdf: bytes
    filename: str


def print_sheet(session: Session, actor: audit.Actor, user: User, item: WorkItem, kind: str,
                render: Any) -> PrintedSheet:
    """Make the item's sheet of `kind` as a PDF (`render(item, spec, signers, sheet, evidence, payload) -> bytes`,
    engine.evidence.sheet_pdf.render bound to a font) and record that it was printed, with the evidence it lists."""
    spec = _spec_for(item, kind)
    signers = signers_for(item.contract, kind)
    evidence = accepted_evidence(session, item, user, leave_out=kind)
    sheet = sheet_for(session, item, kind, user)
    pdf = render(item, spec, signers, sheet, evidence, qr_payload(sheet))
    audit.record(session, actor, "sheet.printed", target_type="item", target_id=item.id, kind=kind,
                 code=sheet.code, sha256=hashlib.sha256(pdf).hexdigest(),
                 evidence=[{"artefact_id": a.id, "kind": a.kind, "sha256": a.sha256} for a in evidence])
    return PrintedSheet(sheet, pdf, f"{item.code}-{spec.title}.pdf")


# ---------------------------------------------------------------- checking an uploaded sheet

MAX_PAGES_READ = 4
MAX_TEXT_CHARS = 200_000


def codes_in_pdf(stream: BinaryIO) -> list[str]:
    """The verification codes a PDF's text layer carries (first pages only), in order, without repeats; [] for a
    scan without a text layer, or a file pypdf cannot read. The stream's position is left where it was."""
    from pypdf import PdfReader

    start = stream.tell()
    text = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(stream)
            for page in reader.pages[:MAX_PAGES_READ]:
                text += page.extract_text() or ""
                if len(text) > MAX_TEXT_CHARS:
                    break
    except Exception:  # noqa: BLE001 - any unreadable PDF is one whose text says nothing
        text = text or ""
    finally:
        stream.seek(start)
    return list(dict.fromkeys(_codes_in(text[:MAX_TEXT_CHARS])))


def check_signed_sheet(session: Session, item: WorkItem, kind: str, typed: str | None,
                       read: list[str]) -> SignOffSheet | None:
    """Refuse an upload of a sheet kind unless it is provably this item's sheet of this kind: the code the uploader
    typed (`typed`, multipart field `verification_code`) and every code read from the file (`read`: its text layer
    or its QR code, codes_in_upload) must all be the code ItemGate printed on this item's sheet of `kind`, and there
    must be at least one.

    - no code typed and none readable → 422 `verification_code_required`;
    - a typed value that cannot be a code → 422 `invalid_verification_code`;
    - a code of another item, of another kind, or that ItemGate never printed → 422 `wrong_sheet`.
    Other kinds are not checked (None)."""
    if kind not in SHEETS:
        return None
    codes: list[str] = []
    if typed is not None and typed.strip():
        code = normalise_code(typed)
        if code is None:
            raise Invalid(f"{typed.strip()[:40]!r} is not a verification code (printed on the sheet as "
                          f"{CODE_PREFIX}-XXXX-XXXX)", code="invalid_verification_code")
        codes.append(code)
    codes += [c for c in read if c not in codes]
    title = ARTEFACT_KINDS[kind]
    if not codes:
        raise Invalid(f"a signed {title} must show the verification code ItemGate printed on it: give it as "
                      "verification_code (no code could be read from the file or its QR code)",
                      code="verification_code_required", kind=kind)
    sheets = {s.code: s for s in session.scalars(select(SignOffSheet).where(SignOffSheet.code.in_(codes)))}
    for code in codes:
        sheet = sheets.get(code)
        if sheet is not None and sheet.item_id == item.id and sheet.kind == kind:
            continue
        if sheet is None:
            reason, why = "unknown_code", f"{code} is not a code ItemGate printed"
        elif sheet.item_id != item.id:
            reason, why = "other_item", f"{code} is printed on another item's sheet"
        else:
            reason, why = "other_kind", f"{code} is printed on this item's {ARTEFACT_KINDS.get(sheet.kind, sheet.kind)}"
        raise Invalid(f"this is not item {item.code}'s {title}: {why}; nothing was stored", code="wrong_sheet",
                      kind=kind, verification_code=code, reason=reason)
    return sheets[codes[0]]


# A scan is decoded at most this long a side (a 300 dpi A4 page is 2480 × 3508; the sheet's 30 mm QR code keeps
# about 8 pixels a module at this size), and not at all above this many pixels.
SCAN_SIDE = 2400
MAX_SCAN_PIXELS = 40_000_000
MAX_PAGES_SCANNED = 2
MAX_IMAGES_SCANNED = 8


def _codes_in(text: str) -> list[str]:
    return [f"{CODE_PREFIX}-{a}-{b}" for a, b in CODE_IN_TEXT.findall(_compact(text).upper())]


def _codes_in_qr(image: Any) -> list[str]:
    """Codes in the QR codes of an image (PIL), decoded at a bounded size."""
    import zxingcpp

    if image.width * image.height > MAX_SCAN_PIXELS:
        return []
    image.draft("L", (SCAN_SIDE, SCAN_SIDE))  # a JPEG is decoded at a reduced scale right away
    image = image.convert("L")
    image.thumbnail((SCAN_SIDE, SCAN_SIDE))
    found: list[str] = []
    for result in zxingcpp.read_barcodes(image, formats=zxingcpp.barcode_formats_from_str("QRCode")):
        found += _codes_in(result.text)
    return found


def codes_in_scan(stream: BinaryIO, media_type: str) -> list[str]:
    """Codes in the QR codes of a scanned sheet: a PNG or JPEG, or the images of a PDF's first pages (a scanner's
    PDF has no text). [] when there is none or the file cannot be read. The stream's position is kept."""
    from PIL import Image

    start = stream.tell()
    found: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: bounded by MAX_SCAN_PIXELS
            if media_type == "application/pdf":
                from pypdf import PdfReader

                scanned = 0
                for page in PdfReader(stream).pages[:MAX_PAGES_SCANNED]:
                    xobjects = (page.get("/Resources") or {}).get("/XObject") or {}
                    for name, ref in xobjects.items():
                        obj = ref.get_object()
                        if (obj.get("/Subtype") == "/Image" and scanned < MAX_IMAGES_SCANNED
                                and int(obj.get("/Width", 0)) * int(obj.get("/Height", 0)) <= MAX_SCAN_PIXELS):
                            scanned += 1
                            found += _codes_in_qr(page.images[name].image)
            else:
                with Image.open(stream) as image:
                    found = _codes_in_qr(image)
    except Exception:  # noqa: BLE001 - a file that cannot be decoded is one without a readable code
        logging.getLogger("itemgate.sheets").debug("no QR code read from an uploaded scan", exc_info=True)
    finally:
        stream.seek(start)
    return list(dict.fromkeys(found))


def codes_in_upload(stream: BinaryIO, media_type: str) -> list[str]:
    """Codes readable from an uploaded sheet: a PDF's text layer; failing that, the QR code of a scan (an image, or
    a PDF of images). Other types carry none."""
    media_type = media_type.split(";")[0]
    if media_type == "application/pdf":
        return codes_in_pdf(stream) or codes_in_scan(stream, media_type)
    if media_type in ("image/png", "image/jpeg"):
        return codes_in_scan(stream, media_type)
    return []


def pdf_text(data: bytes) -> str:
    """All text of a PDF with whitespace removed (for tests and checks: pypdf spaces CJK glyphs apart)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return _compact("".join(page.extract_text() or "" for page in reader.pages))


def _compact(text: str) -> str:
    # pypdf reads the 2-byte codes of fpdf2's embedded CMap encoding as NUL + character and spaces CJK glyphs apart;
    # viewers (PDFium, pdf.js) read it right. Codes and hashes never contain spaces, so both are dropped.
    return "".join(text.replace("\x00", "").split())
