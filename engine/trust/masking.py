"""Masking (脱敏) of personal data in pages and exports, for roles that do not need it (等保 level 3).

The contract settings name the fields (`masked_fields`, e.g. ["id_number", "phone", "citizen_name"]) and the
roles that see them in clear (`unmasked_roles`, default none). The kind of a field follows its name:
身份证号 keeps the first 6 and last 4 characters (110101********1234), 手机号 the first 3 and last 4
(138****5678), a name its first character (张*, 欧阳** → 欧**).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ID_HINTS = ("id_number", "id_card", "身份证")
PHONE_HINTS = ("phone", "mobile_number", "手机", "电话")


def mask_value(field: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    text = str(value)
    key = field.lower()
    if any(h in key for h in ID_HINTS):
        return text[:6] + "*" * max(0, len(text) - 10) + text[-4:] if len(text) > 10 else "*" * len(text)
    if any(h in key for h in PHONE_HINTS):
        return text[:3] + "*" * max(0, len(text) - 7) + text[-4:] if len(text) > 7 else "*" * len(text)
    return text[:1] + "*" * max(1, len(text) - 1)


def masked_fields(settings_list: Iterable[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for settings in settings_list:
        out.update(str(f) for f in (settings or {}).get("masked_fields") or [])
    return out


def needs_masking(role: str | None, settings: dict[str, Any]) -> bool:
    return role not in set((settings or {}).get("unmasked_roles") or [])


def mask(data: Any, fields: set[str]) -> Any:
    """A copy of `data` (dicts and lists, any depth) with the named fields masked."""
    if not fields:
        return data
    if isinstance(data, dict):
        return {k: mask_value(k, v) if k in fields and not isinstance(v, dict | list) else mask(v, fields)
                for k, v in data.items()}
    if isinstance(data, list):
        return [mask(v, fields) for v in data]
    return data


def for_role(data: Any, role: str | None, settings: dict[str, Any]) -> Any:
    """`data` as a user of `role` may see it under the contract's settings."""
    if not needs_masking(role, settings):
        return data
    return mask(data, masked_fields([settings]))
