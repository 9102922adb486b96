"""Interleavings of the shell hand-off that once went wrong (issue 20), driven step by step
with SIGSTOP/SIGCONT against the real helper:

- slot theft: a caller frozen after its worker answered must still get its own answer,
  however many calls come and go meanwhile (its slot is its own until it exits);
- ADD after DEL: a worker frozen in an ADD whose caller is then killed, and whose
  attachment the runtime DELs meanwhile, must leave nothing behind when it resumes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from cnitest import (
    BARE_PATH,
    CNI_PATH,
    children_of,
    host_local_conf,
    leases,
    links,
    run_plugin,
    wait_for,
)

from plugin.delivery import handoff

pytestmark = pytest.mark.root


def _slot_fifo_of(pid: int, directory_glob: Path) -> str:
    """The slot FIFO `pid` waits on (its fd 0), or "" while it waits on none."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/0")
    except OSError:
        return ""
    parent = os.path.dirname(target)
    return target if Path(parent).match(str(directory_glob)) else ""


def _helper_directory(run_dir: Path) -> Path:
    return run_dir / "resident-*.d"


def _version_caller(path: Path, run_dir: Path, stdin=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([str(path)], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                                 "CNILAB_RUN_DIR": str(run_dir)})


def _is_version_answer(out: bytes) -> bool:
    lines = out.decode(errors="replace").splitlines()
    return len(lines) == 1 and json.loads(lines[0]).get("supportedVersions", [""])[-1] == "1.1.0"


def test_a_caller_frozen_after_its_answer_keeps_its_slot_and_gets_its_answer(live_helper):
    path, run_dir = live_helper
    frozen = _version_caller(path, run_dir)
    try:
        # It waits on its slot while its worker reads its stdin (held open by us).
        assert wait_for(lambda: _slot_fifo_of(frozen.pid, _helper_directory(run_dir)), 10)
        fifo = _slot_fifo_of(frozen.pid, _helper_directory(run_dir))
        slot = int(os.path.basename(fifo))
        os.kill(frozen.pid, signal.SIGSTOP)
        assert frozen.stdin is not None and frozen.stdout is not None
        frozen.stdin.close()
        frozen.stdin = None  # the worker reads the end of stdin, answers, and is done
        # Its answer (exit code and VERSION's JSON, ~100 bytes) waits in its slot FIFO; the
        # helper's ticks add 2 bytes a second.
        assert wait_for(lambda: _unread(fifo) >= 60, 10), "the worker never answered"
        time.sleep(0.3)  # what the worker does after its answer, it has done
        # Calls come and go; one of them starts where the frozen caller's slot is.
        landed = False
        for _ in range(2000):
            other = _version_caller(path, run_dir, stdin=subprocess.DEVNULL)
            out, err = other.communicate(timeout=30)
            assert other.returncode == 0 and _is_version_answer(out), (out, err)
            if other.pid % handoff.SLOTS == slot:
                landed = True
                break
        assert landed, "no caller started at the frozen caller's slot"
        os.kill(frozen.pid, signal.SIGCONT)
        out, err = frozen.communicate(timeout=15)
        assert frozen.returncode == 0 and _is_version_answer(out), (out, err)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen.pid, signal.SIGKILL)
            os.kill(frozen.pid, signal.SIGCONT)
        frozen.wait()


# An IPAM plugin that says when an ADD reached it, then takes its time: the window in which
# the test freezes the worker.
SLOW_IPAM = """#!/bin/sh
if [ "$CNI_COMMAND" = ADD ]; then
  : >"$CNP_IPAM_MARK"
  sleep 1
fi
exec /usr/lib/cni/host-local
"""


def _unread(fifo: str) -> int:
    """Bytes waiting in a FIFO, read without taking them (FIONREAD on a descriptor of ours)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def _holding(pipe_ino: int, candidates: list[int]) -> list[int]:
    """Those of `candidates` with a descriptor on the pipe whose inode is `pipe_ino`."""
    found = []
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == pipe_ino:
                        found.append(pid)
                        break
    return found


def _waits_in_poll(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "poll" in Path(f"/proc/{pid}/wchan").read_text()
    return False


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    """A process's command line, or b"" once it has exited (children come and go here)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("frozen_while", ["reading stdin", "IPAM runs"])
def test_an_add_whose_caller_died_and_was_deleted_leaves_nothing(
        live_helper, node_and_pod, tmp_path, frozen_while):
    path, run_dir = live_helper
    node, pod = node_and_pod
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "slowlocal").write_text(SLOW_IPAM)
    (bin_dir / "slowlocal").chmod(0o755)
    mark = tmp_path / "ipam-started"
    conf = host_local_conf(tmp_path / "ipam", name="cnp2race")
    conf["ipam"]["type"] = "slowlocal"
    env = {"PATH": BARE_PATH, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-race",
           "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0",
           "CNI_PATH": f"{bin_dir}:{CNI_PATH}", "CNILAB_RUN_DIR": str(run_dir),
           "CNP_IPAM_MARK": str(mark)}
    helper = int(next(run_dir.glob("resident-*.pid")).read_text())
    caller = subprocess.Popen(["ip", "netns", "exec", node, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert caller.stdin is not None
    worker = 0
    try:
        if frozen_while == "reading stdin":
            # The worker has taken the call and reads our stdin, which we keep open.
            stdin_ino = os.fstat(caller.stdin.fileno()).st_ino
            assert wait_for(lambda: _holding(stdin_ino, children_of(helper)), 10)
            worker = _holding(stdin_ino, children_of(helper))[0]
            # ...and waits in poll(2) for more of it (it gets there within microseconds).
            assert wait_for(lambda: _waits_in_poll(worker), 10), "the worker never read stdin"
            os.kill(worker, signal.SIGSTOP)
            caller.stdin.write(json.dumps(conf).encode())
            caller.stdin.close()
            caller.stdin = None
        else:
            caller.stdin.write(json.dumps(conf).encode())
            caller.stdin.close()
            caller.stdin = None
            assert wait_for(mark.exists, 10), "the ADD never reached IPAM"
            ipam = [pid for pid in _children_of_any(helper)
                    if b"slowlocal" in _cmdline(pid)]
            assert ipam, "no IPAM process"
            worker = _parent_of(ipam[0])
            os.kill(worker, signal.SIGSTOP)
        # The runtime gives up on the call, then deletes the attachment.
        caller.kill()
        caller.wait(timeout=10)  # its stdout is the frozen worker's too: no end-of-file
        deleted = run_plugin(node, "DEL", conf, container_id="ctr-race", netns=pod,
                             path=f"{bin_dir}:{CNI_PATH}", plugin_argv=(str(path),),
                             extra_env={"CNILAB_RUN_DIR": str(run_dir), "CNILAB_RESIDENT": "0",
                                        "CNP_IPAM_MARK": str(tmp_path / "del-mark")})
        assert deleted.returncode == 0, deleted
        time.sleep(1.2)  # a slow IPAM the worker started has finished by now
    finally:
        if worker:
            os.kill(worker, signal.SIGCONT)
    # The worker goes on: whatever it makes for a caller that is gone, it takes back.
    time.sleep(2)
    assert wait_for(lambda: links(node) == ["lo"] and links(pod) == ["lo"]
                    and leases(tmp_path / "ipam", "cnp2race") == [], 10), \
        (links(node), links(pod), leases(tmp_path / "ipam", "cnp2race"))


def _children_of_any(ancestor: int) -> list[int]:
    """Every descendant of `ancestor`."""
    found, frontier = [], [ancestor]
    while frontier:
        kids = [k for p in frontier for k in children_of(p)]
        found += kids
        frontier = kids
    return found



def test_a_worker_killed_between_its_output_and_its_exit_code_leaves_one_answer(
        live_helper, node_and_pod, tmp_path):
    """The runtime reads one document, the result (exit 0) or an error, never one and then
    another. Found by the long chaos run: a worker killed after writing an ADD result to the
    caller's stdout but before its exit code left "result" + "try again" (exit 1). Here the
    caller, frozen, has its slot FIFO filled with lines for nobody, so the worker cannot hand
    over its exit code once the ADD is done; the worker is killed there."""
    path, run_dir = live_helper
    node, pod = node_and_pod
    conf = host_local_conf(tmp_path / "ipam", name="cnp2one")
    env = {"PATH": BARE_PATH, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-one",
           "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH,
           "CNILAB_RUN_DIR": str(run_dir), "CNILAB_CALL_TIMEOUT": "1"}
    helper = int(next(run_dir.glob("resident-*.pid")).read_text())
    caller = subprocess.Popen(["ip", "netns", "exec", node, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert wait_for(lambda: _slot_fifo_of(caller.pid, _helper_directory(run_dir)), 10)
        fifo = _slot_fifo_of(caller.pid, _helper_directory(run_dir))
        os.kill(caller.pid, signal.SIGSTOP)
        _fill(fifo)
        assert caller.stdin is not None
        caller.stdin.write(json.dumps(conf).encode())
        caller.stdin.close()
        caller.stdin = None
        assert wait_for(lambda: "eth0" in links(pod), 20), "the ADD never made eth0"
        time.sleep(1.5)  # done, and stuck handing over its answer
        for worker in children_of(helper):
            os.kill(worker, signal.SIGKILL)
        os.kill(caller.pid, signal.SIGCONT)
        out, _ = caller.communicate(timeout=60)  # it ends on its ticks (CNILAB_CALL_TIMEOUT)
        docs = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
        assert len(docs) == 1, f"exit {caller.returncode}, {len(docs)} documents: {docs}"
        assert ("interfaces" in json.loads(docs[0])) == (caller.returncode == 0), docs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(caller.pid, signal.SIGKILL)
            os.kill(caller.pid, signal.SIGCONT)
        caller.wait()
        run_plugin(node, "DEL", conf, container_id="ctr-one", netns=pod,
                   plugin_argv=(str(path),), extra_env={"CNILAB_RUN_DIR": str(run_dir)})
    assert links(pod) == ["lo"] and leases(tmp_path / "ipam", "cnp2one") == []


def _fill(fifo: str) -> None:
    """Fills a FIFO with lines that name no caller (pid 0), until it takes no more."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"0 junk\n" * 512)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"0 J\n")
    finally:
        os.close(fd)
