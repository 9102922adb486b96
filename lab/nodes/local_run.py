"""A node command run as a local subprocess (netns and container nodes: the node is entered
with nsenter), its output and its timeout as a CommandResult."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence

from lab.api import CommandResult


def run_local(full: Sequence[str], argv: Sequence[str], *, where: str,
              input: str | bytes | None = None, timeout: float = 60,
              env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None) -> CommandResult:
    """Runs full (argv wrapped in whatever enters the node); the result names argv."""
    proc_env = {**os.environ, **env} if env is not None else None
    data = input.encode() if isinstance(input, str) else input   # bytes pass unchanged
    try:
        done = subprocess.run(list(full), input=data, capture_output=True, timeout=timeout,
                              env=proc_env, check=False, preexec_fn=preexec_fn)
    except subprocess.TimeoutExpired as e:
        return CommandResult(tuple(argv), 124, text(e.stdout),
                             text(e.stderr) + f"\ntimed out after {timeout}s on {where}")
    return CommandResult(tuple(argv), done.returncode, text(done.stdout), text(done.stderr))


def text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
