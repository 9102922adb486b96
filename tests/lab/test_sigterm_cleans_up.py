"""SIGTERM to a pytest run (`timeout`, a CI job's limit) runs its teardowns, as Ctrl-C does:
the lab a test brought up goes down. A `timeout` of a run once left a 3-node lab behind."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SUITE = '''
import time
from pathlib import Path

import pytest


@pytest.fixture
def made():
    Path("up").write_text("")
    try:
        yield
    finally:
        Path("down").write_text("")


def test_long(made):
    time.sleep(60)
'''


def test_sigterm_runs_the_teardowns(tmp_path: Path):
    (tmp_path / "test_suite.py").write_text(SUITE)
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "test_suite.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "up").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "up").exists(), "the test never started"
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=20)
    finally:
        run.kill()
        run.wait()
    assert (tmp_path / "down").exists(), out.decode(errors="replace")[-2000:]
