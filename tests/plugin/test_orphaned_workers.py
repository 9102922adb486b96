"""Workers of a helper that died (SIGKILL, the OOM killer) go, and never stand in the way of
the next helper: found by the long chaos run, where one worker outlived its helper, spun on
the request FIFO's end-of-file at 80 % of a CPU and held the helper lock, so for minutes
every call fell back to starting Python (4 calls a second instead of 30).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cnitest import BARE_PATH, REPO, children_of, stop_helper, wait_for

from plugin.delivery import handoff

pytestmark = pytest.mark.root

# A worker's wait for the next record, on a request FIFO whose helper is gone: it must stop.
WAIT_ON_A_DEAD_HELPERS_FIFO = """
import os, sys
from plugin.delivery import resident
fifo = sys.argv[1]
os.mkfifo(fifo)
reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the helper's writer, gone
try:
    resident._next_record(reader, [])
except resident._Stop:
    print("stopped")
"""


def test_a_worker_waiting_on_a_dead_helpers_fifo_stops_instead_of_spinning(tmp_path):
    run = subprocess.run([sys.executable, "-c", WAIT_ON_A_DEAD_HELPERS_FIFO,
                          str(tmp_path / "q")], capture_output=True, text=True, timeout=20,
                         cwd=REPO, env={"PATH": BARE_PATH, "PYTHONPATH": str(REPO)})
    assert run.stdout.strip() == "stopped", run


def _call(plugin: Path, run_dir: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(plugin)], capture_output=True, timeout=90,
                          env={"PATH": BARE_PATH, "CNI_COMMAND": "VERSION",
                               "CNILAB_RUN_DIR": str(run_dir)})


def _helper(run_dir: Path, ident: str, plugin: Path) -> int:
    pid_file = Path(handoff.base_name(str(run_dir), ident, plugin.stat()) + ".pid")
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def test_a_frozen_worker_of_a_killed_helper_leaves_the_next_helper_free_to_start(
        built, tmp_path):
    plugin, ident = built
    run_dir = tmp_path / "run"
    frozen: list[int] = []
    try:
        assert _call(plugin, run_dir).returncode == 0
        assert wait_for(lambda: _helper(run_dir, ident, plugin)), "no helper started"
        first = _helper(run_dir, ident, plugin)
        assert wait_for(lambda: len(children_of(first)) >= 2), "no spare workers"
        frozen = children_of(first)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: not Path(f"/proc/{first}/cmdline").read_bytes()
                        if Path(f"/proc/{first}").exists() else True, timeout=10)
        # Its workers are frozen: their death signal waits. The next call's helper starts.
        assert _call(plugin, run_dir).returncode == 0
        assert wait_for(lambda: _helper(run_dir, ident, plugin) not in (0, first),
                        timeout=20), "no new helper while the old one's workers live on"
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: not any(_alive(pid) for pid in frozen), timeout=15), \
            "workers outlived their helper"
    finally:
        for pid in frozen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        stop_helper(plugin, run_dir)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""  # empty for a zombie
    except OSError:
        return False
