"""The switch for this process's caches that hold parsed models and the working-day calendar (cold mode).

The caches are for speed only: what happens next is decided by the rows and objects, never by what a process
parsed or built before. Cold mode (`ITEMGATE_MODEL_CACHE=off`) turns them off, so every use parses the model
and builds the calendar afresh, as a new worker or a second host would; the lifecycle tests run in both modes.
"""
from __future__ import annotations

_enabled = True


def enabled() -> bool:
    """Whether parsed models and the calendar may be kept between uses in this process."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Set by the app factory from the settings (and by tests that run a lifecycle warm and cold)."""
    global _enabled
    _enabled = bool(on)
