"""Progress for `lab` commands: a spinner on a terminal, plain `• step` / `✓` / `✗` lines
otherwise (CI logs, pipes), so both read well."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console


class Progress:
    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        tty = self.stream.isatty() if interactive is None else interactive
        self.console = Console(file=self.stream, force_terminal=tty if tty else None,
                               highlight=False, soft_wrap=True)
        self.interactive = tty

    def _line(self, mark: str, text: str) -> None:
        if self.interactive:
            self.console.print(f"{mark} {text}", markup=False)
        else:
            self.stream.write(f"{mark} {text}\n")
            self.stream.flush()

    def info(self, text: str) -> None:
        """A line inside a step (the report callable actions get)."""
        self._line(" ", text)

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        start, ok = time.monotonic(), False
        try:
            if self.interactive:
                with self.console.status(text, spinner="dots"):
                    yield
            else:
                self._line("•", text)
                yield
            ok = True
        finally:
            # after the spinner is gone, so the mark replaces it on the same line
            self._done(ok, text, start)

    def _done(self, ok: bool, text: str, start: float) -> None:
        took = f" ({time.monotonic() - start:.1f}s)"
        if self.interactive:
            self.console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + text + took)
        else:
            self._line("✓" if ok else "✗", text + took)


class Silent(Progress):
    """For library callers (the pytest plugin, bench): no output at all."""

    def __init__(self) -> None:
        self.interactive = False

    def _line(self, mark: str, text: str) -> None:
        pass

    def _done(self, ok: bool, text: str, start: float) -> None:
        pass
