"""bench/podman_bench.py: a phase past its time is reported as failed, and the run goes on
(to `lab down`), instead of an exception that would leave the lab up."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # bench/ is not installed

from bench.podman_bench import _timed, describe_run, keep_failure_logs


def test_a_command_past_its_time_is_reported_failed_not_raised():
    seconds, done = _timed(["sh", "-c", "echo started; sleep 30"], timeout=1)
    assert done.returncode == -9
    assert "started" in done.stdout
    assert "stopped after 1 s" in done.stderr
    assert seconds < 10


def test_a_command_in_time_keeps_its_own_result():
    _, done = _timed(["sh", "-c", "echo fine; exit 3"], timeout=30)
    assert (done.returncode, done.stdout) == (3, "fine\n")


def test_a_run_is_told_with_its_phases_and_what_failed():
    told = describe_run({"lab": "b21v1", "provider": "libvirt", "up_s": 61.5, "down_s": 2.0,
                         "left": [], "phases": {"k3s server": 30.2},
                         "error": "lab up stopped after 3600 s"})
    assert told.splitlines() == [
        "b21v1 (libvirt): up 61.5 s, suites - s , down 2.0 s, left nothing",
        "       30.2 s  k3s server",
        "lab up stopped after 3600 s"]


def test_the_logs_a_failed_lab_up_names_are_kept_before_lab_down(tmp_path):
    tarball = tmp_path / "state" / "up-failed-20261207-210539.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(b"logs")
    kept_in = tmp_path / "bench"
    kept_in.mkdir()
    kept = keep_failure_logs(f"✗ unpack\n  logs of the failed lab: {tarball}\n• clean up", kept_in)
    tarball.unlink()   # what `lab down` does to the lab's state
    assert kept == kept_in / tarball.name and kept.read_bytes() == b"logs"
    assert keep_failure_logs("✗ lab up failed before any node", kept_in) is None
