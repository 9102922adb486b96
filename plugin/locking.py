"""One exclusive file lock per node, so parallel ADDs program the node's peers in turn.

Runtimes call the plugin for different pods at the same time; two calls that both find a peer
route missing would otherwise race (one `replace` wins, the other's dump is stale). The lock
is an fcntl lock on a file under /run/cnilab/: the kernel drops it when the holder exits, so a
crashed call never leaves the node locked.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from plugin.errors import TRY_AGAIN_LATER, CniError
from plugin.rundir import run_dir


@contextmanager
def exclusive(name: str, timeout: float = 30.0) -> Iterator[None]:
    """Holds <run dir>/<name>.lock; CniError(11, try again) if it stays taken for `timeout`.

    Name locks after stable things (a node name), never per call: the files stay, like
    host-local's lock file, so their number must stay bounded.
    """
    directory = run_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Polling (not a blocking flock) so a stuck holder turns into a clear error.
                if time.monotonic() >= deadline:
                    raise CniError(TRY_AGAIN_LATER, f"lock {path} still held after {timeout:.0f}s",
                                   "another cnilab call is programming this node; retry") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
