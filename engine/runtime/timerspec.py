"""Timer values (ISO 8601 dates, durations, cycles) checked with SpiffWorkflow's own parser, within sane bounds."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition

# Longer than any deadline a contract sets; SpiffWorkflow itself walks a duration month by month, so an absurd
# one ("P99999999Y") would loop for minutes before anything else could check it.
MAX_DAYS = 3653  # 10 years
MAX_CYCLES = 1000
KINDS = ("timeDate", "timeDuration", "timeCycle")


class TimerValueError(ValueError):
    """A timer value that would not parse, or would make the timer absurd (never, or thousands of times)."""


def _duration_days(text: str) -> float:
    try:
        parts = TimerEventDefinition.parse_iso_duration(text)
    except Exception as exc:  # the library raises a bare Exception('Invalid duration')
        raise TimerValueError(f"{text!r} is not an ISO 8601 duration (e.g. \"P3D\", \"PT4H\")") from exc
    return (parts.get("years", 0) * 366 + parts.get("months", 0) * 31 + parts.get("weeks", 0) * 7
            + parts.get("days", 0) + parts.get("hours", 0) / 24 + parts.get("minutes", 0) / 1440
            + parts.get("seconds", 0) / 86400)


def _check_duration(text: str) -> float:
    days = _duration_days(text)
    if days > MAX_DAYS:
        raise TimerValueError(f"duration {text!r} is longer than 10 years")
    return days


def _check_date(text: str) -> datetime:
    try:
        value = TimerEventDefinition.parse_time_or_duration(text)
    except Exception as exc:
        raise TimerValueError(f"{text!r} is not an ISO 8601 date-time (e.g. \"2026-12-31T18:00:00+08:00\")") from exc
    if not isinstance(value, datetime):
        raise TimerValueError(f"{text!r} is a duration, not a date-time; use timeDuration for durations")
    return value


def check_timer_value(kind: str, value: Any) -> None:
    """Refuse (TimerValueError) a value a timer of `kind` would be given, before SpiffWorkflow sees it."""
    if not isinstance(value, str):
        raise TimerValueError(f"a timer needs ISO 8601 text, got {type(value).__name__} {str(value)[:60]!r}")
    text = value.strip()
    if not text or len(text) > 100:
        raise TimerValueError(f"{text[:60]!r} is not an ISO 8601 timer value")
    if kind == "timeDate":
        _check_date(text)
    elif kind == "timeDuration":
        if not text.upper().startswith("P"):
            raise TimerValueError(f"{text!r} is not an ISO 8601 duration (e.g. \"P3D\")")
        _check_duration(text)
    elif kind == "timeCycle":
        _check_cycle(text)
    else:
        raise TimerValueError(f"unknown timer kind {kind!r}")


def _check_cycle(text: str) -> None:
    upper = text.upper()
    if not upper.startswith("R"):
        raise TimerValueError(f"{text!r} is not an ISO 8601 repeating interval (e.g. \"R3/PT10H\")")
    components = upper.replace("--", "/").strip("R").split("/")
    if len(components) not in (2, 3):
        raise TimerValueError(f"{text!r} is not an ISO 8601 repeating interval (e.g. \"R3/PT10H\")")
    if not components[0]:
        raise TimerValueError(f"{text!r} repeats without end; give a number of repetitions (e.g. \"R3/PT10H\")")
    if not components[0].isdigit():
        raise TimerValueError(f"{text!r}: the repetition count must be a whole number")
    if int(components[0]) > MAX_CYCLES:
        raise TimerValueError(f"{text!r} repeats more than {MAX_CYCLES} times")
    durations = [c for c in components[1:] if c.startswith("P")]
    if not durations:
        raise TimerValueError(f"{text!r} has no interval duration")
    for part in components[1:]:
        if part.startswith("P"):
            if _check_duration(part) <= 0:
                raise TimerValueError(f"{text!r} has an interval of zero length")
        else:
            _check_date(part)
    try:
        TimerEventDefinition.parse_iso_recurring_interval(text)
    except Exception as exc:
        raise TimerValueError(f"{text!r} is not an ISO 8601 repeating interval: {exc}") from exc


def timer_kind(task_spec: Any) -> str | None:
    """timeDate / timeDuration / timeCycle for a timer event's spec, else None."""
    from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
        CycleTimerEventDefinition,
        DurationTimerEventDefinition,
        TimeDateEventDefinition,
    )

    event = getattr(task_spec, "event_definition", None)
    if isinstance(event, TimeDateEventDefinition):
        return "timeDate"
    if isinstance(event, DurationTimerEventDefinition):
        return "timeDuration"
    if isinstance(event, CycleTimerEventDefinition):
        return "timeCycle"
    return None
