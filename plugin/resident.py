"""The resident helper: pyroute2 and the plugin loaded once, calls served by forked workers.

Started detached by the first call that found no helper (plugin.fastpath.spawn); one per
build and run directory, guaranteed by a lock file, so parallel first calls start one. It
listens on <run dir>/resident-<build>.sock (mode 0600, root only), keeps SPARES forked
workers waiting on it, and exits after
CNILAB_RESIDENT_IDLE seconds (default 120) without a call, or on SIGTERM
(`dist/cnilab --resident-stop`).

Per call a worker: checks the peer is root (or our own user), receives the caller's network
and UTS namespace descriptors (SCM_RIGHTS), setns()es into them, takes the caller's
environment, runs plugin.skel.dispatch, sends the Outcome back, and returns to the helper's
namespaces and environment for the next call (CALLS_PER_WORKER, then it exits). Anything it
cannot do before dispatch makes it close the connection without a reply: the caller then runs
the call itself. Workers are reaped by the parent's loop (no SIGCHLD=SIG_IGN: that
disposition would be inherited by the IPAM plugins' parent and break their exit codes).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import marshal
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

from plugin import handoff, vendor
from plugin.fastpath import PROTOCOL, socket_path
from plugin.rundir import run_dir

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2
DEFAULT_IDLE = 120.0
MAX_REQUEST = 1 << 24
SPARES = 2  # idle workers kept waiting for a call (the parent forks more when they are taken)
MAX_WORKERS = 16  # beyond this many, calls queue on the socket for a free worker
CALLS_PER_WORKER = 200  # then the worker exits and a fresh one replaces it
BUSY, IDLE = 1, 0  # a worker's notes to the parent
PR_SET_PDEATHSIG = 1
SWEEP_EVERY = 2.0  # seconds between looks for slots whose shell caller died
HANDOFF_GRACE = 0.2  # seconds a stopping helper still reads records of shell callers


def _idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("CNILAB_RESIDENT_IDLE", DEFAULT_IDLE)))
    except ValueError:
        return DEFAULT_IDLE


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
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401

    import plugin.commands
    import plugin.crossnode
    import plugin.skel
    import plugin.wiring  # noqa: F401

    IPRoute().close()  # pulls in what pyroute2 loads on first use


# The rehearsal's IPAM: answers any command with one fixed address (DEL's answer is ignored).
_REHEARSAL_IPAM = """#!/bin/sh
cat >/dev/null
echo '{"cniVersion":"1.0.0","ips":[{"address":"10.255.255.2/30","gateway":"10.255.255.1"}],\
"routes":[{"dst":"0.0.0.0/0"}]}'
"""


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

    from plugin.skel import dispatch

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
            f.write(_REHEARSAL_IPAM)
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
    finally:
        finished.set()
        holder.join()
        shutil.rmtree(scratch, ignore_errors=True)


def _peer_allowed(conn: socket.socket) -> bool:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid in (0, os.getuid())


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
    buffer = bytearray(data)
    while len(buffer) >= 4 and len(buffer) < 4 + int.from_bytes(buffer[:4], "big"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
    size = int.from_bytes(buffer[:4], "big") if len(buffer) >= 4 else -1
    if size < 0 or size > MAX_REQUEST or len(buffer) != 4 + size:
        raise ValueError("truncated request")
    request = marshal.loads(bytes(buffer[4:]))
    if not isinstance(request, dict) or request.get("v") != PROTOCOL:
        raise ValueError("unknown request")
    return request, list(fds)


def _setns(libc: Any, fds: list[int]) -> None:
    """Into the caller's network and UTS namespaces (descriptors in that order)."""
    if len(fds) != 2:
        raise OSError(errno.EINVAL, "expected the caller's net and uts namespaces")
    for fd, kind in zip(fds, (CLONE_NEWNET, CLONE_NEWUTS)):
        if libc.setns(fd, kind) != 0:
            raise OSError(ctypes.get_errno(), "setns")


def _enter(libc: Any, fds: list[int]) -> None:
    try:
        _setns(libc, fds)
    finally:
        for fd in fds:
            os.close(fd)


def _run(env: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    """dispatch() with the caller's environment as ours (IPAM plugins inherit it)."""
    from plugin.skel import dispatch

    os.environ.clear()
    os.environ.update(env)
    outcome = dispatch(env, stdin)
    return outcome.exit_code, outcome.stdout, outcome.stderr


def _serve_one(conn: socket.socket, libc: Any) -> None:
    """A Python caller's call (plugin.fastpath), in the worker. Returns without replying when
    it cannot serve the call."""
    started = time.perf_counter()
    conn.settimeout(30)
    if not _peer_allowed(conn):
        return
    request, fds = _read_request(conn)
    _enter(libc, fds)
    env = {str(k): str(v) for k, v in request["env"].items()}
    conn.settimeout(None)
    entered = time.perf_counter()
    code, stdout, stderr = _run(env, bytes(request["stdin"]))
    done = time.perf_counter()
    # ms spent receiving + entering namespaces, and in dispatch: bench/plugin_bench reads them
    timing = (round((entered - started) * 1000, 2), round((done - entered) * 1000, 2))
    conn.sendall(marshal.dumps({"v": PROTOCOL, "exit_code": code, "stdout": stdout,
                                "stderr": stderr, "timing": timing}))
    conn.shutdown(socket.SHUT_WR)  # the caller's EOF now, not after our exit's teardown


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

    from plugin import netconf, skel, wiring

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


def _note(pid: int, state: int) -> bytes:
    return pid.to_bytes(4, "little") + state.to_bytes(4, "little")


def _go_home(libc: Any, home: list[int]) -> None:
    """Back into the helper's own namespaces after a call (raises if that is impossible)."""
    for fd, kind in zip(home, (CLONE_NEWNET, CLONE_NEWUTS)):
        if libc.setns(fd, kind) != 0:
            raise OSError(ctypes.get_errno(), "setns back home")


def _next_call(listener: socket.socket, requests: int) -> tuple[Optional[socket.socket], bytes]:
    """Waits for a call: a Python caller's connection, or a shell caller's request record.

    Returns with SIGTERM blocked: the worker marks itself in a call before it lets the signal
    in, so a helper stopping never kills a worker between taking a call and answering it.
    """
    while True:
        select.select([listener.fileno(), requests], [], [])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        with contextlib.suppress(BlockingIOError):  # another worker was quicker
            conn, _ = listener.accept()
            return conn, b""
        with contextlib.suppress(BlockingIOError):
            record = os.read(requests, handoff.RECORD_SIZE)
            if record:
                return None, record
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _worker(listener: socket.socket, requests: int, handoff_dir: str, notify_w: int,
            libc: Any, parent: int) -> None:
    """A pre-forked worker: warms up, then serves calls one at a time, CALLS_PER_WORKER at
    most, telling the parent each time it becomes busy (it forks more when no spare is
    left) and idle again.

    Forking ahead keeps fork's ~3 ms (page tables of the loaded interpreter) out of the call;
    serving again, rather than exiting after one call, saves the fork, the exit and the
    warm-up of a replacement (~12 ms of CPU per call, measured) and every call after the
    first finds its pages already copied. Between calls the worker returns to the helper's
    own namespaces and environment, and collects the call's garbage; anything unexpected
    ends it.
    """
    status = 1
    in_call: list[bool] = []
    stopping: list[bool] = []

    def on_term(_signum: int, _frame: Any) -> None:
        if not in_call:
            raise _Stop()  # idle: just go
        stopping.append(True)  # in a call: answer it first

    try:
        gc.disable()  # a call lives milliseconds; collecting would only copy pages
        signal.signal(signal.SIGTERM, on_term)
        _die_with(parent, libc)
        home = [os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                for kind in ("net", "uts")]
        own_env = dict(os.environ)
        # Warm up at the lowest priority: a spare must not slow the calls running beside it.
        priority = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        with contextlib.suppress(Exception):
            _warm(lambda: bool(select.select([listener.fileno(), requests], [], [], 0)[0]))
        with contextlib.suppress(OSError):  # raising it back needs root, which we are
            os.setpriority(os.PRIO_PROCESS, 0, priority)
        gc.freeze()
        for served in range(1, CALLS_PER_WORKER + 1):
            conn, record = _next_call(listener, requests)
            in_call.append(True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            os.write(notify_w, _note(os.getpid(), BUSY))
            if conn is not None:
                try:
                    _serve_one(conn, libc)
                finally:
                    conn.close()
            else:
                handoff.serve(record, handoff_dir, lambda fds: _setns(libc, fds), _run)
            _go_home(libc, home)
            os.environ.clear()
            os.environ.update(own_env)
            in_call.clear()
            if stopping or served == CALLS_PER_WORKER:
                break
            gc.collect()  # the call's reference cycles; frozen objects are not scanned
            gc.freeze()  # what survived stays: the next collection scans only the next call's
            os.write(notify_w, _note(os.getpid(), IDLE))
        status = 0
    except BaseException:  # no reply: the caller falls back to running the call itself
        pass
    finally:
        os._exit(status)


def _die_with(parent: int, libc: Any) -> None:
    """SIGTERM when the helper dies, however it dies (SIGKILL, the OOM killer): a worker
    finishes the call it has, then exits, instead of serving on with no one to replace it."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before prctl took effect
        raise _Stop()


def _reap(spares: set[int], busy: set[int], exited: set[int]) -> None:
    while spares or busy:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        spares.discard(pid)
        busy.discard(pid)
        exited.add(pid)  # a note it wrote before exiting may still be in the pipe


def _listen(path: str) -> socket.socket:
    if os.path.lexists(path):
        os.unlink(path)  # a dead helper's socket: we hold the lock, so it is not live
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)  # no window in which the socket is open to others
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


class _Stop(BaseException):
    """SIGTERM: stop now. A BaseException, so the `suppress(Exception)` guarding the warm-up
    and the rehearsal cannot swallow it (a worker did, and served on after its helper died)."""


def _on_term(_signum: int, _frame: Any) -> None:
    raise _Stop()


def serve(ident: str) -> int:
    directory = run_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    base = os.path.join(directory, f"resident-{ident}")
    lock_fd = os.open(base + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another helper for this build is already up (or starting)
    path = socket_path(ident)
    handoff_dir = handoff.directory_for(base)
    listener: Optional[socket.socket] = None
    requests: Optional[tuple[int, int]] = None
    spares: set[int] = set()
    busy: set[int] = set()
    notify_r, notify_w = os.pipe()
    signal.signal(signal.SIGTERM, _on_term)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        own_netns = _leave_the_callers_namespaces(libc)
        vendored = vendor.activate(ident)
        vendor.prune(ident)
        _preload()
        if own_netns:  # never in a node's namespace: the rehearsal makes (and removes) a veth
            with contextlib.suppress(Exception):
                _rehearse(libc, directory)
        listener = _listen(path)
        listener.setblocking(False)  # workers race for connections: the losers go back to wait
        requests = handoff.open_requests(handoff_dir)
        with open(base + ".pid.tmp", "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(base + ".pid.tmp", base + ".pid")  # readers never see it half-written
        # Children only read what we loaded: keep the collector from touching (and so
        # copying) every page of it in each child.
        gc.collect()
        gc.freeze()
        helper_pid = os.getpid()  # what each worker checks it still has as its parent
        idle, last = _idle_seconds(), time.monotonic()
        touched = swept = last
        exited: set[int] = set()
        while True:
            _reap(spares, busy, exited)
            if time.monotonic() - swept > SWEEP_EVERY:
                handoff.sweep(handoff_dir)
                swept = time.monotonic()
            if vendored and time.monotonic() - touched > vendor.TOUCH_AFTER:
                with contextlib.suppress(OSError):
                    os.utime(vendored)  # "in use": vendor.prune leaves it alone
                touched = time.monotonic()
            while len(spares) < SPARES and len(spares) + len(busy) < MAX_WORKERS:
                pid = os.fork()
                if pid == 0:
                    # The build's lock stays with the parent alone: if it is killed, the
                    # next helper can start while its workers finish their calls.
                    os.close(lock_fd)
                    os.close(notify_r)
                    _worker(listener, requests[0], handoff_dir, notify_w, libc, helper_pid)
                spares.add(pid)
            ready, _, _ = select.select([notify_r], [], [], 1.0)
            if ready:
                data = os.read(notify_r, 8 * 64)  # whole notes: each write is atomic
                for i in range(0, len(data) - 7, 8):
                    pid = int.from_bytes(data[i:i + 4], "little")
                    if pid in exited:
                        continue
                    spares.discard(pid)
                    busy.discard(pid)
                    (busy if int.from_bytes(data[i + 4:i + 8], "little") == BUSY
                     else spares).add(pid)
                if len(exited) > 4096:
                    exited.clear()
                last = time.monotonic()
            elif not busy and time.monotonic() - last > idle:
                return 0
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shut_down(path, base, listener, requests, handoff_dir, spares | busy)
        os.close(lock_fd)
        os.close(notify_r)
        os.close(notify_w)


def _shut_down(path: str, base: str, listener: Optional[socket.socket],
               requests: Optional[tuple[int, int]], handoff_dir: str, workers: set[int]) -> None:
    """Stops taking calls, lets the calls already taken finish, answers the rest: no caller is
    left waiting, and nothing of ours is left in the run directory."""
    for leftover in (path, base + ".pid"):  # new callers now run in-process
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    if requests is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handoff.request_fifo(handoff_dir))
        # A shell caller that opened the request FIFO just before gets its record read.
        time.sleep(HANDOFF_GRACE)
    if listener is not None:
        listener.close()
    for pid in workers:  # idle workers die; busy ones reply first, then exit
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in workers:  # calls in flight finish: they hold a caller's answer
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if requests is not None:
        handoff.answer_waiting_callers(handoff_dir)
        handoff.close_requests(handoff_dir, *requests)
    handoff.remove(handoff_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(base + ".lock")


def stop(ident: str, timeout: float = 10.0) -> int:
    """Stops this build's helper (if any) and waits until it is gone."""
    pid_file = os.path.join(run_dir(), f"resident-{ident}.pid")
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return 0
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"--resident" not in f.read():
                return 0  # a stale pid file; that pid is someone else now
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return 0
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return 0  # exited; its parent (init) reaps it
        except FileNotFoundError:
            return 0
        time.sleep(0.02)
    return 1
