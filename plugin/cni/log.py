"""Per-call log lines: to stderr (returned in the Outcome) or appended to the config's logFile.

Collected in memory and written once at the end, so dispatch() never prints and a forked
resident child can hand the text back like any other output.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Optional


class CallLog:
    def __init__(self, command: str = "", container_id: str = "") -> None:
        self.prefix = f"cnilab[{os.getpid()}] {command} {container_id[:12]}".rstrip()
        self.lines: list[str] = []
        self.log_file: Optional[str] = None

    def _add(self, level: str, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        self.lines.append(f"{stamp} {self.prefix} {level}: {msg}")

    def info(self, msg: str) -> None:
        self._add("info", msg)

    def warn(self, msg: str) -> None:
        self._add("warn", msg)

    def error(self, msg: str) -> None:
        self._add("error", msg)

    def flush(self) -> str:
        """Writes to logFile when set (and it works); returns what belongs on stderr."""
        if not self.lines:
            return ""
        text = "\n".join(self.lines) + "\n"
        if self.log_file:
            try:
                _append(self.log_file, text.encode("utf-8", "backslashreplace"))
                return ""
            except OSError as e:
                return text + f"cnilab: cannot write logFile {self.log_file}: " \
                              f"{e.strerror or e}\n"
        return text


def _append(path: str, data: bytes) -> None:
    """Appends to a regular file (or a device like /dev/null); never blocks on a FIFO, never
    follows a symbolic link planted at the path (root appending to a file of its choosing)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
                 | os.O_NOFOLLOW, 0o640)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise OSError(0, "not a regular file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
