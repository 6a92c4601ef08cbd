"""Text no field can store: NUL characters (PostgreSQL text refuses them) and unpaired UTF-16 surrogates
(no UTF-8 encoding exists for them); one rule for every way text comes in."""
from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
WHY = "contains a NUL character or an unpaired surrogate, which no text field can hold"


def unstorable(text: str) -> bool:
    """Whether `text` holds a character that no column (and no UTF-8 encoder) takes."""
    return _UNSTORABLE.search(text) is not None


def first_unstorable(value: Any, path: str = "") -> str | None:
    """The path ("a.b.0", "" for the value itself) of the first string in a JSON value, key or item, that
    holds unstorable text; None when there is none. Iterative, so a deep document cannot exhaust the stack."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if unstorable(node):
                return where
        elif isinstance(node, dict):
            if any(isinstance(key, str) and unstorable(key) for key in node):
                return where
            # Pushed last to first, so the document is searched in its own order.
            stack.extend((child, f"{where}.{key}" if where else str(key)) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((node[i], f"{where}.{i}" if where else str(i)) for i in reversed(range(len(node))))
    return None
