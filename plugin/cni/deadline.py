"""How long one call may take: every wait in a command draws on one budget.

A runtime has its own timeout, but kubelet then retries into the same hole; so a call ends
on its own, with an answer, within CNILAB_CALL_TIMEOUT seconds (default 60) of work, plus up
to CLEANUP_GRACE seconds to undo what a failed ADD did (its IPAM release must still run when
the budget is spent). IPAM runs, the cross-node lock and GC's releases all take what is left.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

CALL_TIMEOUT_ENV = "CNILAB_CALL_TIMEOUT"
DEFAULT_CALL_TIMEOUT = 60.0
MAX_CALL_TIMEOUT = 600.0
CLEANUP_GRACE = 10.0


def call_timeout(env: Mapping[str, str]) -> float:
    """CNILAB_CALL_TIMEOUT from `env` (1..600 seconds), else the default."""
    try:
        value = float(env.get(CALL_TIMEOUT_ENV) or DEFAULT_CALL_TIMEOUT)
    except ValueError:
        return DEFAULT_CALL_TIMEOUT
    return min(max(value, 1.0), MAX_CALL_TIMEOUT) if value == value else DEFAULT_CALL_TIMEOUT


class Deadline:
    """A point in time.monotonic() a call's work must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @classmethod
    def for_call(cls, env: Mapping[str, str]) -> Deadline:
        return cls(call_timeout(env))

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def for_cleanup(self) -> Deadline:
        """What undoing may still use once the budget is spent."""
        cleanup = Deadline(0)
        cleanup.seconds = self.seconds
        cleanup.at = max(self.at, time.monotonic()) + CLEANUP_GRACE
        return cleanup
