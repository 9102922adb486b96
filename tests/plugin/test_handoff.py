"""The shell hand-off (plugin/handoff.py + plugin/prologue.py): with the helper up, a call
runs without a Python process per call, and every way the hand-off can go wrong ends with the
call run in-process or a clear error, never a caller left waiting.

Two kinds of test. With the real helper (root, namespaces): calls traced with strace start
no python3. With this test process as the helper's side of the FIFOs (it calls the real
handoff functions; dist/cnilab's real prologue is the caller): each answer the protocol has.
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
    create_ns,
    delete_ns,
    host_local_conf,
    leases,
    links,
    run_plugin,
    unique_ns_name,
    wait_for,
)

from plugin import build, handoff

BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "cnilab"
    return out, build.build(out)


def _stop(path: Path, run_dir: Path) -> None:
    subprocess.run([str(path), "--resident-stop"], capture_output=True, timeout=30,
                   env={"PATH": BARE_PATH, "CNILAB_RUN_DIR": str(run_dir)})


def _execs(trace: Path) -> list[str]:
    return [line for line in trace.read_text().splitlines() if "execve(" in line]


# -- the real helper ---------------------------------------------------------------------------

@pytest.fixture
def live_helper(built, tmp_path):
    """This build's helper, up and taking shell callers, in a private run directory."""
    path, ident = built
    run_dir = tmp_path / "run"
    subprocess.run([str(path)], input=b"", env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                   "CNILAB_RUN_DIR": str(run_dir)}, capture_output=True, timeout=60, check=True)
    request_fifo = Path(handoff.request_fifo(handoff.directory_for(
        str(run_dir / f"resident-{ident}"))))
    try:
        assert wait_for(request_fifo.exists), "the helper did not open its request FIFO"
        yield path, run_dir
    finally:
        _stop(path, run_dir)
        assert not list(run_dir.glob("resident-*")), "the helper left files behind"


@pytest.fixture
def node_and_pod():
    node, pod = unique_ns_name("cnp2-", "hnode"), unique_ns_name("cnp2-", "hpod")
    try:
        create_ns(node)
        create_ns(pod)
        yield node, pod
    finally:
        delete_ns(node)
        delete_ns(pod)


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
    execs = _execs(trace)
    assert len(execs) == 1 and str(path) in execs[0], execs  # the file itself, nothing else
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
def test_output_into_a_regular_file_is_appended_like_the_shell_would(live_helper, tmp_path):
    path, run_dir = live_helper
    out = tmp_path / "out.txt"
    out.write_text("earlier line\n")
    subprocess.run(["sh", "-c", f'"{path}" </dev/null >>"{out}"'], check=True, timeout=30,
                   env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                        "CNILAB_RUN_DIR": str(run_dir)})
    first, second = out.read_text().splitlines()
    assert first == "earlier line"
    assert json.loads(second)["supportedVersions"][-1] == "1.1.0"


# -- this process as the helper's side ---------------------------------------------------------

class FakeHelperSide:
    """The FIFOs, pid file and lock of a helper, held by this test process (the lock makes
    a helper that an in-process call starts exit at once: "one is up already")."""

    def __init__(self, run_dir: Path, ident: str) -> None:
        run_dir.mkdir(mode=0o700)
        base = str(run_dir / f"resident-{ident}")
        self.lock = os.open(base + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.run_dir = run_dir
        self.directory = handoff.directory_for(base)
        self.reader, self.writer = handoff.open_requests(self.directory)
        Path(base + ".pid").write_text(f"{os.getpid()}\n")

    def next_record(self, timeout: float = 10.0) -> bytes:
        ready, _, _ = select.select([self.reader], [], [], timeout)
        assert ready, "no request record arrived"
        return os.read(self.reader, handoff.RECORD_SIZE)

    def close(self) -> None:
        handoff.close_requests(self.directory, self.reader, self.writer)
        # In-process fallbacks start a real helper, detached; it finds the build's lock
        # held and exits. Hold the lock until every one has, or it would take over.
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
    side = FakeHelperSide(tmp_path / "run", built[1])
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


def test_a_served_call_gets_its_output_and_exit_code_and_frees_its_slot(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b'{"the": "config"}', CNI_COMMAND="ADD")
    record = helper_side.next_record()
    slot, pid = handoff.parse_record(record)
    assert pid == caller.pid
    fifo = Path(handoff.slot_fifo(helper_side.directory, slot))
    before = fifo.stat().st_ino
    seen = {}

    def run(env, stdin):
        seen.update(env=dict(env), stdin=stdin)
        return 3, "the result\n", "a log line\n"

    assert handoff.serve(record, helper_side.directory, lambda fds: None, run) is True
    assert _finish(caller) == (3, "the result\n", "a log line\n")
    assert seen["stdin"] == b'{"the": "config"}' and seen["env"]["CNI_COMMAND"] == "ADD"
    assert fifo.stat().st_ino != before, "the slot was not renewed"
    assert not Path(handoff.slot_lock(helper_side.directory, slot)).exists()


def test_a_caller_the_helper_cannot_serve_runs_the_call_itself(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    helper_side.next_record()
    # What a stopping helper does for records no worker took.
    assert handoff.answer_waiting_callers(helper_side.directory) == 1
    code, out, _ = _finish(caller)
    assert code == 0 and json.loads(out)["cniVersion"] == "1.1.0"


def test_resident_false_sends_the_config_back_to_run_in_process(built, helper_side):
    path, _ = built
    config = b'{"cniVersion": "1.1.0", "resident": false}'
    caller = _caller(path, helper_side.run_dir, config, CNI_COMMAND="VERSION")
    record = helper_side.next_record()

    def run(env, stdin):
        raise AssertionError("a resident: false call ran in the helper")

    assert handoff.serve(record, helper_side.directory, lambda fds: None, run) is False
    code, out, _ = _finish(caller)
    assert code == 0 and json.loads(out)["supportedVersions"][0] == "0.3.0"


def test_a_worker_dying_mid_call_gives_a_try_again_error(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"{}", CNI_COMMAND="ADD")
    slot, pid = handoff.parse_record(helper_side.next_record())
    reply = handoff._handshake(helper_side.directory, slot, pid, 5.0)
    assert reply is not None
    os.close(reply)  # what the kernel does for a worker killed with SIGKILL
    code, out, _ = _finish(caller)
    assert code == 1 and json.loads(out)["code"] == 11


def _helper_killed(side: FakeHelperSide) -> None:
    """What SIGKILL leaves: no reader or writer on any FIFO, the files all in place."""
    for fd in (side.reader, side.writer, handoff.LIVENESS_FD):
        os.close(fd)


def _helper_restarted(side: FakeHelperSide) -> int:
    """The next helper of the build (it holds the build's lock, as the fake side does)."""
    before = time.monotonic()
    side.reader, side.writer = handoff.open_requests(side.directory)
    return int((time.monotonic() - before) * 1000)


def test_a_killed_helper_strands_no_caller_waiting_on_its_slot(built, helper_side):
    path, _ = built
    caller = _caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION")
    helper_side.next_record()  # a worker took the record, then everything was killed
    _helper_killed(helper_side)
    time.sleep(0.2)
    assert caller.poll() is None, "the caller should be waiting on its slot"
    _helper_restarted(helper_side)
    code, out, _ = _finish(caller)
    assert code == 0 and json.loads(out)["cniVersion"] == "1.1.0"


def test_a_killed_helper_strands_no_caller_waiting_to_send_its_record(helper_side):
    # The prologue's steps after the liveness check, in a caller that passed it just before
    # the helper died: opening q for writing blocks, no reader is left.
    directory = helper_side.directory
    _helper_killed(helper_side)
    script = ('set -C; echo $$ > "$1/5.lock"; printf "%-31s\\n" "5 $$" > "$1/q"; '
              'read -r c < "$1/5"; echo "answer $c"')
    caller = subprocess.Popen(["sh", "-c", script, "sh", directory], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert wait_for(lambda: Path(handoff.slot_lock(directory, 5)).exists(), 10)
    time.sleep(0.2)
    assert caller.poll() is None, "the caller should be blocked opening q"
    took_ms = _helper_restarted(helper_side)
    code, out, _ = _finish(caller, timeout=10)
    assert code == 0
    assert out == "answer F\n"
    assert took_ms < 2000
    # ...and the new helper's directory is fresh: no lock left behind.
    assert not Path(handoff.slot_lock(directory, 5)).exists()


def test_a_stale_pid_file_or_full_slots_mean_in_process(built, helper_side):
    path, _ = built
    pid_file = helper_side.run_dir / f"resident-{built[1]}.pid"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{sleeper.pid}\n")  # alive, but not holding the request FIFO
        code, out, _ = _finish(_caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION"))
        assert code == 0 and "supportedVersions" in out
    finally:
        sleeper.kill()
        sleeper.wait()
    pid_file.write_text(f"{os.getpid()}\n")
    for slot in range(handoff.SLOTS):
        Path(handoff.slot_lock(helper_side.directory, slot)).write_text(f"{os.getpid()}\n")
    code, out, _ = _finish(_caller(path, helper_side.run_dir, b"", CNI_COMMAND="VERSION"))
    assert code == 0 and "supportedVersions" in out
    assert not select.select([helper_side.reader], [], [], 0)[0], "a record was sent anyway"


def test_sweep_frees_slots_of_callers_that_died(helper_side):
    directory = helper_side.directory
    dead = subprocess.Popen(["true"])
    dead.wait()
    locks = {slot: Path(handoff.slot_lock(directory, slot)) for slot in range(4)}
    locks[0].write_text(f"{dead.pid}\n")  # died holding it
    locks[1].write_text(f"{os.getpid()}\n")  # alive: a call in progress
    locks[2].write_text("")  # created, pid not written yet
    locks[3].write_text(f"{dead.pid}\n")
    later = time.time() + handoff.STALE_LOCK_AGE + 1
    for slot in (0, 1, 2):
        os.utime(locks[slot], (later - handoff.STALE_LOCK_AGE - 1.5,) * 2)
    os.utime(locks[3], (later - 0.5,) * 2)  # died, but only just
    assert handoff.sweep(directory, now=later) == [0, 2]
    assert [slot for slot, lock in locks.items() if lock.exists()] == [1, 3]


@pytest.mark.parametrize("record", [b"", b"1 2\n", b"x y".ljust(31) + b"\n",
                                    b"64 100".ljust(31) + b"\n", b"1 -5".ljust(31) + b"\n"])
def test_malformed_records_are_refused(record):
    with pytest.raises(ValueError):
        handoff.parse_record(record)
