"""Fold English texts still given in code (`EN.update({...})`, the pre-gettext way) into the English catalog.

Run after merging code that adds to api.web.i18n.EN: `python scripts/en_dict_to_po.py`, then `make translations`.
Existing translations in the catalog win; new ones are appended."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

import api.web
from api.web import i18n

PO = Path(__file__).resolve().parents[1] / "api" / "translations" / "en" / "LC_MESSAGES" / "messages.po"


def main() -> None:
    for module in pkgutil.iter_modules(api.web.__path__):
        importlib.import_module(f"api.web.{module.name}")  # modules that still add to EN
    if PO.exists():
        with PO.open("rb") as f:
            catalog = read_po(f, locale="en")
    else:
        catalog = Catalog(locale="en", project="ItemGate", domain="messages", fuzzy=False,
                          header_comment="# English translations of ItemGate's web texts (Chinese is the source).")
    added = 0
    for zh, en in i18n.EN.items():
        if zh not in catalog or not catalog[zh].string:
            catalog.add(zh, en)
            added += 1
    catalog.fuzzy = False
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("wb") as f:
        write_po(f, catalog, width=0, sort_output=False)
    print(f"{PO}: {added} added, {len(catalog)} messages")


if __name__ == "__main__":
    main()
