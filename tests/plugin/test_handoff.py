"""The shell hand-off (plugin/delivery/handoff.py + prologue.py): with the helper up, a call
runs without a Python process per call, and every way the hand-off can go wrong ends with the
call run in-process or a clear error, never a caller left waiting.

Two kinds of test. With the real helper (root, namespaces): calls traced with strace start
no python3. With this test process as the helper's parent (it holds the real handoff.Slots
and plays the worker with the real handoff.serve; dist/cnilab's real prologue is the caller):
each answer the protocol has, and each way a helper, worker or record can be lost.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cnitest import (
    BARE_PATH,
    host_local_conf,
    leases,
    links,
    run_plugin,
    wait_for,
)

from plugin.delivery import handoff

INF = float("inf")



def _execs(trace: Path) -> list[str]:
    return [line for line in trace.read_text().splitlines() if "execve(" in line]


# -- the real helper ---------------------------------------------------------------------------

@pytest.mark.root
def test_calls_through_the_shell_handoff_start_no_python(live_helper, node_and_pod, tmp_path):
    path, run_dir = live_helper
    node, pod = node_and_pod
    conf = host_local_conf(tmp_path / "ipam", name="cnp2hand")
    env = {"CNILAB_RUN_DIR": str(run_dir)}
    trace = tmp_path / "add.trace"
    added = run_plugin(node, "ADD", conf, netns=pod, extra_env=env, plugin_argv=(
        "strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(path)))
    assert added.returncode == 0, added
    assert added.json["ips"][0]["address"].startswith("10.250.0."), added
    assert "eth0" in links(pod) and added.json["interfaces"][0]["name"] in links(node)
    execs = [line for line in _execs(trace) if "sleep" not in line]  # the caller's timer
    assert len(execs) == 1 and str(path) in execs[0], execs  # the file itself, no python
    checked = run_plugin(node, "CHECK", {**conf, "prevResult": added.json}, netns=pod,
                         extra_env=env, plugin_argv=(str(path),))
    assert checked.returncode == 0, checked
    for _ in range(2):  # DEL twice: the second finds nothing and still succeeds
        deleted = run_plugin(node, "DEL", conf, netns=pod, extra_env=env,
                             plugin_argv=(str(path),))
        assert deleted.returncode == 0, deleted
    assert links(pod) == ["lo"] and leases(tmp_path / "ipam", "cnp2hand") == []


@pytest.mark.root
def test_errors_come_back_through_the_handoff_with_their_code(live_helper, node_and_pod):
    path, run_dir = live_helper
    node, _ = node_and_pod
    bad = run_plugin(node, "ADD", stdin=b"{nope", netns="/run/netns/absent",
                     extra_env={"CNILAB_RUN_DIR": str(run_dir)}, plugin_argv=(str(path),))
    assert bad.returncode == 1 and bad.json["code"] == 6, bad
    assert "Traceback" not in bad.stderr


@pytest.mark.root
def test_resident_false_runs_the_call_in_process_with_its_config(
        live_helper, node_and_pod, tmp_path):
    path, run_dir = live_helper
    node, pod = node_and_pod
    conf = host_local_conf(tmp_path / "ipam", name="cnp2hoff", resident=False)
    trace = tmp_path / "add.trace"
    env = {"CNILAB_RUN_DIR": str(run_dir)}
    added = run_plugin(node, "ADD", conf, netns=pod, extra_env=env, plugin_argv=(
        "strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(path)))
    assert added.returncode == 0, added
    assert any("python3" in line for line in _execs(trace)), "the call did not run in-process"
    assert run_plugin(node, "DEL", conf, netns=pod, extra_env=env,
                      plugin_argv=(str(path),)).returncode == 0
    assert leases(tmp_path / "ipam", "cnp2hoff") == []


@pytest.mark.root
def test_output_into_a_regular_file_is_written_as_the_caller_would(live_helper, tmp_path):
    path, run_dir = live_helper
    out = tmp_path / "out.txt"
    # The worker writes through the caller's own descriptor: same offset, same file.
    subprocess.run(["sh", "-c", f'echo before; "{path}" </dev/null; echo after'], check=True,
                   timeout=30, stdout=out.open("w"),
                   env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                        "CNILAB_RUN_DIR": str(run_dir)})
    first, second, third = out.read_text().splitlines()
    assert (first, third) == ("before", "after")
    assert json.loads(second)["supportedVersions"][-1] == "1.1.0"


# -- this process as the helper's parent -------------------------------------------------------

class FakeHelperSide:
    """The lock, pid file and hand-off directory of a helper for `plugin`, held by this test
    process (the lock and pid file make in-process fallbacks start no real helper)."""

    def __init__(self, run_dir: Path, plugin: Path, ident: str) -> None:
        run_dir.mkdir(mode=0o700)
        self.run_dir, self.plugin = run_dir, plugin
        self.base = handoff.base_name(str(run_dir), ident, plugin.stat())
        self.lock = os.open(self.base + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.file_fd = os.open(plugin, os.O_RDONLY)
        os.dup2(self.file_fd, handoff.FILE_FD)
        self.slots = handoff.Slots(handoff.directory_for(self.base, os.getpid()))
        self.directory = self.slots.directory
        self.pid_file = Path(self.base + ".pid")
        self.pid_file.write_text(f"{os.getpid()}\n")
        self.alive = True

    def next_record(self, timeout: float = 10.0) -> bytes:
        ready, _, _ = select.select([self.slots.requests], [], [], timeout)
        assert ready, "no request record arrived"
        return os.read(self.slots.requests, handoff.RECORD_SIZE)

    def killed(self) -> None:
        """What SIGKILL leaves: every descriptor of the helper closed, the files in place."""
        for fd in (handoff.LIVENESS_FD, self.slots.requests, *self.slots.descriptors()):
            os.close(fd)
        self.alive = False

    def close(self) -> None:
        if self.alive:
            self.slots.close()
        handoff.remove(self.directory)
        os.close(handoff.FILE_FD)
        os.close(self.file_fd)
        # In-process fallbacks would start a real helper unless this one looks alive.
        assert wait_for(lambda: not _processes_using(self.run_dir), 30), \
            f"processes still using {self.run_dir}: {_processes_using(self.run_dir)}"
        os.close(self.lock)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _processes_using(run_dir: Path) -> list[int]:
    wanted = f"CNILAB_RUN_DIR={run_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or a zombie
            continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture
def helper_side(built, tmp_path):
    side = FakeHelperSide(tmp_path / "run", built[0], built[1])
    try:
        yield side
    finally:
        side.close()


def _caller(path: Path, run_dir: Path, stdin: bytes, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={
                                "PATH": BARE_PATH, "CNILAB_RUN_DIR": str(run_dir), **env})
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # written and closed: communicate() must not flush it
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a stranded caller must not outlive the test
        proc.communicate()
        raise
    return proc.returncode, out.decode(), err.decode()


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _waiting_on_its_slot(side: FakeHelperSide, slot: int, pid: int) -> bool:
    fifo = handoff.slot_fifo(side.directory, slot)
    return wait_for(lambda: os.path.samestat(os.stat(f"/proc/{pid}/fd/0"), os.stat(fifo)), 10)


def _version_answer(result) -> dict:
    code, out, err = result
    assert code == 0, (out, err)
    body = json.loads(out)
    assert body["supportedVersions"][-1] == "1.1.0"
    return body


def test_a_served_call_gets_its_output_and_exit_code_and_its_slot_is_freed_once_it_exits(
        built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b'{"the": "config"}', CNI_COMMAND="ADD")
    record = helper_side.next_record()
    slot, pid = handoff.parse_record(record)
    assert pid == caller.pid
    seen = {}

    def run(env, stdin, gone):
        seen.update(env=dict(env), stdin=stdin, gone=gone())
        return 3, "the result\n", "a log line\n"

    handoff.serve(record, helper_side.directory, lambda where: None, run,
                  lambda s, p, env: seen.update(taken=(s, p)))
    lock = Path(handoff.slot_lock(helper_side.directory, slot))
    assert lock.exists(), "the slot was freed before its caller exited"
    assert _finish(caller) == (3, "the result\n", "a log line\n")
    assert seen["stdin"] == b'{"the": "config"}' and seen["env"]["CNI_COMMAND"] == "ADD"
    assert seen["taken"] == (slot, pid) and seen["gone"] is False
    helper_side.slots.watch({})  # the caller has exited: its slot is free again
    assert not lock.exists()
    assert not Path(handoff.slot_taken(helper_side.directory, slot, pid)).exists()


def test_f_makes_the_caller_run_the_call_itself(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    slot, pid = handoff.parse_record(helper_side.next_record())
    helper_side.slots.answer(slot, pid, "F")
    _version_answer(_finish(caller))


def test_resident_false_sends_the_config_back_to_run_in_process(built, helper_side):
    path, _ = built
    config = b'{"cniVersion": "1.1.0", "resident": false}'
    caller = _caller(path, helper_side.run_dir, config, CNI_COMMAND="VERSION")
    record = helper_side.next_record()

    def run(env, stdin, gone):
        raise AssertionError("a resident: false call ran in the helper")

    handoff.serve(record, helper_side.directory, lambda where: None, run,
                  lambda s, p, env: None)
    assert _version_answer(_finish(caller))["supportedVersions"][0] == "0.3.0"


def _worker_dies(side: FakeHelperSide, record: bytes, *, started: bool) -> None:
    """A worker that claimed the call (and maybe started it), then died."""
    slot, pid = handoff.parse_record(record)
    assert _waiting_on_its_slot(side, slot, pid)
    assert handoff.claim(side.directory, slot, pid, _dead_pid())
    if started:
        fd = os.open(handoff.slot_fifo(side.directory, slot), os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, handoff.line(pid, "S"))
        os.close(fd)


def test_a_worker_dying_mid_call_gives_a_try_again_error(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"{}", CNI_COMMAND="ADD")
    _worker_dies(helper_side, helper_side.next_record(), started=True)
    assert caller.poll() is None
    helper_side.slots.watch({})  # the parent sees no live worker holding the claim
    code, out, _ = _finish(caller)
    assert code == 1 and json.loads(out)["code"] == 11


def test_a_worker_dying_before_the_call_started_lets_the_caller_run_it(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    _worker_dies(helper_side, helper_side.next_record(), started=False)
    helper_side.slots.watch({})
    _version_answer(_finish(caller))


def test_a_record_no_worker_took_is_answered_and_cannot_be_taken_later(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    record = helper_side.next_record()  # read by a worker that died at once
    slot, pid = handoff.parse_record(record)
    assert _waiting_on_its_slot(helper_side, slot, pid)
    helper_side.slots.watch({12345: INF})  # an idle worker, but too early: not lost yet
    assert caller.poll() is None
    helper_side.slots.watch({12345: INF}, now=time.time() + handoff.LOST_AFTER + 1)
    _version_answer(_finish(caller))
    ran = []
    handoff.serve(record, helper_side.directory, lambda where: None,
                  lambda env, stdin, gone: ran.append(1) or (0, "", ""),
                  lambda s, p, env: None)
    assert ran == [], "a call answered as lost ran after all"


def test_a_worker_killed_before_it_started_lets_the_caller_run_the_call(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    slot, pid = handoff.parse_record(helper_side.next_record())
    assert _waiting_on_its_slot(helper_side, slot, pid)
    assert handoff.claim(helper_side.directory, slot, pid, 4242)
    helper_side.slots.watch({4242: time.monotonic() + 60})  # busy in its call: left alone
    time.sleep(0.3)
    assert caller.poll() is None
    helper_side.slots.watch({})  # ...killed (resident._Pool.stuck): no live owner now
    _version_answer(_finish(caller))  # it never wrote S: the caller ran the call


@pytest.mark.parametrize("record_read", [True, False])
def test_a_killed_helper_strands_no_caller(built, helper_side, record_read):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    slot, pid = handoff.parse_record(helper_side.next_record()) if record_read else (None, None)
    if record_read:
        assert _waiting_on_its_slot(helper_side, slot, pid)
    else:
        assert wait_for(lambda: list(Path(helper_side.directory).glob("*.lock")), 10)
    helper_side.killed()
    started = time.monotonic()
    _version_answer(_finish(caller, timeout=30))
    assert time.monotonic() - started < 10, "the caller waited for its timer"


def test_a_caller_reading_end_of_file_defers_to_a_worker_that_claimed_first(built,
                                                                            helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"{}", CNI_COMMAND="ADD")
    record = helper_side.next_record()
    slot, pid = handoff.parse_record(record)
    assert _waiting_on_its_slot(helper_side, slot, pid)
    worker_end = os.open(handoff.slot_fifo(helper_side.directory, slot), os.O_WRONLY)
    assert handoff.claim(helper_side.directory, slot, pid, os.getpid())
    helper_side.killed()  # the parent is gone; this "worker" holds its writer
    time.sleep(0.3)
    assert caller.poll() is None, "the caller ran a call a worker had claimed"
    os.write(worker_end, handoff.line(pid, "S") + handoff.line(pid, "7"))
    os.close(worker_end)
    assert _finish(caller)[0] == 7


@pytest.mark.slow
def test_the_ticker_ends_a_wait_nothing_else_would(built, helper_side):
    """A frozen helper (SIGSTOP): alive, holding the FIFOs, answering nothing; only its
    ticker (a process of its own) still counts the caller's seconds."""
    path, _ = built
    handoff.start_ticker(helper_side.directory, os.getpid())
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION",
                     CNILAB_CALL_TIMEOUT="1")
    helper_side.next_record()
    started = time.monotonic()
    _version_answer(_finish(caller, timeout=60))  # not started: it ran the call itself
    took = time.monotonic() - started
    assert 1 + handoff.HANDOFF_MARGIN - 2 < took < 1 + handoff.HANDOFF_MARGIN + 10, took


def test_ticks_do_not_end_a_call_that_is_within_its_time(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="ADD", CNILAB_CALL_TIMEOUT="5")
    slot, pid = handoff.parse_record(helper_side.next_record())
    assert _waiting_on_its_slot(helper_side, slot, pid)
    fifo = os.open(handoff.slot_fifo(helper_side.directory, slot), os.O_WRONLY)
    os.write(fifo, b"T\n" * (5 + handoff.HANDOFF_MARGIN - 1) + handoff.line(pid, "4"))
    os.close(fifo)
    assert _finish(caller)[0] == 4
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION",
                     CNILAB_CALL_TIMEOUT="5")
    slot, pid = handoff.parse_record(helper_side.next_record())
    assert _waiting_on_its_slot(helper_side, slot, pid)
    fifo = os.open(handoff.slot_fifo(helper_side.directory, slot), os.O_WRONLY)
    os.write(fifo, b"T\n" * (5 + handoff.HANDOFF_MARGIN))  # out of time, not started
    os.close(fifo)
    _version_answer(_finish(caller))


def test_a_stale_pid_file_full_slots_or_a_foreign_owner_mean_in_process(built, helper_side):
    path, _ = built
    real_pid = helper_side.pid_file.read_text()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        helper_side.pid_file.write_text(f"{sleeper.pid}\n")  # alive, but not the helper
        _version_answer(_finish(_caller(path, helper_side.run_dir, b"",
                                        CNI_COMMAND="VERSION")))
    finally:
        sleeper.kill()
        sleeper.wait()
    helper_side.pid_file.write_text(real_pid)
    os.chown(helper_side.pid_file, 65534, 65534)  # made by someone else: never trusted
    _version_answer(_finish(_caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")))
    os.chown(helper_side.pid_file, 0, 0)
    for slot in range(handoff.SLOTS):
        Path(handoff.slot_lock(helper_side.directory, slot)).write_text(f"{os.getpid()}\n")
    _version_answer(_finish(_caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")))
    assert not select.select([helper_side.slots.requests], [], [], 0)[0], "a record was sent"


def _holding_lock(lock: Path, write_pid: bool) -> subprocess.Popen:
    """A process with `lock` open at LOCK_FD, as a waiting caller has (pid written or not)."""
    write = f"echo $$ >&{handoff.LOCK_FD}; " if write_pid else ""
    proc = subprocess.Popen(["sh", "-c", f'exec {handoff.LOCK_FD}>>"{lock}"; {write}'
                             f'echo ready; exec sleep 60'], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_watch_frees_the_slots_of_callers_that_are_gone_and_only_those(helper_side):
    directory = helper_side.directory
    locks = {slot: Path(handoff.slot_lock(directory, slot)) for slot in range(6)}
    locks[0].write_text(f"{_dead_pid()}\n")  # died holding it
    holders = [_holding_lock(locks[1], True),  # alive: a call in progress
               _holding_lock(locks[2], False)]  # alive, its pid not written yet
    try:
        locks[3].write_text("")  # created, then its writer died before writing its pid
        locks[4].write_text(f"{os.getpid()}\n")  # a live pid, but not the lock's holder
        locks[5].write_text("")  # created just now, pid not written yet
        fifo = Path(handoff.slot_fifo(directory, 0))
        before = fifo.stat().st_ino
        later = time.time() + handoff.STALE_LOCK_AGE + 1
        for slot in range(5):
            os.utime(locks[slot], (later - handoff.STALE_LOCK_AGE - 1.5,) * 2)
        os.utime(locks[5], (later - 0.5,) * 2)
        helper_side.slots.watch({}, now=later)
        assert [slot for slot, lock in locks.items() if lock.exists()] == [1, 2, 5]
        assert fifo.stat().st_ino != before, "a dead caller's FIFO was not renewed"
        # The live caller is followed: its exit frees its slot at once.
        assert len(helper_side.slots.pidfds()) == 1
        holders[0].kill()
        holders[0].wait()
        ready, _, _ = select.select(helper_side.slots.pidfds(), [], [], 5)
        assert ready
        helper_side.slots.exited(ready[0])
        assert not locks[1].exists() and locks[2].exists()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("record", [b"", b"1 2\n", b"x y".ljust(31) + b"\n",
                                    b"64 100".ljust(31) + b"\n", b"1 -5".ljust(31) + b"\n"])
def test_malformed_records_are_refused(record):
    with pytest.raises(ValueError):
        handoff.parse_record(record)
