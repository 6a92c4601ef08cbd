"""Budgets for running process models: per evaluation (steps, size, time), per instance state, per tick."""
from __future__ import annotations

from dataclasses import dataclass

from engine.runtime.expressions import Budget, configure_budget


@dataclass
class _Limits:
    state_bytes: int = 1024 * 1024    # serialized instance state (ITEMGATE_INSTANCE_STATE_KB)
    tick_instance_seconds: float = 5.0  # all of `tick`'s work on one instance (ITEMGATE_TICK_INSTANCE_MS)


LIMITS = _Limits()


def configure(*, expression_ms: int = 1000, expression_steps: int = 1_000_000, expression_size: int = 1_000_000,
              state_bytes: int = 1024 * 1024, tick_instance_ms: int = 5000) -> None:
    """Set every budget at once (the app factory does, from the settings)."""
    configure_budget(Budget(steps=expression_steps, size=expression_size, seconds=expression_ms / 1000))
    LIMITS.state_bytes = state_bytes
    LIMITS.tick_instance_seconds = tick_instance_ms / 1000


def state_limit() -> int:
    return LIMITS.state_bytes
