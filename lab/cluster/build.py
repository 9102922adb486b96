"""`[plugin] build`: the plugin's own build, run on the harness before `lab up` and `lab deploy`
look at plugin.path, so the file shipped is always built from the source as it is now (a Go
plugin: `go build`, a second or two when nothing changed)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab.api import LabError
from lab.config import LabConfig

GRACE = 3.0   # seconds a timed-out build gets after SIGTERM, before SIGKILL


def build_folder(config: LabConfig) -> Path:
    """Where the command runs: the config's folder, so its relative paths read like
    plugin.path's and node_setup's."""
    return config.source.parent if config.source else Path.cwd()


def build_plugin(config: LabConfig, report: Callable[[str], None] | None = None) -> float | None:
    """Runs plugin.build in the config's folder within plugin.build_timeout; returns the
    seconds it took (None: no build set). A failure or a timeout is one LabError with the
    command's output; a timed-out build's whole process group is stopped."""
    command = config.plugin.build
    if command is None:
        return None
    folder = build_folder(config)
    timeout = config.plugin.build_timeout
    started = time.monotonic()
    try:
        # its own session: a timeout or Ctrl-C stops the compilers it started, too
        proc = subprocess.Popen(["sh", "-c", command], cwd=folder, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        raise LabError(f"plugin.build: cannot run it in {folder}: {e.strerror}",
                       hint="check that the config's folder exists and /bin/sh runs") from None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = _stop(proc)
        raise LabError(f"plugin.build did not finish within {timeout:g} s: {command}",
                       where=str(folder), output=output.decode(errors="replace"),
                       hint="run the command by hand in that folder to see where it waits "
                            "(a cold Go build fetches modules first); raise "
                            "plugin.build_timeout if it is just slow") from None
    except BaseException:    # Ctrl-C: no build left running behind the user's back
        _stop(proc)
        raise
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise LabError(f"plugin.build failed (rc={proc.returncode}) after {took:.1f} s: "
                       f"{command}", where=str(folder), output=output.decode(errors="replace"),
                       hint="fix what the output says (run the command in that folder to try "
                            "again quickly), then `lab up` or `lab deploy` again")
    if report:
        report(f"built in {took:.1f}s: {command}")
    return took


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM to the build's process group, SIGKILL after GRACE; what it printed so far."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            output, _ = proc.communicate(timeout=GRACE)
            return output or b""
        except subprocess.TimeoutExpired:
            continue
    try:   # a process that left the group may still hold the pipe: do not wait on it
        output, _ = proc.communicate(timeout=GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        return b""
    return output or b""
