"""Sign-off sheets ItemGate prints (issue 16 point 5): the PDF's content, font and QR code, who may print it, and
uploads of signed sheets refused unless they carry this item's code for the kind; SQLite and PostgreSQL, real S3."""
from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image
from pypdf import PdfReader
from sqlalchemy import func, select

from api.extensions import db
from engine.evidence.sheets import normalise_code, pdf_text
from storage.models import Artefact, AuditEvent, SignOffSheet
from tests.test_web import Browser

GO_LIVE = "go_live_confirmation"


def sheet_url(item_id: int, kind: str = GO_LIVE) -> str:
    return f"/api/v1/items/{item_id}/sheets/{kind}.pdf"


def print_sheet(world, username: str, item_id: int, kind: str = GO_LIVE) -> tuple[bytes, str]:
    r = world.get(username, sheet_url(item_id, kind))
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/pdf" and r.data.startswith(b"%PDF-")
    assert "filename*=UTF-8''" in r.headers["Content-Disposition"]
    return r.data, r.headers["X-Verification-Code"]


def scan_png() -> bytes:
    """A stand-in for a scanned, signed sheet: an image, with no text to read a code from."""
    out = io.BytesIO()
    Image.new("L", (64, 64), 255).save(out, format="PNG")
    return out.getvalue()


def upload(world, item_id: int, body: bytes, filename: str, code: str | None = None, kind: str = GO_LIVE):
    data: dict = {"kind": kind, "file": (io.BytesIO(body), filename)}
    if code is not None:
        data["verification_code"] = code
    return world.multipart("impl", f"/api/v1/items/{item_id}/artefacts", data)


def stored(store, item_id: int, kind: str = GO_LIVE) -> tuple[int, set]:
    rows = db.session.execute(select(func.count(Artefact.id)).where(Artefact.item_id == item_id,
                                                                    Artefact.kind == kind)).scalar()
    prefix = f"contracts/SH-YWTB-2025/items/{item_id}/{kind}/"
    return rows, {(o.key, o.version_id) for o in store.iter_objects(prefix)}


@pytest.mark.usefixtures("cache_mode")
def test_printed_sheet_carries_item_accepted_evidence_signers_code_and_qr(world):
    item_id = world.new_item("SH-SHEET-1", mode="new", channels=["pc", "mobile"],
                             attributes={"data_quality": True})["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.5", "complexity_note": "跨系统"})
    # The first sorting list is returned by the department: it was never accepted, so the sheet must not list it.
    returned = world.upload("impl", item_id, "sorting_list", b"%PDF-1.4\n% first sorting list\n", "梳理清单v1.pdf")
    assert returned.status_code == 201
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 3})
    review = world.task_named(item_id, "confirm_survey")
    assert world.complete("rev_a", review["id"], {"decision": "return", "comment": "缺少材料字段"}).status_code == 200
    assert world.upload("impl", item_id, "sorting_list", b"%PDF-1.4\n% second\n", "梳理清单v2.pdf").status_code == 201
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 4})
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    world.complete_task_as("impl", item_id, "walkthrough")
    world.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2026-11-20"})

    # The department's reviewer prints the sheet at the co-signing step.
    pdf, code = print_sheet(world, "rev_a", item_id)
    assert normalise_code(code) == code
    text = pdf_text(pdf)
    for expected in ("联调与上线确认单", "SH-SHEET-1", "事项SH-SHEET-1", "上海市一网通办", "DA", "PC端、移动端",
                     "新增接入", "需求单位（盖章）", "实施方（盖章）", "示例信息技术有限公司", code):
        assert expected in text, expected
    artefacts = {a["id"]: a for a in world.get("pm", f"/api/v1/items/{item_id}").get_json()["artefacts"]}
    listed = [a for a in artefacts.values() if a["id"] != returned.get_json()["id"]]
    assert len(listed) >= 8
    for a in listed:  # every accepted version, with its file name and its SHA-256 printed in full
        assert a["sha256"] in text and a["filename"] in text, a
    assert returned.get_json()["sha256"] not in text

    # The Chinese font is embedded (a CFF subset of Debian's Noto CJK), not left to the reader's machine.
    fonts = [f.get_object() for f in PdfReader(io.BytesIO(pdf)).pages[0]["/Resources"]["/Font"].values()]
    descendant = fonts[0]["/DescendantFonts"][0].get_object()
    assert "NotoSansCJK" in str(fonts[0]["/BaseFont"])
    assert "/FontFile3" in descendant["/FontDescriptor"].get_object()

    # The QR code decodes to the code with the item and kind it belongs to.
    import zxingcpp

    images = PdfReader(io.BytesIO(pdf)).pages[0].images
    decoded = [r.text for image in images for r in zxingcpp.read_barcodes(image.image)]
    assert decoded == [f"itemgate-sheet:v1;code={code};item={item_id};kind={GO_LIVE}"]

    # Printing again gives the same code (the database holds it), and each printing is audited with what it listed.
    again, same = print_sheet(world, "impl", item_id)
    assert same == code
    events = list(db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "sheet.printed")
                                     .order_by(AuditEvent.id)))
    assert [e.username for e in events] == ["rev_a", "impl"]
    assert events[0].detail["code"] == code and events[0].target_id == str(item_id)
    assert {e["sha256"] for e in events[0].detail["evidence"]} == {a["sha256"] for a in listed}
    assert db.session.execute(select(func.count(SignOffSheet.id)).where(SignOffSheet.kind == GO_LIVE)).scalar() == 1

    # The signed sheet (here: the printed PDF itself, its text carrying the code) passes the co-signing gate.
    r = upload(world, item_id, pdf, "联调与上线确认单-签字.pdf")
    assert r.status_code == 201, r.get_json()
    uploaded = db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "artefact.uploaded")
                                  .order_by(AuditEvent.id.desc())).first()
    assert uploaded.detail["sheet_code"] == code
    world.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    world.complete_task_as("impl", item_id, "cosign_implementer", {"confirm": True})
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "completed"


def test_wrong_sheet_is_refused_and_nothing_is_stored(world, store):
    a = world.new_item("SH-GA-A", department="DA")["id"]
    b = world.new_item("SH-RS-B", department="DB")["id"]
    a_pdf, a_code = print_sheet(world, "impl", a)
    b_pdf, b_code = print_sheet(world, "impl", b)
    a_walk_pdf, a_walk_code = print_sheet(world, "impl", a, "walkthrough_confirmation")
    assert len({a_code, b_code, a_walk_code}) == 3
    before = stored(store, a)
    assert before[0] == 0

    def refused(r, code: str, reason: str | None = None) -> None:
        assert r.status_code == 422, r.get_json()
        body = r.get_json()
        assert r.mimetype == "application/problem+json" and body["code"] == code, body
        if reason:
            assert body["reason"] == reason
        assert stored(store, a) == before  # no row, no object

    # 人社局's sheet (read from its text) on 公安局's item; this item's walkthrough sheet as its go-live sheet.
    refused(upload(world, a, b_pdf, "scan.pdf"), "wrong_sheet", "other_item")
    refused(upload(world, a, a_walk_pdf, "scan.pdf"), "wrong_sheet", "other_kind")
    # A scan without a readable QR code (here: a blank page) has no code to read: it must be typed; another item's,
    # or one never printed, is refused.
    refused(upload(world, a, scan_png(), "scan.png"), "verification_code_required")
    refused(upload(world, a, scan_png(), "scan.png", b_code), "wrong_sheet", "other_item")
    refused(upload(world, a, scan_png(), "scan.png", "IGS-0000-0000"), "wrong_sheet", "unknown_code")
    refused(upload(world, a, scan_png(), "scan.png", "12345"), "invalid_verification_code")
    # The typed code and the code in the file must agree.
    refused(upload(world, a, a_pdf, "scan.pdf", b_code), "wrong_sheet", "other_item")
    refused(upload(world, a, b_pdf, "scan.pdf", a_code), "wrong_sheet", "other_item")

    # The right sheet: a scan with its code typed as people type (lower case, no dashes, O for 0) …
    typed = a_code.lower().replace("-", " ").replace("0", "o")
    r = upload(world, a, scan_png(), "签字扫描件.png", typed)
    assert r.status_code == 201, r.get_json()
    # … or the PDF whose text carries it; and kinds that are not sheets need no code.
    assert upload(world, a, a_pdf, "签字.pdf").status_code == 201
    assert upload(world, a, scan_png(), "需求函.png", kind="requirement_letter").status_code == 201
    assert stored(store, a)[0] == 2


def scan_of(pdf: bytes, as_pdf: bool = False) -> bytes:
    """A stand-in for scanning the signed paper sheet: its QR code, enlarged as a 300 dpi scan shows it, on an A4
    page of pixels, as a JPEG (or a scanner's image-only PDF)."""
    qr = PdfReader(io.BytesIO(pdf)).pages[0].images[0].image.convert("L")
    page = Image.new("L", (2480, 3508), 255)
    page.paste(qr.resize((354, 354)), (1950, 140))
    out = io.BytesIO()
    page.save(out, format="PDF" if as_pdf else "JPEG", quality=80)
    return out.getvalue()


def test_scanned_sheet_is_read_from_its_qr_code(world, store):
    a = world.new_item("SH-QR-A", department="DA")["id"]
    b = world.new_item("SH-QR-B", department="DB")["id"]
    a_pdf, a_code = print_sheet(world, "impl", a)
    b_pdf, _ = print_sheet(world, "impl", b)
    walk_pdf, _ = print_sheet(world, "impl", a, "walkthrough_confirmation")
    before = stored(store, a)

    # 人社局's scanned sheet on 公安局's item; this item's walkthrough sheet as its go-live sheet: refused.
    for body, name, reason in ((scan_of(b_pdf), "scan.jpg", "other_item"),
                               (scan_of(walk_pdf, as_pdf=True), "scan.pdf", "other_kind")):
        r = upload(world, a, body, name)
        assert r.status_code == 422 and r.get_json()["code"] == "wrong_sheet", r.get_json()
        assert r.get_json()["reason"] == reason
        assert stored(store, a) == before
    # A typed code must agree with the QR code on the scan.
    r = upload(world, a, scan_of(a_pdf), "scan.jpg", print_sheet(world, "impl", b)[1])
    assert r.status_code == 422 and r.get_json()["code"] == "wrong_sheet"

    # The right scan needs no typed code: as a JPEG, or as a scanner's PDF of images.
    assert upload(world, a, scan_of(a_pdf), "签字扫描件.jpg").status_code == 201
    assert upload(world, a, scan_of(a_pdf, as_pdf=True), "签字扫描件.pdf").status_code == 201
    codes = [e.detail.get("sheet_code") for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "artefact.uploaded"))]
    assert codes == [a_code, a_code]


def test_who_may_print_which_sheet(world, app):
    item_id = world.new_item("SH-SCOPE", department="DA")["id"]
    iteration = world.new_item("SH-ITER", mode="iteration", department="DA")["id"]
    for user in ("impl", "rev_a", "pm", "auditor", "buyer", "admin"):
        assert world.get(user, sheet_url(item_id)).status_code == 200, user
    # Another department's reviewer: the item does not exist for them.
    assert world.get("rev_b", sheet_url(item_id)).status_code == 404
    # Not a sheet kind; a sheet the item's gates do not require (iterations skip the walkthrough in this catalogue).
    r = world.get("impl", sheet_url(item_id, "requirement_letter"))
    assert r.status_code == 404 and r.get_json()["code"] == "no_such_sheet"
    r = world.get("impl", sheet_url(iteration, "walkthrough_confirmation"))
    assert r.status_code == 404 and r.get_json()["code"] == "no_such_sheet"
    assert world.get("impl", sheet_url(item_id, "walkthrough_confirmation")).status_code == 200
    assert world.client.get(sheet_url(item_id)).status_code == 401

    # Without a Chinese font the sheet is not printed, and nothing is recorded.
    sheets = db.session.execute(select(func.count(SignOffSheet.id))).scalar()
    settings = app.config["ITEMGATE"]
    app.config["ITEMGATE"] = dataclasses.replace(settings, cjk_font="/nonexistent/font.ttc")
    try:
        r = world.get("impl", sheet_url(iteration, GO_LIVE))
    finally:
        app.config["ITEMGATE"] = settings
    assert r.status_code == 503 and r.get_json()["code"] == "cjk_font_missing"
    assert db.session.execute(select(func.count(SignOffSheet.id))).scalar() == sheets


def test_task_page_offers_the_sheet_and_takes_the_code(world, app, store):
    item_id = world.new_item("SH-WEB-SHEET", department="DA")["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "一般"})
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 1})
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    walkthrough = world.task_named(item_id, "walkthrough")

    browser = Browser(app, "impl")
    page = browser.get(f"/tasks/{walkthrough['id']}").get_data(as_text=True)
    link = f"/items/{item_id}/sheets/walkthrough_confirmation.pdf"
    assert f'href="{link}"' in page and 'name="verification_code"' in page
    assert "打印确认单" in page
    # Steps whose gate needs no sheet show no button.
    tests_task = [t for t in world.get("pm", f"/api/v1/items/{item_id}").get_json()["tasks"]
                  if t["name"] == "tests"][0]
    assert "打印确认单" not in browser.get(f"/tasks/{tests_task['id']}").get_data(as_text=True)

    r = browser.get(link)
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    code = r.headers["X-Verification-Code"]
    assert "SH-WEB-SHEET" in pdf_text(r.data)

    # The web upload (its form read by the CSRF check first) refuses a scan without the code, takes it with it.
    def web_upload(code: str | None):
        data = {"kind": "walkthrough_confirmation", "task_id": str(walkthrough["id"]),
                "file": (io.BytesIO(scan_png()), "走查签字.png")}
        if code is not None:
            data["verification_code"] = code
        browser._fresh_g()
        return browser.client.post(f"/items/{item_id}/artefacts", data=data, content_type="multipart/form-data",
                                   headers={"Accept": "application/json", "X-CSRFToken": browser.token})

    r = web_upload(None)
    assert r.status_code == 422 and r.get_json()["code"] == "verification_code_required"
    assert stored(store, item_id, "walkthrough_confirmation")[0] == 0
    r = web_upload(code)
    assert r.status_code == 201, r.get_json()
    world.complete_task_as("impl", item_id, "walkthrough")


def test_demo_uploads_its_signed_sheets_with_their_codes(app, store):
    from api.demo import load_demo

    load_demo(app, store, echo=lambda _line: None)
    signed = list(db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "artefact.uploaded")))
    codes = {e.detail["sheet_code"] for e in signed if "sheet_code" in e.detail}
    sheets = {s.code: s for s in db.session.scalars(select(SignOffSheet))}
    # The demo's completed items went through the walkthrough and the co-signing with sheets that verified.
    assert codes and codes == set(sheets)
    assert {s.kind for s in sheets.values()} >= {"go_live_confirmation", "walkthrough_confirmation"}


def test_first_printings_at_the_same_instant_share_one_code(world, app, backend):
    """Two servers printing an item's first sheet at once: the unique index lets one row in, both answer its code."""
    import threading

    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers, so there is no real race to test")
    headers = [world.headers("impl"), world.headers("pm")]
    for round_ in range(3):
        item_id = world.new_item(f"SH-RACE-{round_}")["id"]
        db.session.remove()
        barrier = threading.Barrier(2)
        answers: list = [None, None]

        def worker(index: int, item_id: int = item_id, barrier: threading.Barrier = barrier) -> None:
            client = app.test_client()
            barrier.wait(timeout=30)
            r = client.get(sheet_url(item_id), headers=headers[index])
            answers[index] = (r.status_code, r.headers.get("X-Verification-Code"))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert answers[0] == answers[1] and answers[0][0] == 200, answers
        rows = db.session.execute(select(SignOffSheet.code).where(SignOffSheet.item_id == item_id)).scalars().all()
        assert rows == [answers[0][1]]
