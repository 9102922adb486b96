"""Calls the shell prologue of dist/cnilab hands to the resident helper: no Python per call.

Starting a Python process costs ~12 ms before it runs a line, about the whole ADD of the
reference ptp plugin. So when this build's helper is up, the file's `#!/bin/sh` prologue
(plugin/prologue.py) starts no Python at all; with shell builtins only, it

  1. claims a reply slot n: creates `<dir>/<n>.lock` holding its pid (noclobber: O_EXCL);
  2. writes the record "<n> <pid>", padded to RECORD_SIZE bytes, to the FIFO `<dir>/q`
     (one write under PIPE_BUF is atomic, so workers reading RECORD_SIZE never split one);
  3. opens the FIFO `<dir>/<n>` for reading: that blocks until a worker opens it to write;
  4. reads one line and exits with it: an exit code (the output is already on its stdout
     and stderr), or F / R: run in-process after all (R: the config it sent comes back on
     the FIFO as its stdin).

The worker takes the rest from /proc/<pid>: the environment, the config (the caller's stdin,
copied to fd 3), where output goes (fd 1, fd 2) and the namespaces to enter (ns/net,
ns/uts). The caller waits in step 4 for the whole call, so its pid cannot be reused
meanwhile; if the worker dies, its end of the FIFO closes and the caller reads EOF (error 11,
try again). Right after the handshake the worker puts a fresh FIFO at `<dir>/<n>`, so the
next holder of slot n never shares a pipe (or a stale reply) with this one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import Mapping
from typing import Callable, Optional

from plugin.fastpath import wanted

SLOTS = 64
RECORD_SIZE = 32  # printf '%-31s\n': slot, space, pid, padding, newline
# The caller's stdin, copied there before its request: while it waits for the reply, its
# shell's `read <&4` has the slot FIFO at fd 0.
CALLER_STDIN_FD = 3
LIVENESS_FD = 200  # the shell checks /proc/<helper pid>/fd/200 is <dir>/q: pid not reused
HANDSHAKE_TIMEOUT = 5.0  # the caller opens its slot microseconds after its record
STALE_LOCK_AGE = 2.0  # a lock whose process is gone this long is free again
RESCUE_PATIENCE = 0.5  # a stranded caller is already waiting, or microseconds from it
RUN_HERE = b"F\n"  # nothing consumed: the caller runs the call itself
RUN_HERE_WITH_STDIN = b"R\n"  # the caller's stdin is consumed: it follows on the FIFO

Runner = Callable[[Mapping[str, str], bytes], "tuple[int, str, str]"]
Enter = Callable[[list[int]], None]


def directory_for(base: str) -> str:
    """`<run dir>/resident-<build>.d`, from the helper's `<run dir>/resident-<build>`."""
    return base + ".d"


def request_fifo(directory: str) -> str:
    return os.path.join(directory, "q")


def slot_fifo(directory: str, slot: int) -> str:
    return os.path.join(directory, str(slot))


def slot_lock(directory: str, slot: int) -> str:
    return os.path.join(directory, f"{slot}.lock")


# -- the helper's parent: set up, sweep, and answer what is left when it stops ----------------

def open_requests(directory: str) -> tuple[int, int]:
    """Makes the directory, the request FIFO and one FIFO per slot; returns (reader, writer).

    The reader is non-blocking (workers race for records) and also sits at LIVENESS_FD. The
    writer is never written: it only keeps the reader from seeing end-of-file (and select()
    from spinning) while no caller has the FIFO open.
    """
    # A dead helper's: we hold the build's lock, so it is not live.
    rescue_stranded_callers(directory)
    remove(directory)
    os.mkdir(directory, 0o700)
    os.mkfifo(request_fifo(directory), 0o600)
    for slot in range(SLOTS):
        os.mkfifo(slot_fifo(directory, slot), 0o600)
    reader = os.open(request_fifo(directory), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    writer = os.open(request_fifo(directory), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.dup2(reader, LIVENESS_FD, inheritable=False)
    return reader, writer


def close_requests(directory: str, reader: int, writer: int) -> None:
    """No new calls: new callers find no request FIFO and run in-process."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(request_fifo(directory))
    for fd in (LIVENESS_FD, reader, writer):
        with contextlib.suppress(OSError):
            os.close(fd)


def sweep(directory: str, now: Optional[float] = None) -> list[int]:
    """Frees slots whose caller died before its worker released them; returns them."""
    now = time.time() if now is None else now
    freed = []
    for slot in range(SLOTS):
        lock = slot_lock(directory, slot)
        try:
            age = now - os.stat(lock).st_mtime
            pid = _lock_pid(lock)
        except (FileNotFoundError, ValueError):
            continue
        if age > STALE_LOCK_AGE and (pid is None or not _alive(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            freed.append(slot)
    return freed


def answer_waiting_callers(directory: str, patience: float = 1.0) -> int:
    """Tells every caller still holding a slot to run in-process (F); returns how many.

    For a stopping helper once its workers are gone: a caller whose record no worker read
    (or whose worker died before the handshake) waits on its slot FIFO, and would wait
    forever. Callers a worker had answered already no longer read this FIFO.
    """
    answered = 0
    for slot in range(SLOTS):
        try:
            pid = _lock_pid(slot_lock(directory, slot))
        except (FileNotFoundError, ValueError):
            continue
        if pid is None or not _alive(pid):
            continue
        reply = _handshake(directory, slot, pid, patience)
        if reply is not None:
            with contextlib.suppress(OSError):
                os.write(reply, RUN_HERE)
            os.close(reply)
            answered += 1
    return answered


def rescue_stranded_callers(directory: str, patience: float = RESCUE_PATIENCE) -> int:
    """Sends the callers a killed helper left waiting to run in-process; returns how many.

    A helper killed outright (SIGKILL, the OOM killer) answers no one. Callers that passed
    its liveness check just before wait on its FIFOs: to open `q` (no reader is left) or
    on their slot. Opening `q` lets the first kind write their record and go on to their
    slot; answering F on every live holder's slot then frees both kinds. Run by the next
    helper of the build, before it replaces the directory.
    """
    if not os.path.isdir(directory):
        return 0
    try:
        reader: Optional[int] = os.open(request_fifo(directory),
                                        os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        reader = None
    try:
        return answer_waiting_callers(directory, patience)
    finally:
        if reader is not None:
            os.close(reader)


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# -- a worker: one call ------------------------------------------------------------------------

def parse_record(record: bytes) -> tuple[int, int]:
    """(slot, pid) from a request record; ValueError when it is not one."""
    fields = record.split()
    if len(record) != RECORD_SIZE or len(fields) != 2:
        raise ValueError(f"malformed request record {record!r}")
    slot, pid = int(fields[0]), int(fields[1])
    if not 0 <= slot < SLOTS or pid <= 0:
        raise ValueError(f"request record out of range {record!r}")
    return slot, pid


def serve(record: bytes, directory: str, enter: Enter, run: Runner) -> bool:
    """Serves one shell caller; returns whether it ran the call here.

    Never raises for the caller's sake: anything that goes wrong before the call runs is
    answered with F or R, so the caller runs it in-process.
    """
    try:
        slot, pid = parse_record(record)
    except ValueError:
        return False
    lock = slot_lock(directory, slot)
    if not _holds(lock, pid) or not _same_user(pid):
        return False
    reply = _handshake(directory, slot, pid, HANDSHAKE_TIMEOUT)
    if reply is None:  # the caller went away before it opened its slot
        _release(lock, pid)
        return False
    try:
        return _run_for(pid, reply, enter, run)
    finally:
        os.close(reply)
        _release(lock, pid)


def _run_for(pid: int, reply: int, enter: Enter, run: Runner) -> bool:
    opened: list[int] = []
    try:
        try:  # before touching stdin: F leaves the caller's stdin untouched
            out = _open_output(pid, 1, opened)
            err = _open_output(pid, 2, opened)
            stdin_fd = _open_input(pid, opened)
            namespaces = [_open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY, opened)
                          for kind in ("net", "uts")]
            env = read_environ(pid)
        except OSError:
            _write_all(reply, RUN_HERE)
            return False
        stdin = _read_all(stdin_fd)
        if not wanted(env, stdin):  # "resident": false in the config
            _write_all(reply, RUN_HERE_WITH_STDIN + stdin)
            return False
        try:
            enter(namespaces)
        except OSError:
            _write_all(reply, RUN_HERE_WITH_STDIN + stdin)
            return False
        code, stdout, stderr = run(env, stdin)
        with contextlib.suppress(OSError):  # a runtime that stopped reading: it gets the code
            _write_all(out, stdout.encode("utf-8", "surrogateescape"))
            if stderr:
                _write_all(err, stderr.encode("utf-8", "surrogateescape"))
        _write_all(reply, b"%d\n" % code)
        return True
    finally:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_environ(pid: int) -> dict[str, str]:
    """The environment the caller was started with, decoded as os.environ decodes."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def _handshake(directory: str, slot: int, pid: int, patience: float) -> Optional[int]:
    """Opens the caller's slot FIFO to write once the caller has it open to read.

    Then renews the slot: a fresh FIFO at the path, this pipe known to the two of us only.
    """
    path = slot_fifo(directory, slot)
    deadline = time.monotonic() + patience
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                return None
        if time.monotonic() > deadline or not _alive(pid):
            return None
        time.sleep(0.0002)
    os.set_blocking(fd, True)
    fresh = f"{path}.{os.getpid()}"
    try:
        os.mkfifo(fresh, 0o600)
        os.replace(fresh, path)
    except OSError:  # the slot stays unusable (callers then run in-process); this call is fine
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fresh)
    return fd


def _open(path: str, flags: int, opened: list[int]) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC)
    opened.append(fd)
    return fd


def _open_output(pid: int, number: int, opened: list[int]) -> int:
    """The caller's stdout or stderr, opened anew through /proc (pipes and ttys reopen as
    themselves; a regular file is appended to, as a shell's `>` file is written from 0)."""
    path = f"/proc/{pid}/fd/{number}"
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return _open(path, os.O_WRONLY | os.O_APPEND, opened)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return _open(path, os.O_WRONLY, opened)
    raise OSError(errno.ENXIO, f"fd {number} of {pid} cannot be reopened")  # a socket


def _open_input(pid: int, opened: list[int]) -> int:
    path = f"/proc/{pid}/fd/{CALLER_STDIN_FD}"
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        raise OSError(errno.ENXIO, f"stdin of {pid} cannot be reopened")
    return _open(path, os.O_RDONLY, opened)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _lock_pid(lock: str) -> Optional[int]:
    """The pid in a slot lock; None while the caller has created it but not yet written it."""
    with open(lock, "rb") as f:
        text = f.read().strip()
    return int(text) if text else None


def _holds(lock: str, pid: int) -> bool:
    try:
        return _lock_pid(lock) == pid
    except (FileNotFoundError, ValueError):
        return False


def _release(lock: str, pid: int) -> None:
    if _holds(lock, pid):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _same_user(pid: int) -> bool:
    """Only root (or the helper's own user) may have a call run: the directory is 0700 too."""
    try:
        return os.stat(f"/proc/{pid}").st_uid in (0, os.getuid())
    except FileNotFoundError:
        return False
