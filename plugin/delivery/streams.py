"""Reading and writing a pipe someone else holds, with a deadline: a runtime that never
closes the plugin's stdin, or stops reading its stdout, cannot hold a call (or a worker)."""
from __future__ import annotations

import os
import select
import stat
import time

CHUNK = 4096  # at most PIPE_BUF after POLLOUT: a blocking write of it cannot block


def read_bounded(fd: int, limit: int, deadline: float) -> bytes:
    """Reads `fd` to its end, at most `limit` + 1 bytes (so the caller can tell "too big").

    TimeoutError when no end comes by `deadline` (time.monotonic()). Does not change the
    descriptor's flags: it may be shared with the runtime.
    """
    regular = stat.S_ISREG(os.fstat(fd).st_mode)
    chunks: list[bytes] = []
    size = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while size <= limit:
        if not regular:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise TimeoutError("stdin did not end in time")
        chunk = os.read(fd, min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def write_within(fd: int, data: bytes, deadline: float) -> None:
    """Writes all of `data` to `fd` by `deadline`; TimeoutError otherwise, OSError (EPIPE)
    when the reader went away."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the reader stopped reading")
        events = poller.poll(remaining * 1000)
        if not events:
            continue
        if events[0][1] & (select.POLLERR | select.POLLHUP) and \
                not events[0][1] & select.POLLOUT:
            raise BrokenPipeError("the reader went away")
        view = view[os.write(fd, view[:CHUNK]):]
