"""Ctrl-C of a suite run stops it within seconds and cleans up its pods: a pod whose start was
interrupted is discarded, every other pod of the test too, and no teardown is awaited."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SUITE = '''
import json, time
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("log.jsonl")


def note(**what):
    with LOG.open("a") as f:
        f.write(json.dumps(what) + "\\n")


class Pod:
    def __init__(self, name, node):
        self.name, self.node = name, node


class SlowCluster:
    """Pods start at once, except 'stuck' ones, which never do; deleting one waits a long
    time for a teardown, as a starved kubelet can."""

    def create_pod(self, name, node):
        note(event="create", name=name)
        if node == "stuck":
            while True:
                time.sleep(0.1)
        return Pod(name, node)

    def delete_pod(self, pod):
        note(event="delete", name=pod.name)
        time.sleep(120)

    def discard_pod(self, name):
        note(event="discard", name=name)


@pytest.fixture(scope="session")
def cluster():
    return SlowCluster()


def test_a_pod_that_never_starts(pod_factory):
    pod_factory("node1")
    pod_factory("stuck")
'''


def test_ctrl_c_stops_the_run_in_seconds_and_discards_its_pods(tmp_path: Path):
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE))
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-o", "addopts=", str(tmp_path / "test_suite.py")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count('"create"') == 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the suite never started its second pod")
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, _ = proc.communicate(timeout=20)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    created = [e["name"] for e in events if e["event"] == "create"]
    discarded = {e["name"] for e in events if e["event"] == "discard"}
    assert stopped_after < 5, f"Ctrl-C took {stopped_after:.1f}s to stop the run"
    assert set(created) == discarded, (created, discarded, out.decode()[-2000:])
    assert not any(e["event"] == "delete" for e in events), "a teardown was awaited"
    assert proc.returncode == 2          # pytest's "interrupted"
