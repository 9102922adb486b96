"""The resident helper: pyroute2 and the plugin loaded once, calls served by forked workers.

Started detached by an in-process call that found none (plugin.delivery.fastpath.spawn), from
a verified private copy of the plugin file (plugin.delivery.vendor: a `cp` over the live file
never changes the code it runs), with that file open at FILE_FD: one helper per build and
installed file, guaranteed by a lock, so parallel first calls start one and two labs (two
files) never share one. It exits after CNILAB_RESIDENT_IDLE seconds (default 120) without a
call, or on SIGTERM (`dist/cnilab --resident-stop`).

Workers take shell callers' records (plugin.delivery.handoff has the protocol): each enters
the caller's network, UTS and mount namespaces, root and working directory, takes its
environment, runs plugin.cni.skel.dispatch, and returns to the helper's own for the next call
(CALLS_PER_WORKER, then it exits). The parent keeps SPARES idle workers (forking more when
they are taken, stopping extras once a burst is over), answers callers whose worker died or
whose record was lost, and kills a worker stuck in a call past the call's deadline. Workers
are reaped by the parent's loop (no SIGCHLD=SIG_IGN: that disposition would be inherited by
the IPAM plugins' parent and break their exit codes).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import glob
import os
import select
import signal
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

from plugin.cni import rundir, wiring
from plugin.cni.deadline import CLEANUP_GRACE, call_timeout
from plugin.cni.errors import CniError
from plugin.delivery import handoff, vendor

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2
DEFAULT_IDLE = 120.0
SPARES = 2  # idle workers kept waiting for a call (the parent forks more when they are taken)
MAX_WORKERS = 16  # beyond this many, calls queue in the request FIFO for a free worker
CALLS_PER_WORKER = 200  # then the worker exits and a fresh one replaces it
SHRINK_AFTER = 10.0  # seconds with more than SPARES idle workers before the extras stop
STUCK_MARGIN = 5.0  # a worker busy this long past its call's deadline is killed
WATCH_EVERY = 1.0  # seconds between looks at the slots (lost records, dead callers)
STOP_TIMEOUT = 10.0  # --resident-stop waits this long, then kills
NOTE = 20  # bytes of a worker's note: pid, state, and for a call: slot, caller, seconds
BUSY, IDLE = 1, 0
STARTING = -1.0  # a worker warming up: alive, a spare, but not yet reading records
PR_SET_PDEATHSIG = 1
HANDOFF_GRACE = 0.2  # seconds a stopping helper still reads records of shell callers
NAMESPACES = (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))


IDLE_ENV = "CNILAB_RESIDENT_IDLE"
# The helper's own environment: fixed, never the first caller's (each call runs with its own).
HELPER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def idle_seconds(env: Mapping[str, str]) -> float:
    """CNILAB_RESIDENT_IDLE of a call (the latest call's counts), else the default."""
    try:
        value = float(env.get(IDLE_ENV) or DEFAULT_IDLE)
    except ValueError:
        return DEFAULT_IDLE
    return min(max(value, 1.0), 86400.0) if value == value else DEFAULT_IDLE


def _leave_the_callers_namespaces(libc: Any) -> bool:
    """Moves the helper out of the namespaces of the call that happened to start it.

    That call may run in a lab "node" (`ip netns exec`): staying there would keep the node's
    network namespace (and its veths) alive after the lab deletes it, for as long as the
    helper lives. The helper needs no network of its own (each call's child enters the
    caller's), so it takes a new, empty one, plus a mount namespace of its own (slave:
    unmounts of /run/netns/* still reach us, nothing of ours goes back) with a /sys of that
    empty namespace instead of the node's. Best effort: on a refusal we stay, which is only
    untidy. Runs before any thread exists (unshare(CLONE_NEWNS) requires that).
    """
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        return False
    if libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) == 0 and \
            libc.umount2(b"/sys", MNT_DETACH) == 0:
        libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None)
    return True  # the network namespace is our own, whatever became of /sys


def _preload() -> None:
    """Imports everything a call may touch, so children start with it in memory."""
    from plugin.crossnode import quiet_platform

    quiet_platform.settle()
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401

    import plugin.cni.commands
    import plugin.cni.skel
    import plugin.cni.wiring
    import plugin.crossnode  # noqa: F401

    IPRoute().close()  # pulls in what pyroute2 loads on first use


# The rehearsal's IPAM: answers any command with one fixed dual-stack allocation (IPv4 only
# on a kernel without IPv6); DEL's answer is ignored.
_REHEARSAL_IPAM = """#!/bin/sh
cat >/dev/null
echo '%s'
"""


def _rehearsal_allocation() -> str:
    ips = [{"address": "10.255.255.2/30", "gateway": "10.255.255.1"}]
    routes = [{"dst": "0.0.0.0/0"}]
    if os.path.isdir("/proc/sys/net/ipv6"):
        ips.append({"address": "fd00:ffff:ffff:ffff::2/64", "gateway": "fd00:ffff:ffff:ffff::1"})
        routes.append({"dst": "::/0"})
    import json

    return json.dumps({"cniVersion": "1.0.0", "ips": ips, "routes": routes})


def _rehearse(libc: Any, directory: str) -> None:
    """One real ADD, CHECK and DEL here, in namespaces of our own, before any spare is forked.

    Code run for the first time in a process fills caches and creates objects (pyroute2's
    message classes and request filters, subprocess, json, ipaddress): done in each forked
    child, that cost ~6-10 ms per call (measured: a child's ADD 22.7 -> 16.2 ms when its
    parent had run one). Done once here, every child inherits the result. The "node" is the
    helper's own network namespace (only called once we have one), the "pod" one a thread
    unshares, and the IPAM plugin a shell script: nothing outside this process is touched,
    and the namespaces vanish with the thread.
    """
    import json
    import shutil
    import tempfile
    import threading

    from plugin.cni.skel import dispatch

    ready, finished = threading.Event(), threading.Event()
    pod: dict[str, str] = {}

    def hold_a_pod_namespace() -> None:
        if libc.unshare(CLONE_NEWNET) == 0:
            pod["netns"] = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
        ready.set()
        finished.wait(30)

    holder = threading.Thread(target=hold_a_pod_namespace, name="cnilab-rehearsal-pod")
    holder.start()
    scratch = tempfile.mkdtemp(prefix="rehearsal-", dir=directory)
    try:
        ready.wait(30)
        if "netns" not in pod:
            return
        ipam = os.path.join(scratch, "cnilab-rehearsal-ipam")
        with open(ipam, "w", encoding="ascii") as f:
            f.write(_REHEARSAL_IPAM % _rehearsal_allocation())
        os.chmod(ipam, 0o700)
        conf = {"cniVersion": "1.0.0", "name": "cnilab-rehearsal", "type": "cnilab",
                "ipam": {"type": "cnilab-rehearsal-ipam"}}
        env = {"CNI_CONTAINERID": "cnilab-rehearsal", "CNI_NETNS": pod["netns"],
               "CNI_IFNAME": "eth0", "CNI_PATH": scratch, "PATH": os.environ.get("PATH", "")}
        added = dispatch(dict(env, CNI_COMMAND="ADD"), json.dumps(conf).encode())
        if added.exit_code == 0:
            checked = dict(conf, prevResult=json.loads(added.stdout))
            dispatch(dict(env, CNI_COMMAND="CHECK"), json.dumps(checked).encode())
        dispatch(dict(env, CNI_COMMAND="DEL"), json.dumps(conf).encode())
        wiring.finish()  # no thread may be left when the spares are forked
    finally:
        finished.set()
        holder.join()
        shutil.rmtree(scratch, ignore_errors=True)




def _setns(libc: Any, fd: int, kind: int) -> None:
    if libc.setns(fd, kind) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _enter(libc: Any, where: dict[str, int]) -> None:
    """Into the caller's namespaces, then its root and working directory (in that order:
    entering a mount namespace resets both to that namespace's root)."""
    for kind, flag in NAMESPACES:
        _setns(libc, where[kind], flag)
    os.fchdir(where["root"])
    os.chroot(".")
    os.fchdir(where["cwd"])


class _Home:
    """The worker's own namespaces, root and working directory, to go back to after a call."""

    def __init__(self) -> None:
        self.where = {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                      for kind, _ in NAMESPACES}
        self.where["root"] = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.where["cwd"] = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.env = dict(os.environ)

    def go_back(self, libc: Any) -> None:
        """Raises if that is impossible (the worker then ends)."""
        _enter(libc, self.where)
        os.environ.clear()
        os.environ.update(self.env)


def _run(env: Mapping[str, str], stdin: bytes, gone: Callable[[], bool]) -> tuple[int, str, str]:
    """dispatch() with the caller's environment as ours (IPAM plugins inherit it)."""
    from plugin.cni.skel import dispatch

    os.environ.clear()
    os.environ.update(env)
    outcome = dispatch(env, stdin, gone)
    return outcome.exit_code, outcome.stdout, outcome.stderr


def _warm(call_waiting: Callable[[], bool]) -> None:
    """Walks a spare through the code a call runs, before any call arrives.

    A forked child shares its parent's pages until it writes to them, and CPython writes to
    every object it touches (reference counts): the first call in a fresh child pays for
    thousands of copy-on-write faults. A spare has time to pay them while it waits. Nothing
    here changes the node: read-only netlink requests in the helper's own namespace and a
    config parse; no IPAM plugin is run.

    Step by step, and only while no call is waiting: at nice 19 on a busy machine a spare
    may get little CPU, and a call must never queue behind a warm-up (back-to-back calls
    did, for tens of ms).
    """
    import json

    from pyroute2.iproute.linux import IPRoute

    from plugin.cni import netconf, skel, wiring

    sample = {"cniVersion": "1.1.0", "name": "warm", "type": "cnilab", "backend": "host-gw",
              "ipam": {"type": "host-local"}, "mtu": 1500,
              "nodes": [{"name": "a", "ip": "10.0.0.1", "podSubnet": "10.1.0.0/24"},
                        {"name": "b", "ip": "10.0.0.2", "podSubnet": "10.1.1.0/24"}]}
    steps: list[Callable[[], object]] = [
        lambda: skel.dispatch({"CNI_COMMAND": "VERSION"}, b""),
        lambda: netconf.parse(json.loads(json.dumps(sample))),
    ]
    ipr = IPRoute(strict_check=True)
    try:
        steps += [lambda: wiring.link_by_name(ipr, "lo"), lambda: wiring.link_info(ipr, 1),
                  ipr.get_addr, lambda: wiring.routes_via(ipr, 1), ipr.get_neighbours]
        for step in steps:
            if call_waiting():
                return
            step()
    finally:
        ipr.close()




def _next_record(requests: int, stopping: list[bool]) -> bytes:
    """Waits for a shell caller's record. Returns with SIGTERM blocked: the worker marks
    itself in a call before it lets the signal in, so a stopping helper never kills a worker
    between taking a call and answering it.

    End-of-file on the request FIFO means the helper is gone (it holds the only lasting
    writer). Its death signal should have stopped us already, but one can be lost (raised
    in a finalizer, which swallows it): a chaos run found such an orphan spinning here for
    minutes, holding the helper lock, so every call fell back to Python."""
    while not stopping:
        select.select([requests], [], [])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            record: Optional[bytes] = os.read(requests, handoff.RECORD_SIZE)
        except BlockingIOError:  # another worker was quicker
            record = None
        if record:
            return record
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if record == b"":
            break
    raise _Stop()


def _worker(slots: handoff.Slots, notify_w: int, libc: Any, parent: int,
            helpers_own: tuple[int, ...]) -> None:
    """A pre-forked worker: warms up, then serves calls one at a time, CALLS_PER_WORKER at
    most, telling the parent each time it takes a call (it forks more when no spare is
    left) and becomes idle again.

    Forking ahead keeps fork's ~3 ms (page tables of the loaded interpreter) out of the call;
    serving again, rather than exiting after one call, saves the fork, the exit and the
    warm-up of a replacement (~12 ms of CPU per call, measured) and every call after the
    first finds its pages already copied. Between calls the worker returns to the helper's
    own namespaces, root, working directory and environment, and collects the call's
    garbage; anything unexpected ends it.
    """
    status = 1
    in_call: list[bool] = []
    stopping: list[bool] = []

    def on_term(_signum: int, _frame: Any) -> None:
        stopping.append(True)  # in a call: answer it first; and if the raise below is lost
        if not in_call:
            raise _Stop()  # idle: just go

    try:
        gc.disable()  # a call lives milliseconds; collecting would only copy pages
        signal.signal(signal.SIGTERM, on_term)
        _die_with(parent, libc)
        for fd in slots.descriptors():  # the parent's alone: its death must reach callers
            os.close(fd)
        for fd in helpers_own:  # the helper lock: a worker left behind must not hold it
            os.close(fd)
        home = _Home()
        # Warm up at the lowest priority: a spare must not slow the calls running beside it.
        priority = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        with contextlib.suppress(Exception):
            _warm(lambda: bool(select.select([slots.requests], [], [], 0)[0]))
        with contextlib.suppress(OSError):  # raising it back needs root, which we are
            os.setpriority(os.PRIO_PROCESS, 0, priority)
        gc.freeze()
        me = os.getpid()
        os.write(notify_w, _note(me, IDLE))  # ready: records may be left to us now

        def taken(slot: int, caller: int, env: Mapping[str, str]) -> None:
            os.write(notify_w, _note(me, BUSY, slot, caller, call_timeout(env),
                                     idle_seconds(env)))

        for served in range(1, CALLS_PER_WORKER + 1):
            record = _next_record(slots.requests, stopping)
            in_call.append(True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            try:
                handoff.serve(record, slots.directory, lambda where: _enter(libc, where), _run,
                              taken)
            finally:
                wiring.finish()  # after the answer: a single thread again, to go back home
                home.go_back(libc)
            in_call.clear()
            if stopping or served == CALLS_PER_WORKER:
                break
            gc.collect()  # the call's reference cycles; frozen objects are not scanned
            gc.freeze()  # what survived stays: the next collection scans only the next call's
            if stopping:  # a SIGTERM whose raise a finalizer swallowed during the collection
                break
            os.write(notify_w, _note(me, IDLE))
        status = 0
    except BaseException:  # the parent answers the caller (X) when it sees us gone
        pass
    finally:
        os._exit(status)


def _note(pid: int, state: int, slot: int = 0, caller: int = 0, seconds: float = 0,
          idle: float = 0) -> bytes:
    """A worker's note to the parent: ready (IDLE), or in the call of `caller` in `slot`
    with that call's time budget and idle setting (BUSY): the parent follows the caller's
    life and the worker's deadline, with the call's own settings, not the helper's."""
    fields = (pid, state | int(idle) << 8, slot, caller, int(seconds))
    return b"".join(f.to_bytes(4, "little") for f in fields)


def _unpack(note: bytes) -> tuple[int, int, int, int, int, int]:
    pid, state, slot, caller, seconds = (int.from_bytes(note[i:i + 4], "little")
                                          for i in range(0, NOTE, 4))
    return pid, state & 0xFF, slot, caller, seconds, state >> 8


def _die_with(parent: int, libc: Any) -> None:
    """SIGTERM when the helper dies, however it dies (SIGKILL, the OOM killer): a worker
    finishes the call it has, then exits, instead of serving on with no one to replace it."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before prctl took effect
        raise _Stop()


class _Stop(BaseException):
    """SIGTERM: stop now. A BaseException, so the `suppress(Exception)` guarding the warm-up
    and the rehearsal cannot swallow it (a worker did, and served on after its helper died)."""


def _on_term(_signum: int, _frame: Any) -> None:
    raise _Stop()


class _Pool:
    """The parent's view of its workers: who is idle, who is in a call and until when."""

    def __init__(self) -> None:
        # pid -> deadline of its call (inf: idle and ready, STARTING: still warming up)
        self.until: dict[int, float] = {}
        self.pidfds: dict[int, int] = {}
        self.idle_since: float = time.monotonic()
        self.idle = DEFAULT_IDLE  # the latest call's CNILAB_RESIDENT_IDLE

    def add(self, pid: int) -> None:
        self.until[pid] = STARTING
        with contextlib.suppress(OSError, AttributeError):  # pidfd: Linux 5.3+
            self.pidfds[pid] = os.pidfd_open(pid)

    def spares(self) -> list[int]:
        """Workers not in a call (ready, or about to be)."""
        return [pid for pid, until in self.until.items() if until in (float("inf"), STARTING)]

    def busy(self) -> int:
        return len(self.until) - len(self.spares())

    def note(self, data: bytes) -> list[tuple[int, int]]:
        """Reads workers' notes; returns (slot, caller) of each call taken."""
        taken = []
        for i in range(0, len(data) - NOTE + 1, NOTE):
            pid, state, slot, caller, seconds, idle = _unpack(data[i:i + NOTE])
            if pid not in self.until:
                continue
            if state == BUSY:
                limit = seconds + CLEANUP_GRACE + STUCK_MARGIN
                self.until[pid] = time.monotonic() + limit
                self.idle = float(idle) or DEFAULT_IDLE
                taken.append((slot, caller))
            else:
                self.until[pid] = float("inf")
        return taken

    def stuck(self) -> list[int]:
        """Workers in a call past its deadline (and its cleanup, and a margin)."""
        now = time.monotonic()
        return [pid for pid, until in self.until.items() if 0 <= until < now]

    def reap(self) -> bool:
        """Collects exited workers; True if any."""
        gone = False
        while self.until:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.until.pop(pid, None)
            fd = self.pidfds.pop(pid, None)
            if fd is not None:
                os.close(fd)
            gone = True
        return gone

    def shrink(self) -> None:
        """After a burst, extra idle workers stop (each holds memory and a warm-up's pages)."""
        spares = self.spares()
        if len(spares) <= SPARES:
            self.idle_since = time.monotonic()
        elif time.monotonic() - self.idle_since > SHRINK_AFTER:
            for pid in spares[SPARES:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            self.idle_since = time.monotonic()

    def stop(self) -> None:
        """Idle workers go at once; busy ones answer first (until their deadlines, then
        they are killed)."""
        for pid in self.until:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = max((u for u in self.until.values() if 0 <= u < float("inf")),
                       default=time.monotonic())
        while self.until and time.monotonic() < deadline:
            if not self.reap():
                time.sleep(0.01)
        for pid in self.until:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.until and self.reap():
            pass
        for fd in self.pidfds.values():
            os.close(fd)


def _remove_dead_helpers_directories(base: str) -> None:
    """Hand-off directories a killed helper of this build and file left behind."""
    for directory in glob.glob(glob.escape(base) + ".*.d"):
        pid = directory[len(base) + 1:-2]
        if not pid.isdigit() or not handoff.alive(int(pid)):
            handoff.remove(directory)


def _own_build() -> Optional[str]:
    try:
        from plugin.delivery._build import BUILD_ID  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(BUILD_ID)


def serve(build: str) -> int:
    """The helper. Runs from its private copy (argv[0]), the plugin file open at FILE_FD."""
    try:
        plugin_file = os.fstat(handoff.FILE_FD)
        os.set_inheritable(handoff.FILE_FD, False)  # IPAM plugins run by workers get none
        directory = rundir.run_dir()
    except (OSError, CniError):
        return 1
    if _own_build() != build:
        return 1  # started from the wrong bytes: never serve another build's callers
    base = handoff.base_name(directory, build, plugin_file)
    lock_fd = os.open(base + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                      0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return 0  # another helper for this build and file is already up (or starting)
    slots: Optional[handoff.Slots] = None
    pool = _Pool()
    notify_r, notify_w = os.pipe()
    os.set_blocking(notify_r, False)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        own_netns = _leave_the_callers_namespaces(libc)
        archive = str(getattr(globals().get("__loader__"), "archive", ""))
        copies = [vendor.activate(build, archive)] if archive else []
        copies += [archive] if archive else []
        vendor.prune(build)
        _preload()
        if own_netns:  # never in a node's namespace: the rehearsal makes (and removes) a veth
            with contextlib.suppress(Exception):
                _rehearse(libc, directory)
        _remove_dead_helpers_directories(base)
        slots = handoff.Slots(handoff.directory_for(base, os.getpid()))
        handoff.start_ticker(slots.directory, os.getpid())
        rundir.write_private(base + ".pid", f"{os.getpid()}\n".encode())
        # Children only read what we loaded: keep the collector from touching (and so
        # copying) every page of it in each child.
        gc.collect()
        gc.freeze()
        _loop(slots, pool, notify_r, notify_w, lock_fd, libc, copies, directory)
        return 0
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shut_down(base, slots, pool)
        os.close(lock_fd)
        os.close(notify_r)
        os.close(notify_w)


def _loop(slots: handoff.Slots, pool: _Pool, notify_r: int, notify_w: int, lock_fd: int,
          libc: Any, copies: list[str], run_dir: str) -> None:
    helper_pid = os.getpid()  # what each worker checks it still has as its parent
    last = touched = watched = time.monotonic()
    while True:
        while len(pool.spares()) < SPARES and len(pool.until) < MAX_WORKERS:
            pid = os.fork()
            if pid == 0:
                _worker(slots, notify_w, libc, helper_pid, (notify_r, lock_fd))
            pool.add(pid)
        ready, _, _ = select.select([notify_r, *pool.pidfds.values(), *slots.pidfds()], [],
                                    [], WATCH_EVERY)
        if notify_r in ready:
            with contextlib.suppress(BlockingIOError):  # whole notes: each write is atomic
                for slot, caller in pool.note(os.read(notify_r, NOTE * 64)):
                    slots.follow(slot, caller)
            last = time.monotonic()
        for fd in ready:
            if fd in slots.callers:
                slots.exited(fd)  # a caller is gone: its slot is free again
        died = pool.reap()
        now = time.monotonic()
        if died or now - watched >= WATCH_EVERY:
            if rundir.untrusted_because(run_dir):
                return  # someone loosened the run directory: callers run in-process
            slots.watch(pool.until)
            for pid in pool.stuck():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # stuck past its deadline: the caller is told
            watched = now
        pool.shrink()
        if now - touched > vendor.TOUCH_AFTER:
            vendor.touch(copies)  # "in use": vendor.prune leaves them alone
            touched = now
        if not pool.busy() and now - last > pool.idle:
            return


def _shut_down(base: str, slots: Optional[handoff.Slots], pool: _Pool) -> None:
    """Stops taking calls, lets the calls already taken finish, and leaves every other
    caller reading end-of-file (they run their calls themselves): no caller is left waiting,
    and nothing of ours is left in the run directory."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(base + ".pid")  # new callers now run in-process
    if slots is not None:
        slots.stop_taking_calls()
        # A shell caller that opened the request FIFO just before gets its record read.
        time.sleep(HANDOFF_GRACE)
    pool.stop()
    if slots is not None:
        slots.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(base + ".lock")


def helpers_of(build: str, plugin_path: str) -> list[int]:
    """Pids of this build's live helpers serving the file at `plugin_path`."""
    try:
        target = os.stat(plugin_path)
        directory = rundir.run_dir_name()
    except OSError:
        return []
    base = handoff.base_name(directory, build, target)
    try:
        with open(base + ".pid", "rb") as f:
            pid = int(f.read(32).strip())
        same = os.path.samestat(os.stat(f"/proc/{pid}/fd/{handoff.FILE_FD}"), target)
    except (OSError, ValueError):
        return []
    return [pid] if same and handoff.alive(pid) else []


def stop(build: str, plugin_path: str, timeout: float = STOP_TIMEOUT) -> int:
    """Stops the helper of this build and file (if any) and waits until it is gone."""
    pids = helpers_of(build, plugin_path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(handoff.alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return 1
        time.sleep(0.02)
    return 0
