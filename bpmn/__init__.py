"""The process models shipped with ItemGate, and how to find them on disk."""
from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
CATALOG_DIR = MODEL_DIR / "catalogs"


def model_path(process_id: str) -> Path:
    return MODEL_DIR / f"{process_id}.bpmn"


def read_model(process_id: str) -> str:
    return model_path(process_id).read_text(encoding="utf-8")


def shipped_process_ids() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.bpmn"))
