"""Calls the shell prologue of dist/cnilab hands to the resident helper: no Python per call.

Starting a Python process costs ~12 ms before it runs a line, about the whole ADD of the
reference ptp plugin. So when the helper of this very file (and build) is up, the file's
`#!/bin/sh` prologue (plugin/delivery/prologue.py) starts no Python; with builtins only, it

  1. checks the run directory (plugin.cni.rundir's rule, the part builtins can see: an
     absolute path, every component a real directory owned by root, no symbolic link) and
     finds the helper: `<run>/resident-<build>-<dev>-<ino>.pid`, a root-owned regular file,
     names a live root process holding this file at FILE_FD and `<dir>/q` at LIVENESS_FD,
     `<dir>` (`<that name>.<helper pid>.d`) a root-owned directory, not a link;
  2. claims a slot n: creates `<dir>/<n>.lock` (noclobber: O_EXCL), keeps it open at
     LOCK_FD for as long as it lives, and writes its pid into it. **The slot is the
     caller's until it exits**: only the helper's parent frees it, once the caller is dead
     (its pidfd says so, or /proc shows no process with that lock at LOCK_FD);
  3. writes the record "<n> <pid>", padded to RECORD_SIZE bytes, to the FIFO `<dir>/q`,
     opened read-write so the open never blocks (one write under PIPE_BUF is atomic, so
     workers reading RECORD_SIZE never split one);
  4. opens `<dir>/<n>` for reading without blocking (read-write first, then read-only, then
     the read-write end closed) and reads lines "<pid> <word>" until one is its own answer:
     S (started: a worker took the call and its stdin), O <code> <output> (print the
     output, one line of JSON, and exit with the code), an exit code (the output, too long
     for one line, is already on its stdout), F (run it yourself), R <bytes> (the same, the
     config that came back follows on the FIFO as stdin) or X (lost: run it yourself unless
     it had started, then error 11: its stdin is gone).

Who writes the slot FIFOs, and what the caller learns from it:
- the helper's parent holds every slot FIFO open read-write, so a caller blocks in step 4
  while the helper lives and reads end-of-file the moment it is gone (killed, OOM): then it
  runs the call itself, or says "try again" (code 11) if it had seen S;
- a worker checks the record's caller holds the slot (the lock names it and it has the
  lock open at LOCK_FD: a pidfd taken first pins that very process), claims the call by
  creating `<dir>/<n>.<pid>.taken` (O_EXCL), writes S before it reads the caller's stdin,
  and checks the caller is still alive (its pidfd) before it runs the call and again
  before an ADD commits: an ADD for a caller that died is undone, not answered;
- the parent answers X when a worker died holding a claim, or when no worker took a record
  within LOST_AFTER seconds (it claims the call first, so no worker can take it later);
  it frees a slot only when its caller is dead, giving it a new FIFO (nothing a dead
  caller left unread reaches the next one);
- a caller that read end-of-file claims the call itself before running it: if a worker
  got there first, it waits for that worker's answer instead.
So exactly one party ever runs a call, a slot's FIFO has one reader, its caller, for the
caller's whole life (no answer can reach another caller, and the ticker below keeps ticking
for it until it exits), and every wait ends: on an answer, at end-of-file, on an X, or when
the caller has counted CNILAB_CALL_TIMEOUT + HANDOFF_MARGIN ticks (a "T" line the helper's
ticker writes every second on the slot of every waiting caller: a process of its own, still
ticking when the helper and its workers are frozen). docs/speed.md has the states and each
interleaving.

The worker takes the rest from the caller: its own descriptors for stdin (copied to fd 3),
stdout and stderr (pidfd_getfd: the very open files, offsets and all), and from /proc/<pid>
the environment, the namespaces (net, uts, mnt), the root and working directory to enter, so
paths mean what they mean to the caller. The caller waits on its slot for the whole call
(the worker checks /proc/<pid>/fd/0 is the slot FIFO before and after taking them).

Trust: `<dir>` is 0700 root's, in a run directory plugin.cni.rundir accepts (the helper
checks it at start and every WATCH_EVERY seconds, and stops when it no longer passes);
the caller checks what builtins can (ownership, no links) and that the helper holds its
own request FIFO, which no other user can open. Only root (or the helper's own user) gets a
call run.
"""
from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import stat
import time
from collections.abc import Mapping
from typing import Callable, Optional

SLOTS = 64
RECORD_SIZE = 32  # printf '%-31s\n': slot, space, pid, padding, newline
CALLER_STDIN_FD = 3  # the caller's stdin, copied there before its record
LOCK_FD = 4  # the caller's slot lock, open for as long as it lives: its liveness, pid-free
LIVENESS_FD = 200  # the shell checks /proc/<helper pid>/fd/200 is <dir>/q: pid not reused
FILE_FD = 201  # ...and /proc/<helper pid>/fd/201 is the file it runs as: its own helper
HANDSHAKE_TIMEOUT = 5.0  # the caller opens its slot microseconds after its record
STALE_LOCK_AGE = 2.0  # a lock still empty this long is checked for a holder in /proc
LOST_AFTER = 3.0  # a record no worker took in this long was lost with a dying worker
OUTPUT_TIMEOUT = 10.0  # writing a call's output to a runtime that stopped reading
STDIN_TIMEOUT = 10.0  # reading a config from a runtime that never closes the plugin's stdin
HANDOFF_MARGIN = 25  # seconds the caller's timer allows beyond CNILAB_CALL_TIMEOUT
MAX_STDIN = (4 << 20) + 1  # plugin.cni.skel refuses more; one byte more tells it so
OFF_VALUES = ("0", "false", "no", "off")

Gone = Callable[[], bool]  # whether the caller of the call being run has died
Runner = Callable[[Mapping[str, str], bytes, Gone], "tuple[int, str, str]"]
Enter = Callable[[dict[str, int]], None]
Notify = Callable[[int, int, Mapping[str, str]], None]  # (slot, caller pid, its env) taken


def wanted(env: Mapping[str, str], stdin: bytes) -> bool:
    """Whether this call may use the helper: not with CNILAB_RESIDENT=0 or "resident": false."""
    if env.get("CNILAB_RESIDENT", "").lower() in OFF_VALUES:
        return False
    if b'"resident"' not in stdin:  # skip the JSON parse unless the key is there
        return True
    import json

    try:
        return json.loads(stdin).get("resident", True) is not False
    except Exception:  # undecodable, too deep, not an object: dispatch() says so, either way
        return True


# -- names ---------------------------------------------------------------------------------------

def base_name(run_dir: str, build: str, plugin_file: os.stat_result) -> str:
    """`<run>/resident-<build>-<dev>-<ino>`: one helper per build and installed file."""
    return os.path.join(run_dir, f"resident-{build}-{plugin_file.st_dev}-{plugin_file.st_ino}")


def directory_for(base: str, helper_pid: int) -> str:
    return f"{base}.{helper_pid}.d"


def request_fifo(directory: str) -> str:
    return os.path.join(directory, "q")


def slot_fifo(directory: str, slot: int) -> str:
    return os.path.join(directory, str(slot))


def slot_lock(directory: str, slot: int) -> str:
    return os.path.join(directory, f"{slot}.lock")


def slot_taken(directory: str, slot: int, caller: int) -> str:
    """Who runs the call of `caller` in `slot` (O_EXCL): per caller, so a claim made late
    for a caller that is gone can never block the next caller of the slot."""
    return os.path.join(directory, f"{slot}.{caller}.taken")


def line(pid: int, word: str) -> bytes:
    return f"{pid} {word}\n".encode("ascii")


# -- the ticker: every caller's deadline, even when the helper is frozen -------------------------

# Once a second, a "T" line on the slot FIFO of every waiting caller; the caller gives up
# after CNILAB_CALL_TIMEOUT + HANDOFF_MARGIN of them. A process of its own (own session, a
# child of init, no "resident" in its command line), so freezing the helper and its workers
# (SIGSTOP) does not freeze the callers' clocks; it ends within a second of the helper.
# Not a timer per call: a `sleep` started by every caller costs ~0.7 ms of CPU per call.
TICKER = """
{
  z=/bin/sleep
  [ -x $z ] || z=/usr/bin/sleep
  while [ -d "$CNILAB_TICK_DIR" ] && [ -d "/proc/$CNILAB_TICK_FOR" ]; do
    $z 1
    for f in "$CNILAB_TICK_DIR"/*.lock; do
      p=${f%.lock}
      [ -p "$p" ] && { printf 'T\\n' 1<>"$p"; } 2>/dev/null
    done
  done
} </dev/null >/dev/null 2>&1 &
"""


def start_ticker(directory: str, helper_pid: int) -> None:
    """Starts the ticker for `directory` while `helper_pid` lives (and the directory is)."""
    import subprocess

    subprocess.run(["/bin/sh", "-c", TICKER, "cnilab-ticker"], start_new_session=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10,
                   env={"CNILAB_TICK_DIR": directory, "CNILAB_TICK_FOR": str(helper_pid)})


# -- the helper's parent: the FIFOs, and answers for calls no worker will ------------------------

class Slots:
    """The hand-off directory of one helper: the request FIFO and the slot FIFOs it holds,
    and a pidfd on the caller of every slot it knows to be held (its death frees the slot).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.mkdir(directory, 0o700)
        os.mkfifo(request_fifo(directory), 0o600)
        # The reader is non-blocking (workers race for records) and also sits at
        # LIVENESS_FD. The writer is never written: it keeps select() from seeing end-of-file.
        flags = os.O_NONBLOCK | os.O_CLOEXEC
        self.requests = os.open(request_fifo(directory), os.O_RDONLY | flags)
        self._keep_open = os.open(request_fifo(directory), os.O_WRONLY | flags)
        os.dup2(self.requests, LIVENESS_FD, inheritable=False)
        self.fifos: dict[int, int] = {}
        for slot in range(SLOTS):
            self.fifos[slot] = self._open_fresh(slot)
        self.answered: set[tuple[int, int]] = set()
        self.callers: dict[int, tuple[int, int]] = {}  # pidfd -> (slot, caller)

    def _open_fresh(self, slot: int) -> int:
        """A new FIFO at the slot's path, held read-write (callers never block opening it)."""
        path = slot_fifo(self.directory, slot)
        fresh = f"{path}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fresh)
        os.mkfifo(fresh, 0o600)
        fd = os.open(fresh, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        os.replace(fresh, path)
        return fd

    def descriptors(self) -> list[int]:
        """What a worker must close after fork, so the parent's end alone keeps callers
        waiting (when it dies, they read end-of-file)."""
        return [self._keep_open, *self.fifos.values(), *self.callers]

    def answer(self, slot: int, pid: int, word: str) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the caller's timer ends its wait
            os.write(self.fifos[slot], line(pid, word))
        self.answered.add((slot, pid))

    # -- callers' lives: a slot is freed when, and only when, its caller is dead -------------

    def follow(self, slot: int, caller: int) -> None:
        """Watches `caller`, which a worker says holds `slot` (frees it if already dead)."""
        if (slot, caller) in self.callers.values():
            return
        try:
            pidfd = os.pidfd_open(caller)
        except OSError:
            pidfd = -1
        if pidfd >= 0 and locked_by(self.directory, slot, caller):
            self.callers[pidfd] = (slot, caller)  # the pidfd pins the process checked
            return
        if pidfd >= 0:
            os.close(pidfd)
        if _pid_in_lock(self.directory, slot) == caller:
            self._free(slot)  # it named the slot but holds it no more: it is gone

    def pidfds(self) -> list[int]:
        return list(self.callers)

    def exited(self, pidfd: int) -> None:
        """`pidfd` became readable: its caller exited; its slot is free again."""
        slot, caller = self.callers.pop(pidfd)
        os.close(pidfd)
        if _pid_in_lock(self.directory, slot) == caller:
            self._free(slot)

    def watch(self, workers: Mapping[int, float], now: Optional[float] = None) -> None:
        """One look at every held slot, for what no pidfd reports.

        `workers`: each live worker's pid -> the monotonic time by which its call must be
        over (inf when idle and ready; a negative number while it warms up). Frees the slots
        of callers that died (or never wrote their pid and are gone), follows callers no
        worker told us of, and answers X to callers whose record was lost (no worker took
        it in LOST_AFTER seconds while one was ready for it) or whose worker died.
        """
        idle = any(until == float("inf") for until in workers.values())
        wall = now if now is not None else time.time()
        for slot in range(SLOTS):
            lock = slot_lock(self.directory, slot)
            try:
                age = wall - os.stat(lock).st_mtime
                caller = _pid_in(lock)
            except (FileNotFoundError, ValueError):
                continue
            if caller is None:  # created, pid not written yet: or its writer died there
                if age > STALE_LOCK_AGE and not _held_open(lock):
                    self._free(slot)
                continue
            if not locked_by(self.directory, slot, caller):
                self._free(slot)
                continue
            self.follow(slot, caller)
            if (slot, caller) in self.answered:
                continue
            owner = _owner(self.directory, slot, caller)
            if owner == caller:
                continue  # the caller runs it itself
            if owner is None:
                if idle and age > LOST_AFTER and claim(self.directory, slot, caller,
                                                       os.getpid()):
                    self.answer(slot, caller, "X")
            elif owner not in workers and owner != os.getpid():
                self.answer(slot, caller, "X")  # its worker died holding the call

    def _free(self, slot: int) -> None:
        """A new FIFO first (whatever the dead caller left unread goes with the old one, and
        a worker still writing to it gets EPIPE), then the claims, then the lock."""
        old = self.fifos[slot]
        self.fifos[slot] = self._open_fresh(slot)
        os.close(old)
        prefix = f"{slot}."
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name.endswith(".taken"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(slot_lock(self.directory, slot))
        self.answered = {a for a in self.answered if a[0] != slot}
        for pidfd, (watched, _) in list(self.callers.items()):
            if watched == slot:
                del self.callers[pidfd]
                os.close(pidfd)

    def stop_taking_calls(self) -> None:
        """New callers find no request FIFO (their liveness check fails: in-process)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(request_fifo(self.directory))

    def close(self) -> None:
        """Callers still waiting read end-of-file: each runs its call itself (or, if it had
        started, is told to try again)."""
        for fd in (LIVENESS_FD, self.requests, *self.descriptors()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.callers.clear()
        remove(self.directory)


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def claim(directory: str, slot: int, caller: int, owner: int) -> bool:
    """Takes the call of `caller` in `slot` for `owner` (a worker, the parent); False if
    someone has."""
    try:
        fd = os.open(slot_taken(directory, slot, caller),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, b"%d\n" % owner)
    finally:
        os.close(fd)
    return True


def _owner(directory: str, slot: int, caller: int) -> Optional[int]:
    try:
        return _pid_in(slot_taken(directory, slot, caller))
    except (FileNotFoundError, ValueError):
        return None


def _pid_in_lock(directory: str, slot: int) -> Optional[int]:
    try:
        return _pid_in(slot_lock(directory, slot))
    except (FileNotFoundError, ValueError):
        return None


def locked_by(directory: str, slot: int, pid: int) -> bool:
    """Whether `pid` holds `slot`: the lock names it and it has that very lock open at
    LOCK_FD (a dead caller, a zombie or a reused pid has not)."""
    lock = slot_lock(directory, slot)
    try:
        return _pid_in(lock) == pid and \
            os.path.samestat(os.stat(f"/proc/{pid}/fd/{LOCK_FD}"), os.stat(lock))
    except (OSError, ValueError):
        return False


def _held_open(lock: str) -> bool:
    """Whether any process has `lock` open at LOCK_FD (a caller between creating its lock
    and writing its pid; rare, so a walk of /proc is fine)."""
    try:
        target = os.stat(lock)
    except FileNotFoundError:
        return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.path.samestat(os.stat(f"/proc/{entry}/fd/{LOCK_FD}"), target):
                    return True
    return False


# -- a worker: one call --------------------------------------------------------------------------

def parse_record(record: bytes) -> tuple[int, int]:
    """(slot, pid) from a request record; ValueError when it is not one."""
    fields = record.split()
    if len(record) != RECORD_SIZE or len(fields) != 2:
        raise ValueError(f"malformed request record {record!r}")
    slot, pid = int(fields[0]), int(fields[1])
    if not 0 <= slot < SLOTS or pid <= 0:
        raise ValueError(f"request record out of range {record!r}")
    return slot, pid


class _Reply:
    """The worker's end of a slot FIFO: lines for one caller, while it still waits."""

    def __init__(self, directory: str, slot: int, pid: int) -> None:
        self.path = slot_fifo(directory, slot)
        self.pid = pid
        # The parent holds the FIFO read-write, so this open never waits for the caller.
        self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, word: str, payload: bytes = b"") -> None:
        from plugin.delivery.streams import write_within

        write_within(self.fd, line(self.pid, word) + payload,
                     time.monotonic() + OUTPUT_TIMEOUT)

    def answer(self, code: int, output: bytes, out: int, deadline: float) -> None:
        """The call's exit code and its output (one line of JSON, or nothing).

        Output the caller can print itself (one line that fits, with the code, in one FIFO
        write, which is atomic up to PIPE_BUF) travels as "O <code> <output>": a worker
        killed at any moment leaves the caller either the whole answer or none of it, and
        then it prints its own error, never a second document after ours (the long chaos run
        saw a result followed by "try again"). Anything else is written to the caller's
        stdout first, then the code follows on its own."""
        from plugin.delivery.streams import write_within

        body = output[:-1]
        head = f"{self.pid} O {code} ".encode("ascii")
        if output.endswith(b"\n") and body and body == body.strip() and b"\n" not in body \
                and len(head) + len(output) <= select.PIPE_BUF:
            write_within(self.fd, head + output, deadline)
            return
        with contextlib.suppress(OSError, TimeoutError):  # a runtime that stopped reading
            write_within(out, output, deadline)
        self.send(str(code))

    def close(self) -> None:
        os.close(self.fd)


def serve(record: bytes, directory: str, enter: Enter, run: Runner, notify: Notify) -> None:
    """Serves one shell caller. Never raises for the caller's sake: anything that goes wrong
    before the call runs is answered with F or R, so the caller runs it itself. The slot is
    left as it is: the parent frees it once the caller has exited."""
    try:
        slot, pid = parse_record(record)
    except ValueError:
        return
    pidfd = _pidfd(pid)
    try:
        # After the pidfd: if this check passes, the pidfd is the process that holds the slot.
        if not locked_by(directory, slot, pid):
            return  # a record whose caller is gone (or gave up) before we read it
        try:
            reply = _Reply(directory, slot, pid)
        except OSError:
            return  # the helper is going away: the caller reads end-of-file
        try:
            if not claim(directory, slot, pid, os.getpid()):
                return
            if pidfd < 0:
                reply.send("F")  # no pidfd (Linux < 5.3): no way to know it still waits
            else:
                _run_for(pid, pidfd, reply, enter, run, lambda env: notify(slot, pid, env))
        finally:
            reply.close()
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # gone; or Linux < 5.3: then "gone" is all we can say
        return -1


def _exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def _run_for(pid: int, pidfd: int, reply: _Reply, enter: Enter, run: Runner,
             taken: Callable[[Mapping[str, str]], None]) -> None:
    """Runs the call of `pid` unless it dies first; an ADD whose caller dies before it
    commits is undone (plugin.cni.commands.cmd_add asks `gone`)."""
    from plugin.delivery.streams import read_bounded, write_within

    def gone() -> bool:
        return _exited(pidfd)

    opened: list[int] = []
    try:
        if gone() or not _waiting_on(pid, reply.path, HANDSHAKE_TIMEOUT) or \
                not same_user(pid):
            if not gone():
                reply.send("F")
            return
        try:  # before touching stdin: F leaves the caller's stdin untouched
            out = _caller_fd(pid, pidfd, 1, opened)
            err = _caller_fd(pid, pidfd, 2, opened)
            stdin_fd = _caller_fd(pid, pidfd, CALLER_STDIN_FD, opened)
            where = {kind: _open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY, opened)
                     for kind in ("net", "uts", "mnt")}
            for kind in ("root", "cwd"):
                where[kind] = _open(f"/proc/{pid}/{kind}", os.O_RDONLY | os.O_DIRECTORY,
                                    opened)
            env = read_environ(pid)
        except OSError:
            reply.send("F")
            return
        if gone() or not _waiting_on(pid, reply.path, 0):  # still the same, still waiting
            return
        taken(env)
        # From here the caller's stdin is ours (reading consumes it): if we die now, it
        # must not run the call itself on what is left of it, it is told to try again.
        reply.send("S")
        try:
            stdin = read_bounded(stdin_fd, MAX_STDIN - 1, time.monotonic() + STDIN_TIMEOUT)
        except (OSError, TimeoutError) as e:  # what the in-process path answers, too
            reply.answer(1, stdin_error(e).encode(), out, time.monotonic() + OUTPUT_TIMEOUT)
            return
        if not wanted(env, stdin):  # "resident": false in the config
            reply.send(f"R {len(stdin)}", stdin)
            return
        try:
            enter(where)
        except OSError:
            reply.send(f"R {len(stdin)}", stdin)
            return
        if gone():
            return  # the runtime gave up on it (and may have run DEL since): not run
        code, stdout, stderr = run(env, stdin, gone)
        deadline = time.monotonic() + OUTPUT_TIMEOUT
        if stderr:  # the log first: the caller exits as soon as it has its answer
            with contextlib.suppress(OSError, TimeoutError):  # a runtime that stopped reading
                write_within(err, stderr.encode("utf-8", "surrogateescape"), deadline)
        reply.answer(code, stdout.encode("utf-8", "surrogateescape"), out, deadline)
    except (OSError, TimeoutError):
        return
    finally:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)


def stdin_error(e: Exception) -> str:
    """The CNI error for a stdin that could not be read (never ended, or failed)."""
    import json

    return json.dumps({"cniVersion": "1.1.0", "code": 5, "msg": f"cannot read the network "
                       f"config on stdin: {e}", "details": ""}) + "\n"


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


def _waiting_on(pid: int, fifo: str, patience: float) -> bool:
    """Whether `pid` reads the slot FIFO (its fd 0), waiting up to `patience` for it."""
    deadline = time.monotonic() + patience
    while True:
        try:
            if os.path.samestat(os.stat(f"/proc/{pid}/fd/0"), os.stat(fifo)):
                return True
        except OSError:
            if not alive(pid):
                return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0002)


def _open(path: str, flags: int, opened: list[int]) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC)
    opened.append(fd)
    return fd


SYS_PIDFD_GETFD = 438  # x86_64, arm64 and the rest of the generic table alike
_syscall = None


def _caller_fd(pid: int, pidfd: int, number: int, opened: list[int]) -> int:
    """The caller's own descriptor `number` (pidfd_getfd, Linux 5.6+): the very open file,
    offset and all, as if the caller wrote or read it itself, whatever it is (a pipe, a
    file, a socket). Older kernels: reopened through /proc (pipes, ttys, files)."""
    global _syscall
    if pidfd >= 0:
        import ctypes

        if _syscall is None:
            _syscall = ctypes.CDLL(None, use_errno=True).syscall
        fd = _syscall(SYS_PIDFD_GETFD, pidfd, number, 0)
        if fd >= 0:
            os.set_inheritable(fd, False)
            opened.append(fd)
            return int(fd)
    path = f"/proc/{pid}/fd/{number}"
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return _open(path, os.O_WRONLY | os.O_APPEND if number != CALLER_STDIN_FD
                     else os.O_RDONLY, opened)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return _open(path, (os.O_RDONLY if number == CALLER_STDIN_FD else os.O_WRONLY)
                     | os.O_NONBLOCK, opened)
    raise OSError(errno.ENXIO, f"fd {number} of {pid} cannot be reopened")  # a socket


def _pid_in(path: str) -> Optional[int]:
    """The pid a slot file holds; None while its writer has created it but not written it."""
    with open(path, "rb") as f:
        text = f.read(32).strip()
    return int(text) if text else None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def same_user(pid: int) -> bool:
    """Only root (or the helper's own user) may have a call run: the directory is 0700 too."""
    try:
        return os.stat(f"/proc/{pid}").st_uid in (0, os.getuid())
    except FileNotFoundError:
        return False
