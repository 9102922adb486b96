"""An undo stack: every step of ADD registers how to take itself back; commit() keeps them.

Used as a context manager: leaving the block without commit() (an exception, or a return
before the end) runs the registered undos newest first. An undo that fails is logged and the
rest still run, so one stuck step never leaves the others behind.
"""
from __future__ import annotations

from types import TracebackType
from typing import Callable, Optional

from plugin.cni.log import CallLog


class UndoStack:
    def __init__(self, log: CallLog) -> None:
        self._log = log
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self.committed = False

    def push(self, what: str, undo: Callable[[], object]) -> None:
        self._steps.append((what, undo))

    def commit(self) -> None:
        self.committed = True

    def __enter__(self) -> UndoStack:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self.committed:
            return
        if exc is not None:
            self._log.error(f"rolling back {len(self._steps)} step(s) after: {exc}")
        for what, undo in reversed(self._steps):
            try:
                undo()
                self._log.info(f"undone: {what}")
            except Exception as e:  # keep undoing the rest; report what stayed behind
                self._log.error(f"undo failed: {what}: {e}")
        self._steps.clear()
