"""Task forms on the web: HTML field descriptions from a form's JSON Schema, and submissions back to data."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from werkzeug.datastructures import MultiDict

import forms

# Free-text fields long enough to deserve a text area.
_LONG_TEXT = {"notes", "comment", "summary", "complexity_note", "reply"}


@dataclass
class Field:
    name: str
    title: str
    title_en: str
    widget: str  # text, textarea, number, decimal, date, url, checkbox, radio, checkboxes
    required: bool
    choices: list[tuple[str, str]] = field(default_factory=list)
    minimum: Any = None
    maximum: Any = None
    max_length: int | None = None


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type", "string")
    return set(kind) if isinstance(kind, list) else {kind}


def fields_for(form_key: str) -> list[Field]:
    """The form's fields in declaration order; an unknown form key has none (the engine will say so)."""
    try:
        schema = forms.json_schema(form_key)
    except forms.UnknownForm:
        return []
    out = []
    for name, prop in schema["properties"].items():
        types = _types(prop)
        labels = prop.get("x-labels", {})
        choices: list[tuple[str, str]] = []
        if "boolean" in types:
            widget = "checkbox"
        elif "array" in types:
            widget = "checkboxes"
            choices = [(v, labels.get(v, v)) for v in prop.get("items", {}).get("enum", [])]
        elif "enum" in prop:
            widget = "radio"
            choices = [(v, labels.get(v, v)) for v in prop["enum"]]
        elif "integer" in types:
            widget = "number"
        elif "number" in types:
            widget = "decimal"
        elif prop.get("format") == "date":
            widget = "date"
        elif prop.get("format") == "url":
            widget = "url"
        elif name in _LONG_TEXT or (prop.get("maxLength") or 0) > 300:
            widget = "textarea"
        else:
            widget = "text"
        out.append(Field(name=name, title=prop.get("title", name), title_en=prop.get("x-title-en", name),
                         widget=widget, required=name in schema["required"], choices=choices,
                         minimum=prop.get("minimum"), maximum=prop.get("maximum"),
                         max_length=prop.get("maxLength")))
    return out


def data_from(form_key: str, submitted: MultiDict[str, str]) -> dict[str, Any]:
    """Submitted form values as the data the engine validates: empty optional fields are left out,
    an unticked box is False, multi-choices are lists."""
    data: dict[str, Any] = {}
    for f in fields_for(form_key):
        if f.widget == "checkbox":
            data[f.name] = submitted.get(f.name) in ("on", "true", "1", "yes")
        elif f.widget == "checkboxes":
            data[f.name] = submitted.getlist(f.name)
        else:
            value = (submitted.get(f.name) or "").strip()
            if value:
                data[f.name] = value
    return data


def shown_data(form_key: str, data: dict[str, Any]) -> list[tuple[Field, str]]:
    """What a completed step recorded, field by field in the form's order, as text for people (Chinese source;
    templates translate). Empty fields are left out."""
    try:
        fields = fields_for(form_key)
    except forms.UnknownForm:
        return []
    out: list[tuple[Field, str]] = []
    for f in fields:
        value = data.get(f.name)
        if value is None or value == "" or value == []:
            continue
        labels = dict(f.choices)
        if isinstance(value, bool):
            text = "是" if value else "否"
        elif isinstance(value, list):
            text = "、".join(labels.get(str(v), str(v)) for v in value)
        else:
            text = labels.get(str(value), str(value))
        out.append((f, text))
    return out


def finite_decimal(text: str, default: str | None = None, thousands: bool = False) -> Decimal | None:
    """A number typed into a page form, or None if it is not a finite number; an empty field is `default` (None
    when there is none); `thousands` allows separators (1,440,000,000). Its range is the use case's to judge."""
    if thousands:
        text = text.replace(",", "").replace("，", "")
    text = text.strip() or (default or "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
