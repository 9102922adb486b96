"""One trust rule for the run directory, in Python (plugin.cni.rundir) and in the shell
prologue (plugin.delivery.prologue.TRUSTED_RUN_DIR), checked with the same cases; and a
logFile that is a planted symlink is not followed.

The prologue's builtins cannot read mode bits: for those cases the test shows what stands in
for them, a live helper that stops serving within seconds of its directory becoming
writable by others (and the prologue hands calls to live helpers only).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from cnitest import BARE_PATH, host_local_conf, run_plugin, wait_for

from plugin.cni import rundir
from plugin.cni.log import CallLog
from plugin.delivery import prologue

pytestmark = pytest.mark.root


def _made(tmp: Path, mode: int = 0o700, owner: int = 0) -> Path:
    d = tmp / "run"
    d.mkdir(mode=mode)
    d.chmod(mode)
    os.chown(d, owner, owner)
    return d


def _below(tmp: Path, parent_mode: int, parent_owner: int = 0) -> Path:
    parent = tmp / "p"
    parent.mkdir()
    parent.chmod(parent_mode)
    os.chown(parent, parent_owner, parent_owner)
    (parent / "run").mkdir(mode=0o700)
    return parent / "run"


def _behind_a_link(tmp: Path) -> Path:
    (tmp / "real").mkdir()
    (tmp / "real" / "run").mkdir(mode=0o700)
    (tmp / "link").symlink_to(tmp / "real")
    return tmp / "link" / "run"


def _a_link(tmp: Path) -> Path:
    (tmp / "real").mkdir(mode=0o700)
    (tmp / "run").symlink_to(tmp / "real")
    return tmp / "run"


# name -> (make the run directory under tmp, trusted?, can the shell's builtins see it?)
CASES: dict[str, tuple[Callable[[Path], object], bool, bool]] = {
    "root's, 0700": (lambda t: _made(t), True, True),
    "root's, 0755": (lambda t: _made(t, 0o755), True, True),
    "under a sticky world-writable parent": (lambda t: _below(t, 0o1777), True, True),
    "another user's": (lambda t: _made(t, owner=65534), False, True),
    "a parent another user's": (lambda t: _below(t, 0o755, 65534), False, True),
    "a symlink": (_a_link, False, True),
    "a symlink above it": (_behind_a_link, False, True),
    "relative": (lambda t: "relative/run", False, True),
    "with a .. component": (lambda t: f"{_made(t)}/../run", False, True),
    "group-writable": (lambda t: _made(t, 0o770), False, False),
    "world-writable and sticky": (lambda t: _made(t, 0o1777), False, False),
    "a parent world-writable, not sticky": (lambda t: _below(t, 0o777), False, False),
}


def _python_trusts(path: str) -> bool:
    try:
        return not rundir.untrusted_because(path)
    except OSError:
        return False


def _shell_trusts(path: str) -> bool:
    done = subprocess.run(["/bin/sh", "-c", prologue.TRUSTED_RUN_DIR + 't "$1"', "sh", path],
                          capture_output=True, timeout=10)
    return done.returncode == 0


@pytest.mark.parametrize("name", list(CASES))
def test_python_and_the_prologue_apply_one_rule(name, tmp_path):
    make, trusted, shell_sees = CASES[name]
    path = str(make(tmp_path))
    assert _python_trusts(path) is trusted
    if shell_sees:
        assert _shell_trusts(path) is trusted
    else:  # mode bits: the shell trusts the names, the live helper judges the modes
        assert _shell_trusts(path)


@pytest.mark.parametrize("loosen", [0o770, 0o777])
def test_a_helper_whose_run_directory_is_loosened_stops_serving(built, tmp_path, loosen):
    path, _ = built
    run_dir = _made(tmp_path)
    env = {"PATH": BARE_PATH, "CNI_COMMAND": "VERSION", "CNILAB_RUN_DIR": str(run_dir)}
    subprocess.run([str(path)], input=b"", env=env, capture_output=True, timeout=60,
                   check=True)
    assert wait_for(lambda: list(run_dir.glob("resident-*.pid")), 30), "no helper"
    run_dir.chmod(loosen)
    try:
        assert wait_for(lambda: not list(run_dir.glob("resident-*")), 10), \
            "the helper went on serving from a directory others can write"
        conf = json.dumps(host_local_conf(tmp_path / "ipam", name="cnp2trust")).encode()
        refused = subprocess.run([str(path)], input=conf, capture_output=True, timeout=60,
                                 env={**env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c",
                                      "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0",
                                      "CNI_PATH": "/usr/lib/cni"})
        assert b"refusing the run directory" in refused.stdout, refused
    finally:
        run_dir.chmod(0o700)
        subprocess.run([str(path), "--resident-stop"], capture_output=True, timeout=60,
                       env={"PATH": BARE_PATH, "CNILAB_RUN_DIR": str(run_dir)})


def test_log_file_never_follows_a_planted_symlink(tmp_path):
    target = tmp_path / "root-only"
    target.write_text("")
    link = tmp_path / "cnilab.log"
    link.symlink_to(target)
    log = CallLog("ADD", "c1")
    log.log_file = str(link)
    log.info("hello")
    left = log.flush()
    assert target.read_text() == "", "appended through the symlink"
    assert "cannot write logFile" in left and "hello" in left


def test_a_cold_call_runs_no_program_from_the_callers_path(built, node_ns, pod_ns, ipam_dir,
                                                           tmp_path):
    """Importing pyroute2 asks `platform`, which ran `uname -p` and `file -b` from the
    runtime's PATH as root on every call that started Python (plugin.crossnode.quiet_platform)."""
    planted, marker = tmp_path / "bin", tmp_path / "ran"
    planted.mkdir()
    for name in ("uname", "file", "python3"):
        script = planted / name
        script.write_text(f"#!/bin/sh\necho {name} >>{marker}\nexit 1\n")
        script.chmod(0o755)
    conf = host_local_conf(ipam_dir)
    env = {"PATH": f"{planted}:/usr/sbin:/usr/bin:/sbin:/bin", "CNILAB_RESIDENT": "0"}
    added = run_plugin(node_ns, "ADD", conf, netns=pod_ns, extra_env=env,
                       plugin_argv=(str(built[0]),))
    deleted = run_plugin(node_ns, "DEL", conf, netns=pod_ns, extra_env=env,
                         plugin_argv=(str(built[0]),))
    assert added.returncode == 0 and deleted.returncode == 0, (added, deleted)
    assert not marker.exists(), f"ran from the caller's PATH: {marker.read_text().split()}"
