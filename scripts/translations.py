"""Complete the extracted template (api/translations/messages.pot) with texts `pybabel extract` cannot see.

Some Chinese source texts reach _() as data, not literals: stage names and step guidance from the BPMN models,
artefact kind titles from the catalogue, export titles from the export registry, task titles, refusal tables.
They are added here, and so is every message the English catalog already translates, so `pybabel update` never
retires a translation of such a text.
"""
from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
POT = ROOT / "api" / "translations" / "messages.pot"
PO = ROOT / "api" / "translations" / "en" / "LC_MESSAGES" / "messages.po"


def data_texts() -> set[str]:
    import api.web.settlements as web_settlements
    import api.web.views as web_views
    from api.web import i18n
    from engine.contract.catalog import ARTEFACT_KINDS
    from engine.money.exports import EXPORTS
    from engine.money.reports import NOTE_NAMES, SETTLEMENT_STATUS_NAMES

    texts: set[str] = set()
    for table in (i18n.STAGES, i18n.ROLES, i18n.STATUSES, i18n.MODES, i18n.CHANNELS, i18n.EVENTS, i18n.DECISIONS,
                  i18n.STEP_HELP, ARTEFACT_KINDS, web_views._REFUSALS, web_settlements.SETTLEMENT_REFUSALS,
                  NOTE_NAMES, SETTLEMENT_STATUS_NAMES):
        texts |= {v for v in table.values() if isinstance(v, str)}
    texts |= {e.title for e in EXPORTS.values()}  # the export registry's titles (export pages, job pages)
    return texts


def main() -> None:
    with POT.open("rb") as f:
        template = read_po(f)
    known = set()
    if PO.exists():
        with PO.open("rb") as f:
            known = {m.id for m in read_po(f) if m.id and m.string}
    added = 0
    for text in sorted(data_texts() | known):
        if text and text not in template:
            template.add(text)
            added += 1
    with POT.open("wb") as f:
        write_po(f, template, width=0, omit_header=False)
    print(f"{POT}: {added} texts added to {len(template)}")


if __name__ == "__main__":
    main()
