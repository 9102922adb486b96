"""A worker whose helper died stops at the request FIFO's end-of-file, even if its death
signal was lost: found by the long chaos run, where one such worker spun there at 80 % of a
CPU (test_resident.py has the frozen worker that must not keep the next helper out).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from cnitest import BARE_PATH, REPO

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

