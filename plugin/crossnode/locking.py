"""One exclusive file lock per network and node, so parallel ADDs program the node in turn.

Runtimes call the plugin for different pods at the same time; two calls that both find a peer
route missing would otherwise race (one `replace` wins, the other's dump is stale). The lock
is an fcntl lock on a file in the plugin's run directory: the kernel drops it when the holder
exits, so a crashed call never leaves the node locked.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from plugin.crossnode.errors import Busy

DEFAULT_TIMEOUT = 30.0


@contextmanager
def exclusive(directory: str, name: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Holds <directory>/<name>.lock; Busy if it stays taken for `timeout` seconds.

    `directory` must be one only root can write (the caller checks). Name locks after
    stable things (a network and a node), never per call: the files stay, like host-local's
    lock file, so their number must stay bounded.
    """
    path = os.path.join(directory, f"{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + max(0.0, timeout)
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Polling (not a blocking flock) so a stuck holder turns into a clear error.
                if time.monotonic() >= deadline:
                    raise Busy(f"lock {path} still held after {timeout:.0f}s",
                               "another cnilab call is programming this node; retry") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
